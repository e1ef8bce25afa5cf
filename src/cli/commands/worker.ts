/** `shardface worker`: one process per device; everything else comes from the coordinator. */
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { LOG_OPTIONS, loggerFrom, readToken, TRANSPORT_OPTIONS, transportFrom } from '../common.js';
import { runWorker } from '../../worker/worker.js';
import { rankFromEnv } from '../../worker/device.js';
import { BACKEND_CHOICES, type BackendChoice } from '../../ops/backend.js';

export const WORKER_OPTIONS: Record<string, OptionSpec> = {
  coordinator: { kind: 'string', default: 'tcp://127.0.0.1:29500', help: 'coordinator address' },
  rank: { kind: 'int', help: 'explicit rank (default: $SHARDFACE_RANK, $RANK, $SLURM_PROCID or $JOB_COMPLETION_INDEX, else assigned)' },
  device: { kind: 'string', help: "CUDA device for this worker (sets CUDA_VISIBLE_DEVICES); default: the local rank's" },
  backend: { kind: 'string', help: `compute backend: ${BACKEND_CHOICES.join('|')} (default: the job's config, else auto)` },
  threads: { kind: 'int', help: 'CPU threads for native kernels (default: $SHARDFACE_THREADS or all cores)' },
  job: { kind: 'string', help: 'job id to join (default: whatever the coordinator runs)' },
  'token-file': { kind: 'string', help: 'file holding the shared token' },
  advertise: { kind: 'string', help: 'host name or IP other workers use to reach this one' },
  'worker-timeout': { kind: 'number', default: 30, help: "seconds the coordinator may be unreachable or silent before this worker gives up (until the job's own timeout arrives with welcome)" },
  'curve-name': { kind: 'string', help: "with --curve-keys: this worker's key pair, DIR/NAME.key (default: worker.key, else the only worker*.key, else worker-$SHARDFACE_LOCAL_RANK.key)" },
  ...TRANSPORT_OPTIONS,
  ...LOG_OPTIONS,
};

export async function run(argv: string[]): Promise<number> {
  const { options: o } = parseArgs(argv, WORKER_OPTIONS);
  if (o.help) {
    console.log(usage('worker', WORKER_OPTIONS));
    return 0;
  }
  const backend = o.backend as string | undefined;
  if (backend !== undefined && !(BACKEND_CHOICES as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKEND_CHOICES.join('|')}`);
  const threads = o.threads as number | undefined;
  if (threads !== undefined && threads < 1) throw new UsageError('--threads must be >= 1');
  const rank = (o.rank as number | undefined) ?? rankFromEnv();
  const timeout = o['worker-timeout'] as number;
  if (!(timeout > 0)) throw new UsageError('--worker-timeout must be > 0');
  const transport = transportFrom(o, 'worker', o['curve-name'] as string | undefined);
  return runWorker({
    transport,
    timeoutMs: timeout * 1000,
    coordinator: o.coordinator as string,
    rank,
    device: o.device as string | undefined,
    backend: backend as BackendChoice | undefined,
    threads,
    job: o.job as string | undefined,
    token: readToken(o['token-file']),
    advertise: o.advertise as string | undefined,
    logger: loggerFrom(o, 'worker', rank ?? null),
  });
}
