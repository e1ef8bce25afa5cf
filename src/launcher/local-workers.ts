/**
 * Starting N worker processes on this machine (torchrun-style): each gets its
 * local rank, its share of the CPU cores, and its own GPU when GPUs are
 * visible. Their output is forwarded line by line, and if one fails the
 * others are stopped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
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
  /** Where forwarded lines go (default process.stdout / stderr). */
  out?: (line: string, from: string, stream: 'stdout' | 'stderr') => void;
  /** Assign GPU i to worker i; default: when nvidia-smi lists GPUs. */
  gpus?: number;
}

export interface WorkerExit {
  index: number;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LocalWorkers {
  readonly children: ChildProcess[];
  /** Resolves when every worker has exited; reports the first failure. */
  readonly done: Promise<{ ok: boolean; exits: WorkerExit[]; firstFailure: WorkerExit | null }>;
  stop(signal?: NodeJS.Signals): void;
}

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** Number of GPUs nvidia-smi reports, or 0. */
export function visibleGpuCount(): number {
  if (process.env.CUDA_VISIBLE_DEVICES !== undefined) return process.env.CUDA_VISIBLE_DEVICES.split(',').filter((s) => s.trim() !== '' && s !== '-1').length;
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 5000 });
  if (r.status !== 0 || !r.stdout) return 0;
  return r.stdout.split('\n').filter((l) => l.startsWith('GPU ')).length;
}

/** The command that runs the shardface CLI from this installation (compiled or from source). */
export function cliCommand(): { command: string; args: string[] } {
  if (CLI.endsWith('.ts')) return { command: process.execPath, args: ['--import', 'tsx', CLI] };
  return { command: process.execPath, args: [CLI] };
}

export function startLocalWorkers(opts: LocalWorkersOptions): LocalWorkers {
  const gpus = opts.gpus ?? visibleGpuCount();
  const threads = Math.max(1, Math.floor(availableParallelism() / opts.workers));
  const cli = cliCommand();
  const children: ChildProcess[] = [];
  const exits: WorkerExit[] = [];
  let firstFailure: WorkerExit | null = null;
  let stopping = false;
  const out =
    opts.out ??
    ((line: string, from: string, stream: 'stdout' | 'stderr') => {
      // JSON lines already carry role and rank; anything else gets a prefix.
      const text = line.startsWith('{') ? line : `[${from}] ${line}`;
      (stream === 'stdout' ? process.stdout : process.stderr).write(text + '\n');
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
    for (let i = 0; i < opts.workers; i++) {
      const args = [...cli.args, 'worker', '--coordinator', opts.coordinator, ...opts.workerArgs];
      if (gpus > 0 && !opts.workerArgs.includes('--device')) args.push('--device', String(i % gpus));
      const child = spawn(cli.command, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          ...opts.env,
          SHARDFACE_LOCAL_RANK: String(i),
          SHARDFACE_LOCAL_WORLD: String(opts.workers),
          SHARDFACE_THREADS: process.env.SHARDFACE_THREADS ?? String(threads),
          OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? String(threads),
        },
      });
      children.push(child);
      const from = `worker ${i}`;
      createInterface({ input: child.stdout! }).on('line', (l) => out(l, from, 'stdout'));
      createInterface({ input: child.stderr! }).on('line', (l) => out(l, from, 'stderr'));
      child.on('exit', (code, signal) => {
        const e: WorkerExit = { index: i, pid: child.pid, code, signal };
        exits.push(e);
        if ((code !== 0 || signal) && !firstFailure && !stopping) {
          firstFailure = e;
          stop();
        }
        if (exits.length === opts.workers) resolve({ ok: exits.every((x) => x.code === 0) && !firstFailure, exits, firstFailure });
      });
    }
  });
  return { children, done, stop };
}
