/** `shardface launch --workers N [coordinator options] -- [worker options]`: a whole job on this machine. */
import { parseArgs, usage, UsageError } from '../args.js';
import { loggerFrom, readToken, transportFrom } from '../common.js';
import { newJobId, onTermination } from '../../run/lifecycle.js';
import { COORDINATOR_OPTIONS } from './coordinator.js';
import { launchLocal } from '../../launcher/launch.js';
import { LaunchError } from '../../launcher/local-workers.js';
import { STEP_KINDS, type StepKind } from '../../protocol/index.js';

export async function run(argv: string[]): Promise<number> {
  const { options: o, rest } = parseArgs(argv, COORDINATOR_OPTIONS);
  if (o.help) {
    console.log(`${usage('launch', COORDINATOR_OPTIONS)}\n  -- <worker options>  passed to every 'shardface worker'`);
    return 0;
  }
  if (o.config !== undefined) throw new UsageError('launch runs plain jobs; to train with a config use `shardface train --config FILE`');
  const workers = o.workers as number | undefined;
  if (workers === undefined || workers < 1) throw new UsageError('--workers N (>= 1) is required');
  const kind = o.kind as string;
  if (!(STEP_KINDS as readonly string[]).includes(kind)) throw new UsageError(`--kind must be one of ${STEP_KINDS.join('|')}`);
  const logger = loggerFrom(o, 'launcher');
  const token = readToken(o['token-file']);
  const transport = transportFrom(o, 'coordinator');
  const workerArgs = [...rest];
  if (o['log-format'] && !rest.includes('--log-format')) workerArgs.push('--log-format', o['log-format'] as string);
  if (o['curve-keys'] && !rest.includes('--curve-keys')) workerArgs.push('--curve-keys', o['curve-keys'] as string);
  if (!rest.includes('--max-frame-mb')) workerArgs.push('--max-frame-mb', String(o['max-frame-mb']));
  if (!rest.includes('--worker-timeout')) workerArgs.push('--worker-timeout', String(o['worker-timeout']));
  const launched = await launchLocal({
    coordinator: {
      transport,
      bind: o.bind === COORDINATOR_OPTIONS.bind!.default ? 'tcp://127.0.0.1:0' : (o.bind as string),
      workers,
      job: (o.job as string | undefined) ?? newJobId(),
      token,
      heartbeatMs: o['heartbeat-ms'] as number,
      workerTimeoutMs: (o['worker-timeout'] as number) * 1000,
      joinTimeoutMs: (o['join-timeout'] as number) * 1000,
      spec: { kind: kind as StepKind, steps: o.steps as number, numClasses: o.classes as number, seed: o.seed as number, config: { stepDelayMs: o['step-delay-ms'] } },
      logger,
    },
    workerArgs,
    workerEnv: token ? { SHARDFACE_TOKEN: token } : {},
    format: o['log-format'] === 'pretty' ? 'pretty' : 'json',
  }).catch((e: unknown) => {
    throw e instanceof LaunchError ? new UsageError(e.message) : e;
  });
  const { done, stop } = launched;
  const off = onTermination((sig) => stop(`coordinator received ${sig}`));
  const r = await done;
  off();
  if (r.ok) logger.log.info({ steps: r.lastStep }, 'job finished');
  else logger.log.error({ lastStep: r.lastStep, workerExitCodes: r.workerExitCodes }, `job failed: ${r.reason}`);
  return r.ok ? 0 : 1;
}
