/** `shardface coordinator`: the job's single address; see docs/architecture.md. */
import { writeFileSync } from 'node:fs';
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { LOG_OPTIONS, loggerFrom, readToken, TRANSPORT_OPTIONS, transportFrom } from '../common.js';
import { newJobId, onTermination } from '../../run/lifecycle.js';
import { Coordinator } from '../../coordinator/coordinator.js';
import { STEP_KINDS, type StepKind } from '../../protocol/index.js';
import { stepRecord } from '../../run/step-record.js';
import { CONFIG_KEYS } from '../../config/schema.js';

export const COORDINATOR_OPTIONS: Record<string, OptionSpec> = {
  bind: { kind: 'string', default: 'tcp://127.0.0.1:29500', help: 'control-plane address to bind' },
  workers: { kind: 'int', help: 'number of workers in the job (required)' },
  job: { kind: 'string', help: 'job id (default: generated)' },
  'token-file': { kind: 'string', help: 'file holding the shared token workers must present' },
  'heartbeat-ms': { kind: 'int', default: 2000, help: 'heartbeat period, both ways' },
  'worker-timeout': { kind: 'number', default: 30, help: 'seconds of silence after which a worker is declared dead' },
  'join-timeout': { kind: 'number', default: 600, help: 'seconds to wait for all workers to register' },
  config: { kind: 'string', help: 'training config file: run a training job for workers started elsewhere (multi-node)' },
  'run-dir': { kind: 'string', help: 'with --config: the run directory (overrides the config)' },
  resume: { kind: 'string', help: 'continue the training run in RUN_DIR from its newest verified checkpoint, with its saved config.json (as train --resume; instead of --config)' },
  kind: { kind: 'string', default: 'empty', help: `step kind: ${STEP_KINDS.join('|')} (ignored with --config)` },
  steps: { kind: 'int', default: 10, help: 'number of steps to clock' },
  classes: { kind: 'int', default: 0, help: 'number of classes to shard (classifier jobs)' },
  seed: { kind: 'int', default: 0, help: 'job seed' },
  'step-delay-ms': { kind: 'int', default: 0, help: 'empty jobs: milliseconds each step takes (for testing liveness)' },
  'address-file': { kind: 'string', help: 'write the bound address to this file once listening' },
  'metrics-port': { kind: 'int', help: "port of the metrics and status page endpoint; 0 = any free port, -1 = off (default: the config's metricsPort, 0)" },
  'metrics-host': { kind: 'string', help: "address the metrics endpoint listens on (default: the config's metricsHost, 127.0.0.1)" },
  ...TRANSPORT_OPTIONS,
  ...LOG_OPTIONS,
};

export async function run(argv: string[]): Promise<number> {
  const { options: o } = parseArgs(argv, COORDINATOR_OPTIONS);
  if (o.help) {
    console.log(usage('coordinator', COORDINATOR_OPTIONS));
    return 0;
  }
  if (o.workers === undefined) throw new UsageError('--workers is required');
  const workers = o.workers as number;
  if (workers < 1) throw new UsageError(`--workers must be >= 1, got ${workers}`);
  if (o.config !== undefined || o.resume !== undefined) return coordinateTraining(o, workers, argv);
  const kind = o.kind as string;
  if (!(STEP_KINDS as readonly string[]).includes(kind)) throw new UsageError(`--kind must be one of ${STEP_KINDS.join('|')}`);
  const logger = loggerFrom(o, 'coordinator');
  const steps = o.steps as number;
  let coordinatorRef: Coordinator | null = null;
  // plain (non-training) jobs get the same endpoint: workers, heartbeats, step times
  const metricsPort = (o['metrics-port'] as number | undefined) ?? (CONFIG_KEYS.metricsPort!.default as number);
  if (metricsPort < -1 || metricsPort > 65535) throw new UsageError(`--metrics-port must be in [-1, 65535], got ${metricsPort}`);
  const { startMonitor } = await import('../../run/watch.js');
  const host = (o['metrics-host'] as string | undefined) ?? (CONFIG_KEYS.metricsHost!.default as string);
  const monitor = await startMonitor({ host, port: metricsPort, steps }, () => coordinatorRef?.snapshot() ?? null, 'shardface coordinator');
  if (monitor === 'failed') return 2;
  if (monitor) logger.log.info({ url: monitor.url, metrics: `${monitor.url}metrics` }, `status page ${monitor.url}`);
  let lastEnd = Date.now();
  const transport = transportFrom(o, 'coordinator');
  const coordinator = new Coordinator({
    transport,
    bind: o.bind as string,
    workers,
    job: (o.job as string | undefined) ?? newJobId(),
    token: readToken(o['token-file']),
    heartbeatMs: o['heartbeat-ms'] as number,
    workerTimeoutMs: (o['worker-timeout'] as number) * 1000,
    joinTimeoutMs: (o['join-timeout'] as number) * 1000,
    spec: { kind: kind as StepKind, steps, numClasses: o.classes as number, seed: o.seed as number, config: { stepDelayMs: o['step-delay-ms'] } },
    logger,
    onStepEnd: (step, metrics, loss) => {
      const now = Date.now();
      const wall = (now - lastEnd) / 1000;
      lastEnd = now;
      monitor?.onStep(metrics, stepRecord(step, metrics, loss, wall).record, wall);
    },
  });
  coordinatorRef = coordinator;
  const address = await coordinator.bind();
  if (o['address-file']) writeFileSync(o['address-file'] as string, address);
  const off = onTermination((sig) => void coordinator.abort(`coordinator received ${sig}`));
  const result = await coordinator.run();
  off();
  await monitor?.close();
  if (!result.ok) logger.log.error({ lastStep: result.lastStep }, `job failed: ${result.reason}`);
  return result.ok ? 0 : 1;
}

/** `--config` or `--resume`: the training coordinator (metrics, checkpoints, summary) for external workers. */
async function coordinateTraining(o: Record<string, unknown>, workers: number, argv: string[]): Promise<number> {
  const { resolveConfig, ConfigError } = await import('../../config/index.js');
  const [{ planTraining }, { planResume }, { runTraining }] = await Promise.all([import('../../run/plan.js'), import('../../run/resume.js'), import('../../run/training.js')]);
  if (o.resume !== undefined && o.config !== undefined) throw new UsageError("--resume takes the run's saved config.json; leave --config out");
  let plan;
  try {
    const overrides: Record<string, string> = {
      workers: String(workers),
      logFormat: String(o['log-format']),
      heartbeatMs: String(o['heartbeat-ms']),
      workerTimeoutMs: String((o['worker-timeout'] as number) * 1000),
    };
    if (o['run-dir']) overrides.runDir = o['run-dir'] as string;
    if (o['metrics-port'] !== undefined) overrides.metricsPort = String(o['metrics-port'] as number);
    if (o['metrics-host'] !== undefined) overrides.metricsHost = o['metrics-host'] as string;
    if (o['curve-keys']) overrides.curveKeys = o['curve-keys'] as string;
    if (argv.some((a) => a.startsWith('--max-frame-mb'))) overrides.maxFrameMb = String(o['max-frame-mb']);
    plan = o.resume !== undefined ? planResume(o.resume as string, overrides) : planTraining(resolveConfig({ file: o.config as string, overrides }));
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  return runTraining(plan, { workers: { bind: o.bind as string, token: readToken(o['token-file']), job: o.job as string | undefined } });
}
