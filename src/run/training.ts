/**
 * The coordinator side of a training run, as a library: the CLI's `train` and
 * `coordinator` commands and the benchmarks all call it. It writes config.json,
 * metrics.jsonl, checkpoints' manifests and summary.json to the run directory,
 * and shows progress to a person at a terminal.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { writeFileAtomic } from '../common/atomic-file.js';
import { join } from 'node:path';
import { createLogger, prettyLine } from '../log/logger.js';
import { LineForwarder } from '../log/forward.js';
import { launchLocal } from '../launcher/launch.js';
import { Coordinator, type CoordinatorOptions, type RestartPoint } from '../coordinator/coordinator.js';
import { newestVerifiedCheckpoint, readManifest } from '../checkpoint/checkpoint.js';
import { newJobId, onTermination } from './lifecycle.js';
import { CheckpointClock, GracefulStop } from './shutdown.js';
import { signalExitCode } from '../common/signals.js';
import { ProgressBar } from './progress.js';
import { CheckpointManifests, type CheckpointFileEvent } from './manifests.js';
import { stepRecord } from './step-record.js';
import { badImageFailure, skippedShare, type BadImageTally } from './bad-images.js';
import { summaryLines, type RunSummary, type Verification } from './summary.js';
import type { TrainPlan } from './plan.js';
import { startMonitor, writeRunReport } from './watch.js';
import { methodJobState } from '../worker/methods/registry.js';

/**
 * Who reads the output. 'terminal' (stdout and stderr both a TTY): a progress
 * bar and a summary, every log line to files in the run directory. 'piped':
 * log records of every process on stdout, one format, nothing else. 'quiet'
 * (benchmarks): errors only.
 */
export type OutputMode = 'terminal' | 'piped' | 'quiet';

export function outputMode(progress: ProgressBar, quiet = false, stdout: { isTTY?: boolean } = process.stdout): OutputMode {
  if (quiet) return 'quiet';
  return progress.enabled && stdout.isTTY ? 'terminal' : 'piped';
}
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
  /** The coordinator, once started: its job-wide loss state (CurricularFace's t) goes into checkpoint manifests; the monitor reads its members. */
  let coordinatorRef: Coordinator | null = null;
  // metrics and status page first: a port in use stops the run before it touches the run directory
  const monitor = await startMonitor({ host: cfg.metricsHost, port: cfg.metricsPort, steps: plan.steps, runDir }, () => coordinatorRef?.snapshot() ?? null);
  if (monitor === 'failed') return 2;
  mkdirSync(runDir, { recursive: true });
  writeFileAtomic(join(runDir, 'config.json'), JSON.stringify({ ...cfg, runDir }, null, 2));
  const metricsPath = join(runDir, 'metrics.jsonl');
  const resume = plan.resume;
  // a resumed run appends; the records of steps after its checkpoint (redone now) are dropped first
  const droppedRecords = resume ? keepRecordsUpTo(metricsPath, resume.step) : 0;
  if (!resume) writeFileSync(metricsPath, '');
  const firstStep = resume ? resume.step + 1 : 1;

  const progress = new ProgressBar();
  const mode = outputMode(progress, opts.quiet);
  const trainLog = join(runDir, 'train.log');
  const workersLog = join(runDir, 'workers.log');
  const logger = createLogger({
    role: 'coordinator',
    format: cfg.logFormat,
    file: trainLog,
    // At a terminal every log line goes to the files only; the screen shows the progress bar.
    console: mode !== 'terminal',
    level: mode === 'quiet' ? 'warn' : 'info',
  });
  logger.log.info({ runDir, steps: plan.steps, stepsPerEpoch: plan.stepsPerEpoch, workers: cfg.workers, backbone: cfg.backbone, classes: plan.numClasses }, 'training');
  if (monitor) logger.log.info({ url: monitor.url, metrics: `${monitor.url}metrics` }, 'status page and metrics');
  for (const w of plan.warnings) logger.log.warn(`config: ${w}`);
  if (resume) {
    for (const r of resume.rejected) logger.log.warn({ checkpoint: r.dir, problems: r.problems }, `checkpoint ${r.dir} rejected: ${r.problems.join('; ')}`);
    logger.log.info(
      { checkpoint: resume.dir, step: resume.step, startStep: firstStep, lossState: resume.lossState, droppedRecords },
      `resumed from step ${resume.step} (${resume.dir}); continuing at step ${firstStep}`,
    );
  }
  if (mode === 'terminal') {
    // what a person must see before the bar: where to watch, and settings that are probably a mistake
    if (monitor) process.stderr.write(`shardface: status page ${monitor.url} (Prometheus metrics: ${monitor.url}metrics)\n`);
    for (const w of plan.warnings) process.stderr.write(`shardface: warning: ${w}\n`);
    progress.status(`starting ${cfg.workers} worker${cfg.workers === 1 ? '' : 's'}: ${cfg.backbone} on ${cfg.data}, ${plan.steps} steps → ${runDir}`);
  }

  const started = Date.now();
  let lastEnd = started;
  let imagesTimed = 0;
  let secondsTimed = 0;
  let finalLoss = NaN;
  let lastVal: Verification | null = null;
  let lastCheckpoint: string | null = null;
  /** The step of lastCheckpoint (a resumed run: the checkpoint it started from). */
  let lastCheckpointStep = resume?.step ?? 0;
  let lastStepSkipped = false;
  const clock = new CheckpointClock(cfg.checkpointMinutes);
  /** Stops the job, once it runs (a failed checkpoint write ends it with a clear reason). */
  let stopJob: ((reason: string) => void) | null = null;
  const badImages: BadImageTally = { skipped: 0, drawn: 0 };
  /** The numerical guard: skipped steps in a row. */
  let badSteps = 0;
  const manifests = new CheckpointManifests({
    world: cfg.workers,
    numClasses: plan.numClasses,
    embeddingSize: cfg.embeddingSize,
    stepsPerEpoch: plan.stepsPerEpoch,
    config: { ...cfg, runDir },
    lossState: () => coordinatorRef?.lossState ?? {},
    keep: cfg.checkpointKeep,
  });

  const external = opts.workers === 'local' ? null : opts.workers;
  const graceful = new GracefulStop({
    coordinator: () => coordinatorRef,
    timeoutMs: cfg.shutdownTimeoutMs,
    log: logger.log,
    newest: () => ({ dir: lastCheckpoint, step: lastCheckpointStep }),
    lastStepSkipped: () => lastStepSkipped,
    resumeHint: external ? `shardface coordinator --resume ${runDir} (with the same --workers, --bind, --token-file and --job) and its workers` : `shardface train --resume ${runDir}`,
    ...(mode === 'terminal' ? { show: (line: string) => process.stderr.write(`\nshardface: ${line}\n`) } : {}),
  });
  const reducer = methodJobState(cfg);
  // a resumed run's job-wide state (CurricularFace's t) continues from the checkpoint's
  const jobState = reducer && resume ? { ...reducer, initial: { ...reducer.initial, ...resume.lossState } } : reducer;
  const curveOn = cfg.curveKeys !== 'none' && cfg.curveKeys !== '';
  let transport: Transport;
  try {
    transport = { curve: curveOn ? loadCoordinatorKeys(cfg.curveKeys) : null, maxFrameBytes: Math.floor(cfg.maxFrameMb * 2 ** 20) };
  } catch (e) {
    if (!(e instanceof KeyFileError)) throw e;
    logger.log.error({ curveKeys: cfg.curveKeys }, e.message);
    if (mode === 'terminal') process.stderr.write(`shardface: curveKeys: ${e.message}\n`);
    return 2;
  }
  // the job configuration every worker gets; a restart swaps resumeFrom for the checkpoint it continues from
  const jobConfig: Record<string, unknown> = { ...cfg, runDir, steps: plan.steps, stepsPerEpoch: plan.stepsPerEpoch };
  /** Where a restart (maxRestarts) continues: the newest checkpoint that verifies now; the records of the steps after it go. */
  const restartPoint = (): RestartPoint => {
    const found = newestVerifiedCheckpoint(join(runDir, 'ckpt'));
    for (const r of found.rejected) logger.log.warn({ checkpoint: r.dir, problems: r.problems }, `checkpoint ${r.dir} rejected: ${r.problems.join('; ')}`);
    manifests.dropPending();
    badSteps = 0;
    const step = found.dir === null ? 0 : found.step;
    const dropped = keepRecordsUpTo(metricsPath, step);
    logger.log.info({ checkpoint: found.dir, step, droppedRecords: dropped }, `restart: metrics.jsonl keeps the records up to step ${step}`);
    if (found.dir === null) return { step: 0, dir: null, lossState: {}, config: jobConfig };
    return { step, dir: found.dir, lossState: readManifest(found.dir).lossState ?? {}, config: { ...jobConfig, resumeFrom: found.dir } };
  };
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
    spec: {
      kind: 'train',
      steps: plan.steps,
      startStep: firstStep,
      numClasses: plan.numClasses,
      seed: cfg.seed,
      config: { ...jobConfig, ...(resume ? { resumeFrom: resume.dir } : {}) },
    },
    maxRestarts: cfg.maxRestarts,
    restartPoint,
    logger,
    // the training method's job-wide state (CurricularFace's t) lives on the coordinator
    ...(jobState ? { jobState } : {}),
    onStepEnd: async (step, metrics, loss) => {
      const now = Date.now();
      const wall = (now - lastEnd) / 1000;
      lastEnd = now;
      const { record: rec, images, skipped, problems } = stepRecord(step, metrics, loss, wall);
      for (const p of problems) logger.log.error(p.fields, p.message);
      monitor?.onStep(metrics, rec, wall);
      badImages.skipped += skipped;
      badImages.drawn += images;
      lastStepSkipped = rec.skipped === 1;
      if (rec.skipped === 1) {
        badSteps++;
        const ranks = metrics.flatMap((m, rank) => (m.nonFiniteLocal === 1 ? [rank] : []));
        const source = ranks.length > 0 ? `non-finite gradients from rank(s) ${ranks.join(', ')}` : 'a non-finite loss';
        logger.log.warn({ step, ranks, loss: rec.loss, badSteps, maxBadSteps: cfg.maxBadSteps }, `step ${step} skipped on every rank: ${source}; no weights changed`);
        if (badSteps >= cfg.maxBadSteps)
          void coordinatorRef?.abort(
            `numerical guard: ${badSteps} steps in a row skipped (maxBadSteps ${cfg.maxBadSteps}); step ${step} had ${source}. Lower lr, enable clipGradNorm, or check the data.`,
          );
      } else badSteps = 0;
      if (step > firstStep) {
        imagesTimed += images;
        secondsTimed += wall;
      }
      finalLoss = rec.loss ?? NaN;
      const m0 = metrics[0]!;
      if (m0.valAccuracy !== undefined) lastVal = { accuracy: m0.valAccuracy, accuracy_std: m0.valStd!, threshold: m0.valThreshold!, pairs: m0.valPairs! };
      appendFileSync(metricsPath, JSON.stringify(rec) + '\n');
      const ips = secondsTimed > 0 ? imagesTimed / secondsTimed : images / wall;
      const eta = ((plan.steps - step) * cfg.workers * cfg.batch) / ips;
      if (mode === 'terminal') progress.update({ step, total: plan.steps, loss: finalLoss, lr: rec.lr!, imagesPerSecond: ips, etaSeconds: eta }, step === plan.steps);
      if (step % cfg.logEvery === 0 || step === plan.steps || m0.valAccuracy !== undefined) logger.log.info({ ...rec, eta_s: Math.round(eta) }, 'step');
      // too much unreadable data: stop here (the coordinator sees every rank's count; strictData stops in the loader instead)
      const tooMany = badImageFailure(badImages, plan.trainImages, cfg.maxBadImageShare);
      if (tooMany) await coordinatorRef?.abort(tooMany);
    },
    checkpointDue: (step) => {
      const since = clock.due();
      if (since !== null) logger.log.info({ step, sinceLastMinutes: since, checkpointMinutes: cfg.checkpointMinutes }, `checkpoint due at step ${step}: ${since.toFixed(3)} min since the last one`);
      return since !== null;
    },
    onEvent: (rank, name, fields) => {
      if (name === 'signal') return graceful.onWorkerSignal(rank, fields.signal);
      if (name !== 'checkpoint-file') return;
      const f = fields as unknown as CheckpointFileEvent;
      try {
        const done = manifests.onFile(f);
        if (done) {
          lastCheckpoint = done.dir;
          lastCheckpointStep = f.step;
          logger.log.info({ checkpoint: done.dir, step: f.step, removed: done.removed }, 'checkpoint written');
          clock.written();
          graceful.onCheckpoint(f.step);
        }
      } catch (e) {
        // A manifest that cannot be written leaves that checkpoint incomplete (never loaded); the previous one stays usable.
        stopJob?.(`checkpoint of step ${f.step} not written: ${(e as Error).message}; the last complete checkpoint is ${lastCheckpoint ?? 'none'}`);
      }
    },
  };
  const forwarder = new LineForwarder();
  const { done, stop, coordinator } = external
    ? await startExternal(coordinatorOptions, (waiting) => (mode === 'terminal' ? progress.status(waiting) : undefined))
    : await launchLocal({
        coordinator: coordinatorOptions,
        workerArgs: [...transportArgs, '--backend', cfg.backend, ...(cfg.threads > 0 ? ['--threads', String(cfg.threads)] : []), '--log-format', 'json', '--log-file', workersLog],
        out: (raw, from, stream) => {
          const f = forwarder.forward(raw, from, stream);
          if (mode === 'terminal') {
            // The worker wrote its own records to workers.log; keep what else it printed there too.
            if (f.wrapped) appendFileSync(workersLog, f.line + '\n');
          } else if (mode === 'quiet') {
            if (Number(f.record.level) >= 50) process.stderr.write(f.line + '\n');
          } else process.stdout.write(cfg.logFormat === 'pretty' ? prettyLine(f.record) : f.line + '\n');
        },
      });
  coordinatorRef = coordinator;
  stopJob = stop;
  const off = onTermination((sig) => graceful.onOwnSignal(sig));
  const r = await done;
  off();
  graceful.dispose();
  const stoppedBy = r.ok ? null : graceful.signal;
  await monitor?.close();
  if (mode === 'terminal') progress.done();
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
    logs: external ? [trainLog] : [trainLog, workersLog],
    seconds: elapsed,
    skipped_images: badImages.skipped,
    skipped_image_share: skippedShare(badImages),
    restarts: coordinator.snapshot().restarts,
    ...(r.ok ? {} : { error: r.reason }),
    ...(stoppedBy ? { stopped_by: stoppedBy } : {}),
  };
  const report = await writeRunReport(runDir, summary, logger);
  if (report) summary.report = report;
  let summaryWritten = true;
  try {
    writeFileAtomic(join(runDir, 'summary.json'), JSON.stringify(summary, null, 2));
  } catch (e) {
    summaryWritten = false;
    logger.log.error({ error: (e as Error).message }, 'summary not written');
    if (mode === 'terminal') process.stderr.write(`shardface: ${(e as Error).message}\n`);
  }
  if (stoppedBy) logger.log.warn(summary, 'training stopped');
  else logger.log.info(summary, r.ok ? 'training finished' : 'training failed');
  // Piped, the log line above is the summary; a person at a terminal gets it readable.
  if (mode === 'terminal') process.stderr.write(summaryLines(summary).join('\n') + '\n');
  // stopped by a signal: 128 + its number (SIGTERM 143, SIGINT 130), final checkpoint or not
  if (stoppedBy) return signalExitCode(stoppedBy);
  return r.ok && summaryWritten ? 0 : 1;
}

/** A coordinator for workers that other launchers start; same shape as launchLocal's result. */
async function startExternal(
  o: CoordinatorOptions,
  show: (waiting: string) => void,
): Promise<{ done: Promise<{ ok: boolean; reason: string; lastStep: number }>; stop: (reason: string) => void; coordinator: Coordinator }> {
  const c = new Coordinator(o);
  const address = await c.bind();
  const waiting = `waiting for ${o.workers} workers: shardface worker --coordinator ${address.replace('0.0.0.0', '<this host>')} --job ${o.job}`;
  o.logger.log.warn({ address, workers: o.workers, job: o.job }, waiting);
  show(waiting);
  return { done: c.run(), stop: (reason) => void c.abort(reason), coordinator: c };
}

/** Keeps metrics.jsonl's records of steps ≤ `step` (a resumed run redoes the later ones); returns how many were dropped. */
function keepRecordsUpTo(path: string, step: number): number {
  if (!existsSync(path)) return 0;
  const lines = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '');
  const kept = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { step?: number }).step! <= step;
    } catch {
      return false; // a line cut short by the crash
    }
  });
  if (kept.length < lines.length) writeFileAtomic(path, kept.map((l) => l + '\n').join(''));
  return lines.length - kept.length;
}
