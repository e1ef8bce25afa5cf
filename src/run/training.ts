/**
 * The coordinator side of a training run, as a library: the CLI's `train` and
 * `coordinator` commands and the benchmarks all call it. It writes config.json,
 * metrics.jsonl, checkpoints' manifests and summary.json to the run directory,
 * and shows progress to a person at a terminal.
 */
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger } from '../log/logger.js';
import { launchLocal } from '../launcher/launch.js';
import { Coordinator, type CoordinatorOptions } from '../coordinator/coordinator.js';
import { newJobId, onTermination } from './lifecycle.js';
import { ProgressBar } from './progress.js';
import { CheckpointManifests, type CheckpointFileEvent } from './manifests.js';
import { stepRecord } from './step-record.js';
import { summaryLines, type RunSummary, type Verification } from './summary.js';
import type { TrainPlan } from './plan.js';
import { KeyFileError, loadCoordinatorKeys, type Transport } from '../protocol/index.js';

export interface TrainRunOptions {
  /** No progress bar, no summary, no forwarded worker logs (benchmarks). */
  quiet?: boolean;
}

/** Where the workers come from: started here, or started elsewhere (Slurm, Kubernetes, other hosts) and connecting to `bind`. */
export type WorkerSource = 'local' | { bind: string; token: string; job?: string };

export async function trainWithPlan(plan: TrainPlan, opts: TrainRunOptions = {}): Promise<number> {
  return runTraining(plan, { ...opts, workers: 'local' });
}

export async function runTraining(plan: TrainPlan, opts: TrainRunOptions & { workers: WorkerSource }): Promise<number> {
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
  let lastVal: Verification | null = null;
  let lastCheckpoint: string | null = null;
  /** The coordinator, once started: its job-wide loss state (CurricularFace's t) goes into checkpoint manifests. */
  let coordinatorRef: Coordinator | null = null;
  const manifests = new CheckpointManifests({
    world: cfg.workers,
    numClasses: plan.numClasses,
    embeddingSize: cfg.embeddingSize,
    stepsPerEpoch: plan.stepsPerEpoch,
    config: { ...cfg, runDir },
    lossState: () => coordinatorRef?.lossState ?? {},
  });

  const external = opts.workers === 'local' ? null : opts.workers;
  const curveOn = cfg.curveKeys !== 'none' && cfg.curveKeys !== '';
  let transport: Transport;
  try {
    transport = { curve: curveOn ? loadCoordinatorKeys(cfg.curveKeys) : null, maxFrameBytes: Math.floor(cfg.maxFrameMb * 2 ** 20) };
  } catch (e) {
    if (!(e instanceof KeyFileError)) throw e;
    logger.log.error({ curveKeys: cfg.curveKeys }, e.message);
    if (!opts.quiet) process.stderr.write(`shardface: curveKeys: ${e.message}\n`);
    return 2;
  }
  const transportArgs = [...(curveOn ? ['--curve-keys', cfg.curveKeys] : []), '--max-frame-mb', String(cfg.maxFrameMb), '--worker-timeout', String(cfg.workerTimeoutMs / 1000)];
  const coordinatorOptions: CoordinatorOptions = {
    transport,
    bind: external?.bind ?? 'tcp://127.0.0.1:0',
    workers: cfg.workers,
    job: external?.job ?? newJobId(),
    token: external?.token ?? process.env.SHARDFACE_TOKEN ?? '',
    heartbeatMs: cfg.heartbeatMs,
    workerTimeoutMs: cfg.workerTimeoutMs,
    joinTimeoutMs: 600_000,
    spec: { kind: 'train', steps: plan.steps, numClasses: plan.numClasses, seed: cfg.seed, config: { ...cfg, runDir, steps: plan.steps, stepsPerEpoch: plan.stepsPerEpoch } },
    logger,
    // CurricularFace: the job-wide t lives on the coordinator
    ...(cfg.loss === 'curricular' ? { curricular: { t: cfg.curricular.t, emaWeight: cfg.curricular.emaWeight } } : {}),
    onStepEnd: (step, metrics, loss) => {
      const now = Date.now();
      const wall = (now - lastEnd) / 1000;
      lastEnd = now;
      const { record: rec, images, problems } = stepRecord(step, metrics, loss, wall);
      for (const p of problems) logger.log.error(p.fields, p.message);
      if (step > 1) {
        imagesTimed += images;
        secondsTimed += wall;
      }
      finalLoss = rec.loss ?? NaN;
      const m0 = metrics[0]!;
      if (m0.valAccuracy !== undefined) lastVal = { accuracy: m0.valAccuracy, accuracy_std: m0.valStd!, threshold: m0.valThreshold!, pairs: m0.valPairs! };
      appendFileSync(metricsPath, JSON.stringify(rec) + '\n');
      const ips = secondsTimed > 0 ? imagesTimed / secondsTimed : images / wall;
      const eta = ((plan.steps - step) * cfg.workers * cfg.batch) / ips;
      if (tty) progress.update({ step, total: plan.steps, loss: finalLoss, lr: rec.lr!, imagesPerSecond: ips, etaSeconds: eta }, step === plan.steps);
      if (step % cfg.logEvery === 0 || step === plan.steps || m0.valAccuracy !== undefined) logger.log.info({ ...rec, eta_s: Math.round(eta) }, 'step');
    },
    onEvent: (_rank, name, fields) => {
      if (name !== 'checkpoint-file') return;
      const f = fields as unknown as CheckpointFileEvent;
      const dir = manifests.onFile(f);
      if (dir) {
        lastCheckpoint = dir;
        logger.log.info({ checkpoint: dir, step: f.step }, 'checkpoint written');
      }
    },
  };
  const { done, stop, coordinator } = external
    ? await startExternal(coordinatorOptions)
    : await launchLocal({
        coordinator: coordinatorOptions,
        workerArgs: [...transportArgs, '--backend', cfg.backend, ...(cfg.threads > 0 ? ['--threads', String(cfg.threads)] : []), '--log-format', 'json', '--log-file', join(runDir, 'workers.log')],
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

  const summary: RunSummary = {
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
  if (!opts.quiet) process.stderr.write(summaryLines(summary).join('\n') + '\n');
  return r.ok ? 0 : 1;
}

/** A coordinator for workers that other launchers start; same shape as launchLocal's result. */
async function startExternal(o: CoordinatorOptions): Promise<{ done: Promise<{ ok: boolean; reason: string; lastStep: number }>; stop: (reason: string) => void; coordinator: Coordinator }> {
  const c = new Coordinator(o);
  const address = await c.bind();
  o.logger.log.warn({ address, workers: o.workers, job: o.job }, `waiting for ${o.workers} workers: shardface worker --coordinator ${address.replace('0.0.0.0', '<this host>')} --job ${o.job}`);
  return { done: c.run(), stop: (reason) => void c.abort(reason), coordinator: c };
}
