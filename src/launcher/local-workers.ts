/**
 * Starting N worker processes on this machine (torchrun-style): each gets its
 * local rank (which pins its GPU, see worker/device.ts) and its share of the
 * CPU cores. Their output is forwarded line by line, and if one fails the
 * others are stopped — or, in a job that restarts (maxRestarts), a
 * replacement takes its place (same local rank, so the same device).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { choosePin, OWN_LOCAL_RANK } from '../worker/device.js';
import { LineForwarder, type ChildRef } from '../log/forward.js';
import { prettyLine, type LogFormat } from '../log/logger.js';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export interface LocalWorkersOptions {
  workers: number;
  coordinator: string;
  /** Extra arguments for every `shardface worker`. */
  workerArgs: string[];
  /** Extra environment for every worker. */
  env?: NodeJS.ProcessEnv;
  /** Where the workers' output lines go; default: `format` lines on stdout. */
  out?: (line: string, from: ChildRef, stream: 'stdout' | 'stderr') => void;
  /** How the default `out` shows lines: JSON records (default) or pretty ones. */
  format?: LogFormat;
  /**
   * A worker failed (non-zero exit or a signal): the extra arguments of a
   * replacement to start in its place, or null to stop the others (default).
   */
  replaceFailed?: (e: WorkerExit) => string[] | null;
}

export interface WorkerExit {
  index: number;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LocalWorkers {
  /** Every process started, replacements included (index = start order). */
  readonly children: ChildProcess[];
  /** Resolves when every worker has exited (for a replaced one: its last replacement); reports the first failure not replaced. */
  readonly done: Promise<{ ok: boolean; exits: WorkerExit[]; firstFailure: WorkerExit | null }>;
  stop(signal?: NodeJS.Signals): void;
}

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** The command that runs the shardface CLI from this installation (compiled or from source). */
function cliCommand(): { command: string; args: string[] } {
  if (CLI.endsWith('.ts')) return { command: process.execPath, args: ['--import', 'tsx', CLI] };
  return { command: process.execPath, args: [CLI] };
}

/** A local job that cannot start as asked (nothing was started). */
export class LaunchError extends Error {
  override name = 'LaunchError';
}

/**
 * The workers would each refuse a bad pin (see worker/device.ts); say it once,
 * before anything starts.
 */
export function checkLocalPins(workers: number, workerArgs: string[], env: NodeJS.ProcessEnv = {}): void {
  if (workerArgs.includes('--device')) return;
  for (let i = 0; i < workers; i++) {
    const pin = choosePin({ localRank: { value: i, variable: OWN_LOCAL_RANK }, visible: env.CUDA_VISIBLE_DEVICES ?? process.env.CUDA_VISIBLE_DEVICES });
    if (!pin.ok) throw new LaunchError(`cannot start ${workers} workers on this host: ${pin.message}`);
  }
}

export function startLocalWorkers(opts: LocalWorkersOptions): LocalWorkers {
  const threads = Math.max(1, Math.floor(availableParallelism() / opts.workers));
  const cli = cliCommand();
  const children: ChildProcess[] = [];
  const exits: WorkerExit[] = [];
  let firstFailure: WorkerExit | null = null;
  let stopping = false;
  const forwarder = new LineForwarder();
  const out =
    opts.out ??
    ((line: string, from: ChildRef, stream: 'stdout' | 'stderr') => {
      const f = forwarder.forward(line, from, stream);
      process.stdout.write(opts.format === 'pretty' ? prettyLine(f.record) : f.line + '\n');
    });

  const stop = (signal: NodeJS.Signals = 'SIGTERM') => {
    stopping = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
    // Anything still alive after a grace period is killed.
    setTimeout(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, 5000).unref();
  };

  const done = new Promise<{ ok: boolean; exits: WorkerExit[]; firstFailure: WorkerExit | null }>((resolve) => {
    /** Worker slots (local ranks) whose process, or last replacement, still runs. */
    let running = 0;
    const start = (i: number, extraArgs: string[]) => {
      running++;
      const args = [...cli.args, 'worker', '--coordinator', opts.coordinator, ...opts.workerArgs, ...extraArgs];
      const child = spawn(cli.command, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          ...opts.env,
          [OWN_LOCAL_RANK]: String(i),
          SHARDFACE_LOCAL_WORLD: String(opts.workers),
          SHARDFACE_THREADS: process.env.SHARDFACE_THREADS ?? String(threads),
          OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? String(threads),
        },
      });
      children.push(child);
      const from: ChildRef = { index: i, pid: child.pid };
      createInterface({ input: child.stdout! }).on('line', (l) => out(l, from, 'stdout'));
      createInterface({ input: child.stderr! }).on('line', (l) => out(l, from, 'stderr'));
      child.on('exit', (code, signal) => {
        const e: WorkerExit = { index: i, pid: child.pid, code, signal };
        const failed = code !== 0 || signal !== null;
        const replacement = failed && !stopping && !firstFailure ? (opts.replaceFailed?.(e) ?? null) : null;
        running--;
        if (replacement) return start(i, replacement);
        exits.push(e);
        if (failed && !firstFailure && !stopping) {
          firstFailure = e;
          stop();
        }
        if (running === 0) resolve({ ok: exits.every((x) => x.code === 0) && !firstFailure, exits, firstFailure });
      });
    };
    for (let i = 0; i < opts.workers; i++) start(i, []);
  });
  return { children, done, stop };
}
