/**
 * `shardface bench recovery`: a real training run (coordinator + worker
 * processes) with `maxRestarts 1` in which one worker is SIGKILLed in the
 * middle of a checkpoint interval (SHARDFACE_FAULT), then what the restart
 * cost: the steps redone (at most the steps since the last checkpoint) and the
 * seconds from the failure to the first step completed after it, as the
 * coordinator logged them (docs/architecture.md#restarts). Beside it, the
 * checkpoint writer's throughput (src/checkpoint/tensor-file.ts: streamed,
 * hashed, fsynced, renamed) on the run's own checkpoint, against a plain
 * sequential write + fsync of the same bytes, alternating, medians compared.
 */
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { resolveConfig } from '../src/config/index.js';
import { planTraining } from '../src/run/plan.js';
import { trainWithPlan } from '../src/run/training.js';
import { newestVerifiedCheckpoint, readManifest } from '../src/checkpoint/checkpoint.js';
import { readTensorFile, writeTensorFile } from '../src/checkpoint/tensor-file.js';

export interface BenchRecoveryOptions {
  workers: number;
  backbone: string;
  batch: number;
  imageSize: number;
  embeddingSize: number;
  classes: number;
  steps: number;
  checkpointEvery: number;
  /** The step at whose start the worker is killed. */
  killStep: number;
  killRank: number;
  /** Timed repetitions of each write (median reported). */
  reps: number;
  backend: string;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

type LogLine = { event?: string; stepsLost?: number; secondsToResume?: number; checkpointStep?: number; msg?: string };

export async function benchRecovery(o: BenchRecoveryOptions): Promise<Record<string, unknown>> {
  if (o.killStep <= o.checkpointEvery || o.killStep > o.steps)
    throw new Error(`bench recovery: --kill-step must be after the first checkpoint (${o.checkpointEvery}) and at most --steps (${o.steps})`);
  const runDir = mkdtempSync(join(tmpdir(), 'shardface-bench-recovery-'));
  const cfg = resolveConfig({
    values: {
      workers: o.workers,
      backbone: o.backbone,
      batch: o.batch,
      imageSize: o.imageSize,
      embeddingSize: o.embeddingSize,
      data: `synthetic:${o.classes}`,
      imagesPerIdentity: Math.max(2, Math.ceil(((o.steps + 1) * o.workers * o.batch) / o.classes)),
      heldOutIdentities: 0,
      steps: o.steps,
      warmupSteps: 0,
      checkpointEvery: o.checkpointEvery,
      checkpointKeep: 2,
      maxRestarts: 1,
      backend: o.backend,
      runDir,
      logFormat: 'json',
    },
  });
  const before = process.env.SHARDFACE_FAULT;
  // the workers inherit the fault; it fires in the first round only, so the replacement trains on
  process.env.SHARDFACE_FAULT = `kill:rank=${o.killRank}:step=${o.killStep}`;
  try {
    const code = await trainWithPlan(planTraining(cfg), { quiet: true });
    if (code !== 0) throw new Error(`bench recovery: training exited with ${code}; see ${runDir}/train.log and workers.log`);
    const log = readFileSync(join(runDir, 'train.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as LogLine);
    const resumed = log.find((l) => l.event === 'resumed');
    if (!resumed) throw new Error(`bench recovery: no restart was logged; see ${runDir}/train.log`);
    const lastCheckpoint = Math.floor((o.killStep - 1) / o.checkpointEvery) * o.checkpointEvery;
    const stepsSinceCheckpoint = o.killStep - 1 - lastCheckpoint;
    const write = await checkpointThroughput(runDir, o.reps);
    return {
      bench: 'recovery',
      workers: o.workers,
      backbone: o.backbone,
      image_size: o.imageSize,
      classes: o.classes,
      steps: o.steps,
      checkpoint_every: o.checkpointEvery,
      kill_step: o.killStep,
      checkpoint_step: resumed.checkpointStep,
      steps_lost: resumed.stepsLost,
      steps_since_checkpoint: stepsSinceCheckpoint,
      steps_lost_ok: (resumed.stepsLost ?? Infinity) <= stepsSinceCheckpoint,
      seconds_to_resume: resumed.secondsToResume,
      ...write,
    };
  } finally {
    if (before === undefined) delete process.env.SHARDFACE_FAULT;
    else process.env.SHARDFACE_FAULT = before;
    rmSync(runDir, { recursive: true, force: true });
  }
}

/**
 * Rewrites the run's newest checkpoint files with the checkpoint writer, and
 * the same bytes (each file as the run wrote it) with plain write + fsync, in
 * a scratch directory next to the run's (same file system). One untimed round
 * of each first, so neither meets a cold page cache or new directory alone;
 * then `reps` timed rounds, the order alternating so neither always follows
 * the other's dirty pages; medians compared.
 */
async function checkpointThroughput(runDir: string, reps: number): Promise<Record<string, number>> {
  const found = newestVerifiedCheckpoint(join(runDir, 'ckpt'));
  if (found.dir === null) throw new Error('bench recovery: the run left no verified checkpoint');
  const m = readManifest(found.dir);
  const files = [m.backbone, ...m.shards].map((f) => ({ name: f.file, bytes: f.bytes, ...readTensorFile(join(found.dir!, f.file), f.sha256) }));
  const total = files.reduce((a, f) => a + f.bytes, 0);
  const scratch = mkdtempSync(join(runDir, 'write-bench-'));
  // the baseline's bytes exist before its clock starts, as the tensors do before the writer's
  const buffers = files.map((f) => readFileSync(join(found.dir!, f.name)));
  const writer: number[] = [];
  const plain: number[] = [];
  const timeWriter = async () => {
    const t = performance.now();
    for (const f of files) await writeTensorFile(join(scratch, f.name), f.tensors, f.metadata);
    return (performance.now() - t) / 1000;
  };
  const timePlain = () => {
    const t = performance.now();
    files.forEach((f, i) => plainWrite(join(scratch, `${f.name}.plain`), buffers[i]!));
    return (performance.now() - t) / 1000;
  };
  try {
    await timeWriter();
    timePlain();
    for (let r = 0; r < reps; r++) {
      if (r % 2 === 0) {
        writer.push(await timeWriter());
        plain.push(timePlain());
      } else {
        plain.push(timePlain());
        writer.push(await timeWriter());
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const writerBps = total / median(writer);
  const plainBps = total / median(plain);
  return { checkpoint_bytes: total, checkpoint_files: files.length, write_bytes_per_s: writerBps, plain_write_bytes_per_s: plainBps, write_ratio: writerBps / plainBps };
}

/** The baseline: one buffer, written sequentially and fsynced. */
function plainWrite(path: string, buf: Buffer): void {
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
