/**
 * `shardface train`: resolve and check the configuration (before any process
 * starts), then run a coordinator and N local workers, show progress, write
 * metrics.jsonl, checkpoints and summary.json to the run directory.
 */
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { UsageError } from '../args.js';
import { newJobId, onTermination } from '../common.js';
import { createLogger } from '../../log/logger.js';
import { launchLocal } from '../../launcher/launch.js';
import { Coordinator, type CoordinatorOptions } from '../../coordinator/coordinator.js';
import { ProgressBar, formatDuration } from '../progress.js';
import { resolveConfig, formatConfig, ConfigError, configHelp, trainFacts, parseConfigArgv } from '../../config/index.js';
import type { TrainConfig } from '../../config/schema.js';
import { writeManifest, type ShardEntry, type FileEntry } from '../../checkpoint/checkpoint.js';

export interface TrainPlan {
  config: TrainConfig;
  trainImages: number;
  numClasses: number;
  stepsPerEpoch: number;
  steps: number;
  epochs: number;
  runDir: string;
}

/** Everything derived from the config, checked before any process starts. */
export function planTraining(config: TrainConfig, now = new Date()): TrainPlan {
  const f = trainFacts(config);
  if (f.stepsPerEpoch < 1)
    throw new ConfigError(`batch: workers × batch = ${f.globalBatch} images per step, but the training set has only ${f.trainImages}`, 'batch');
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runDir = resolve(config.runDir || join('runs', stamp));
  return { config, trainImages: f.trainImages, numClasses: f.numClasses, stepsPerEpoch: f.stepsPerEpoch, steps: f.totalSteps, epochs: f.totalSteps / f.stepsPerEpoch, runDir };
}

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseConfigArgv(argv, { passThrough: { help: 'flag' } });
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  if (args.other.help) {
    console.log(`usage: shardface train [--config FILE] [--print-config] [--KEY VALUE ...]\n\nConfiguration keys (file or command line):\n${configHelp()}`);
    return 0;
  }
  let plan: TrainPlan;
  try {
    plan = planTraining(resolveConfig({ file: args.file, overrides: args.overrides }));
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`shardface train: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const cfg = plan.config;
  if (args.printConfig) {
    console.log(formatConfig({ ...cfg, runDir: plan.runDir }));
    return 0;
  }
  return trainWithPlan(plan);
}

export interface TrainRunOptions {
  /** No progress bar, no summary, no forwarded worker logs (benchmarks). */
  quiet?: boolean;
}

export async function trainWithPlan(plan: TrainPlan, opts: TrainRunOptions = {}): Promise<number> {
  return runTraining(plan, { ...opts, workers: 'local' });
}

/**
 * The coordinator side of training. `workers: 'local'` starts the workers on
 * this machine; `{ bind, token, job }` waits for workers started elsewhere
 * (Slurm, Kubernetes, other hosts) to connect.
 */
export async function runTraining(plan: TrainPlan, opts: TrainRunOptions & { workers: 'local' | { bind: string; token: string; job?: string } }): Promise<number> {
  const cfg = plan.config;
  const runDir = plan.runDir;
  mkdirSync(runDir, { recursive: true });
  writeFileSync(join(runDir, 'config.json'), JSON.stringify({ ...cfg, runDir }, null, 2));
  const metricsPath = join(runDir, 'metrics.jsonl');
  writeFileSync(metricsPath, '');

  const progress = new ProgressBar();
  const tty = progress.enabled && !opts.quiet;
  const logger = createLogger({ role: 'coordinator', format: cfg.logFormat, file: join(runDir, 'train.log'), level: tty || opts.quiet ? 'warn' : 'info' });
  logger.log.info({ runDir, steps: plan.steps, stepsPerEpoch: plan.stepsPerEpoch, workers: cfg.workers, backbone: cfg.backbone, classes: plan.numClasses }, 'training');
  if (tty) process.stderr.write(`shardface: training ${cfg.backbone} on ${cfg.data} with ${cfg.workers} workers for ${plan.steps} steps → ${runDir}\n`);

  const started = Date.now();
  let lastEnd = started;
  let imagesTimed = 0;
  let secondsTimed = 0;
  let finalLoss = NaN;
  let lastVal: Record<string, number> | null = null;
  let lastCheckpoint: string | null = null;
  const pending = new Map<number, { dir: string; backbone?: FileEntry & { name: string }; shards: ShardEntry[] }>();
  /** The coordinator, once started: its job-wide loss state (CurricularFace's t) goes into checkpoint manifests. */
  let coordinatorRef: Coordinator | null = null;

  const external = opts.workers === 'local' ? null : opts.workers;
  const coordinatorOptions: CoordinatorOptions = {
      bind: external?.bind ?? 'tcp://127.0.0.1:0',
      workers: cfg.workers,
      job: external?.job ?? newJobId(),
      token: external?.token ?? process.env.SHARDFACE_TOKEN ?? '',
      heartbeatMs: cfg.heartbeatMs,
      workerTimeoutMs: cfg.workerTimeoutMs,
      joinTimeoutMs: 600_000,
      spec: { kind: 'train', steps: plan.steps, numClasses: plan.numClasses, seed: cfg.seed, config: { ...cfg, runDir, steps: plan.steps, stepsPerEpoch: plan.stepsPerEpoch } },
      logger,
      // --- CurricularFace: the job-wide t lives on the coordinator
      ...(cfg.loss === 'curricular' ? { curricular: { t: cfg.curricular.t, emaWeight: cfg.curricular.emaWeight } } : {}),
      onStepEnd: (step, metrics, loss) => {
        const now = Date.now();
        const wall = (now - lastEnd) / 1000;
        lastEnd = now;
        const images = metrics.reduce((a, m) => a + (m.images ?? 0), 0);
        if (step > 1) {
          imagesTimed += images;
          secondsTimed += wall;
        }
        const m0 = metrics[0]!;
        finalLoss = loss ?? m0.loss ?? NaN;
        const rec: Record<string, number | null> = {
          step,
          epoch: m0.epoch ?? 0,
          loss: finalLoss,
          lr: m0.lr ?? 0,
          images_per_s: images / wall,
          step_seconds: Math.max(...metrics.map((m) => m.seconds ?? 0)),
          comm_seconds: Math.max(...metrics.map((m) => m.commSeconds ?? 0)),
          grad_norm: m0.gradNorm ?? null,
        };
        if (m0.valAccuracy !== undefined) {
          lastVal = { accuracy: m0.valAccuracy, accuracy_std: m0.valStd!, threshold: m0.valThreshold!, pairs: m0.valPairs! };
          Object.assign(rec, { val_accuracy: m0.valAccuracy, val_accuracy_std: m0.valStd, val_threshold: m0.valThreshold });
        }
        // --- distillation: each rank's mean over its rows; equal batches, so their mean is the global batch's
        if (m0.distillLoss !== undefined) rec.distill_loss = metrics.reduce((a, m) => a + (m.distillLoss ?? NaN), 0) / metrics.length;
        // --- CurricularFace: t, which every rank got from the coordinator
        if (m0.curricularT !== undefined) {
          rec.curricular_t = m0.curricularT;
          rec.curricular_t_identical = metrics.every((m) => m.curricularT === m0.curricularT) ? 1 : 0;
          if (!rec.curricular_t_identical) logger.log.error({ t: metrics.map((m) => m.curricularT) }, 'workers disagree on the CurricularFace t');
        }
        // val sets (config `val`): rank 0 reports val_NAME_* metrics, written as they are
        for (const [k, v] of Object.entries(m0)) if (k.startsWith('val_')) rec[k] = v;
        if (m0.paramsHash !== undefined) {
          const hashes = metrics.map((m) => m.paramsHash);
          rec.replicas_identical = hashes.every((h) => h === hashes[0]) ? 1 : 0;
          if (!rec.replicas_identical) logger.log.error({ hashes }, 'backbone replicas diverged across workers');
        }
        appendFileSync(metricsPath, JSON.stringify(rec) + '\n');
        const ips = secondsTimed > 0 ? imagesTimed / secondsTimed : images / wall;
        const eta = ((plan.steps - step) * cfg.workers * cfg.batch) / ips;
        if (tty) progress.update({ step, total: plan.steps, loss: finalLoss, lr: rec.lr!, imagesPerSecond: ips, etaSeconds: eta }, step === plan.steps);
        if (step % cfg.logEvery === 0 || step === plan.steps || m0.valAccuracy !== undefined) logger.log.info({ ...rec, eta_s: Math.round(eta) }, 'step');
      },
      onEvent: (_rank, name, fields) => {
        if (name !== 'checkpoint-file') return;
        const f = fields as unknown as { kind: 'shard' | 'backbone'; step: number; dir: string; rank: number; classStart: number; classCount: number; name: string } & FileEntry;
        const p = pending.get(f.step) ?? { dir: f.dir, shards: [] };
        pending.set(f.step, p);
        if (f.kind === 'backbone') p.backbone = { file: f.file, sha256: f.sha256, bytes: f.bytes, name: f.name };
        else p.shards.push({ rank: f.rank, classStart: f.classStart, classCount: f.classCount, file: f.file, sha256: f.sha256, bytes: f.bytes });
        if (p.backbone && p.shards.length === cfg.workers) {
          writeManifest(p.dir, {
            format: 'shardface-checkpoint',
            version: 1,
            step: f.step,
            epoch: f.step / plan.stepsPerEpoch,
            world: cfg.workers,
            numClasses: plan.numClasses,
            embeddingSize: cfg.embeddingSize,
            backbone: p.backbone,
            shards: p.shards.sort((a, b) => a.rank - b.rank),
            config: { ...cfg, runDir },
            ...(coordinatorRef && Object.keys(coordinatorRef.lossState).length > 0 ? { lossState: coordinatorRef.lossState } : {}),
            createdAt: new Date().toISOString(),
          });
          pending.delete(f.step);
          lastCheckpoint = p.dir;
          logger.log.info({ checkpoint: p.dir, step: f.step }, 'checkpoint written');
        }
      },
  };
  const { done, stop, coordinator } = external
    ? await startExternal(coordinatorOptions)
    : await launchLocal({
    coordinator: coordinatorOptions,
    workerArgs: ['--backend', cfg.backend, ...(cfg.threads > 0 ? ['--threads', String(cfg.threads)] : []), '--log-format', 'json', '--log-file', join(runDir, 'workers.log')],
    out: (line, from, stream) => {
      // At a terminal only warnings and errors from workers reach the screen.
      if (opts.quiet) {
        if (/"level":(50|60)/.test(line)) process.stderr.write(`[${from}] ${line}\n`);
      } else if (!tty) process.stdout.write(line + '\n');
      else if (/"level":(40|50|60)/.test(line) || (stream === 'stderr' && !line.startsWith('{'))) process.stderr.write(`\n[${from}] ${line}\n`);
    },
  });
  coordinatorRef = coordinator;
  const off = onTermination((sig) => stop(`coordinator received ${sig}`));
  const r = await done;
  off();
  if (tty) progress.done();
  const elapsed = (Date.now() - started) / 1000;

  const summary = {
    ok: r.ok,
    steps: r.lastStep,
    epochs: r.lastStep / plan.stepsPerEpoch,
    images_per_s: secondsTimed > 0 ? imagesTimed / secondsTimed : null,
    final_loss: finalLoss,
    verification: lastVal,
    checkpoint: lastCheckpoint,
    run_dir: runDir,
    seconds: elapsed,
    ...(r.ok ? {} : { error: r.reason }),
  };
  writeFileSync(join(runDir, 'summary.json'), JSON.stringify(summary, null, 2));
  logger.log.info(summary, r.ok ? 'training finished' : 'training failed');
  const v = lastVal as Record<string, number> | null;
  const lines = [
    '',
    r.ok ? 'shardface: training finished' : `shardface: training FAILED: ${r.reason}`,
    `  steps          ${r.lastStep} (${summary.epochs.toFixed(2)} epochs) in ${formatDuration(elapsed)}`,
    `  throughput     ${summary.images_per_s ? summary.images_per_s.toFixed(1) : '-'} images/s`,
    `  final loss     ${Number.isFinite(finalLoss) ? finalLoss.toFixed(4) : '-'}`,
    v ? `  verification   ${(v.accuracy * 100).toFixed(2)}% ± ${(v.accuracy_std * 100).toFixed(2)} (threshold ${v.threshold.toFixed(2)}, ${v.pairs} held-out pairs)` : '  verification   -',
    `  checkpoint     ${lastCheckpoint ?? '-'}`,
    `  run directory  ${runDir}`,
  ];
  if (!opts.quiet) process.stderr.write(lines.join('\n') + '\n');
  return r.ok ? 0 : 1;
}

/** A coordinator for workers that other launchers start; same shape as launchLocal's result. */
async function startExternal(o: CoordinatorOptions): Promise<{ done: Promise<{ ok: boolean; reason: string; lastStep: number }>; stop: (reason: string) => void; coordinator: Coordinator }> {
  const c = new Coordinator(o);
  const address = await c.bind();
  o.logger.log.warn({ address, workers: o.workers, job: o.job }, `waiting for ${o.workers} workers: shardface worker --coordinator ${address.replace('0.0.0.0', '<this host>')} --job ${o.job}`);
  return { done: c.run(), stop: (reason) => void c.abort(reason), coordinator: c };
}
