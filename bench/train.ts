/**
 * `shardface bench train`: images/s of real distributed training steps
 * (coordinator + N worker processes, synthetic faces at the given size),
 * with the time spent all-reducing backbone gradients beside it; optionally
 * the same backbone step in the user's arcface_torch checkout beside ours
 * (bench/peer-arcface-torch.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerArgs, runArcfaceTorchPeer, type PeerOptions } from './peer-arcface-torch.js';
import { resolveConfig } from '../src/config/index.js';
import { planTraining } from '../src/run/plan.js';
import { trainWithPlan } from '../src/run/training.js';

export interface BenchTrainOptions {
  backbone: string;
  workers: number;
  batch: number;
  imageSize: number;
  steps: number;
  backend: string;
  embeddingSize?: number;
  classes?: number;
  /** Also time arcface_torch's step of the same backbone (bench/peer/arcface_torch_step.py). */
  peer?: PeerOptions;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export async function benchTrain(o: BenchTrainOptions): Promise<Record<string, unknown>> {
  const peerJob = { backbone: o.backbone, batch: o.batch, imageSize: o.imageSize, embeddingSize: o.embeddingSize ?? 512 };
  if (o.peer) peerArgs(o.peer, peerJob); // a bad peer setting fails before our run, not after it
  const runDir = mkdtempSync(join(tmpdir(), 'shardface-bench-train-'));
  const classes = o.classes ?? 1000;
  const perId = Math.max(2, Math.ceil(((o.steps + 1) * o.workers * o.batch) / classes));
  const cfg = resolveConfig({
    values: {
      workers: o.workers,
      backbone: o.backbone,
      batch: o.batch,
      imageSize: o.imageSize,
      embeddingSize: o.embeddingSize ?? 512,
      data: `synthetic:${classes}`,
      imagesPerIdentity: perId,
      heldOutIdentities: 0,
      steps: o.steps,
      warmupSteps: 0,
      backend: o.backend,
      runDir,
      logFormat: 'json',
      workerTimeoutMs: 3_600_000,
    },
  });
  try {
    const code = await trainWithPlan(planTraining(cfg), { quiet: true });
    if (code !== 0) throw new Error(`bench train: training exited with ${code}; see ${runDir}/workers.log`);
    const steps = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>);
    const timed = steps.length > 1 ? steps.slice(1) : steps; // the first step warms up
    const stepSeconds = median(timed.map((s) => (o.workers * o.batch) / s.images_per_s!));
    const comm = median(timed.map((s) => s.comm_seconds!));
    const ours = (o.workers * o.batch) / stepSeconds;
    const peer = o.peer ? await runArcfaceTorchPeer(o.peer, peerJob) : null;
    return {
      bench: 'train',
      backbone: o.backbone,
      workers: o.workers,
      batch: o.batch,
      image_size: o.imageSize,
      backend: o.backend,
      steps: steps.length,
      images_per_s: ours,
      step_seconds: stepSeconds,
      comm_seconds: comm,
      comm_fraction: comm / stepSeconds,
      ...(peer ? { peer, ratio_vs_peer: ours / peer.images_per_s } : {}),
    };
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}
