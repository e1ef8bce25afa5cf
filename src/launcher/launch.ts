/**
 * One coordinator (in this process) plus N local worker processes: what
 * `shardface launch` and `shardface train` run on a single machine.
 */
import { Coordinator, type CoordinatorOptions, type JobResult } from '../coordinator/coordinator.js';
import { checkLocalPins, startLocalWorkers, type LocalWorkers, type LocalWorkersOptions } from './local-workers.js';

export interface LaunchOptions {
  coordinator: Omit<CoordinatorOptions, 'bind'> & { bind?: string };
  workerArgs: string[];
  workerEnv?: NodeJS.ProcessEnv;
  out?: LocalWorkersOptions['out'];
  format?: LocalWorkersOptions['format'];
}

export interface LaunchResult extends JobResult {
  workerExitCodes: (number | null)[];
}

export async function launchLocal(opts: LaunchOptions): Promise<{ coordinator: Coordinator; done: Promise<LaunchResult>; stop: (reason: string) => void }> {
  checkLocalPins(opts.coordinator.workers, opts.workerArgs, opts.workerEnv);
  let workers: LocalWorkers | null = null;
  const coordinator = new Coordinator({
    ...opts.coordinator,
    bind: opts.coordinator.bind ?? 'tcp://127.0.0.1:0',
    // a worker declared lost (silent) in a job that restarts: end its process, so the exit below replaces it
    onWorkerLost: (pid) => workers?.children.find((c) => c.pid === pid && c.exitCode === null && c.signalCode === null)?.kill('SIGKILL'),
  });
  const address = await coordinator.bind();
  workers = startLocalWorkers({
    workers: opts.coordinator.workers,
    coordinator: address,
    workerArgs: ['--job', opts.coordinator.job, ...opts.workerArgs],
    env: opts.workerEnv,
    out: opts.out,
    format: opts.format,
    // the coordinator hears of the exit at once (no heartbeat timeout); in a job that restarts it names the rank the replacement takes
    replaceFailed: (e) => {
      const rank = coordinator.processExited(e.pid, e.signal ? `signal ${e.signal}` : `exit code ${e.code}`);
      return rank === null ? null : ['--rank', String(rank)];
    },
  });
  const done = (async (): Promise<LaunchResult> => {
    const result = await coordinator.run();
    // Workers exit on the coordinator's stop; give them time, then make sure.
    const timer = setTimeout(() => workers.stop(), 10_000);
    const w = await workers.done;
    clearTimeout(timer);
    const codes = w.exits.sort((a, b) => a.index - b.index).map((e) => e.code);
    const ok = result.ok && w.exits.every((e) => e.code === 0);
    return { ...result, ok, reason: ok || !result.ok ? result.reason : `a worker exited with code ${codes.find((c) => c !== 0)}`, workerExitCodes: codes };
  })();
  return {
    coordinator,
    done,
    stop: (reason) => {
      void coordinator.abort(reason);
    },
  };
}
