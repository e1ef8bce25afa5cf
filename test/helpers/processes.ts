/** Starting real shardface processes from tests and reading their JSON logs. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Runs the CLI to completion from the repository root: exit code (1 for a kill or timeout) and both outputs. */
export function runCli(args: string[], timeout = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: ROOT, timeout, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr });
    });
  });
}

export interface Proc {
  child: ChildProcess;
  lines: string[];
  /** Parsed JSON log lines (non-JSON lines skipped). */
  json(): Record<string, unknown>[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first JSON line matching `pred`. */
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** `wrap` runs the CLI under another command, e.g. ['ip', 'netns', 'exec', NAME]. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, wrap: string[] = []): Proc {
  const argv = [...wrap, process.execPath, CLI, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const lines: string[] = [];
  const listeners: ((l: string) => void)[] = [];
  const onLine = (l: string) => {
    lines.push(l);
    for (const f of listeners) f(l);
  };
  createInterface({ input: child.stdout! }).on('line', onLine);
  createInterface({ input: child.stderr! }).on('line', onLine);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const parse = (l: string): Record<string, unknown> | null => {
    if (!l.startsWith('{')) return null;
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      return null;
    }
  };
  return {
    child,
    lines,
    exit,
    json: () => lines.map(parse).filter((x): x is Record<string, unknown> => x !== null),
    waitFor(pred, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        for (const l of lines) {
          const j = parse(l);
          if (j && pred(j)) return resolve(j);
        }
        const timer = setTimeout(() => reject(new Error(`timed out waiting for a log line; last lines:\n${lines.slice(-15).join('\n')}`)), timeoutMs);
        listeners.push((l) => {
          const j = parse(l);
          if (j && pred(j)) {
            clearTimeout(timer);
            resolve(j);
          }
        });
      });
    },
  };
}

/**
 * Starts `shardface coordinator ARGS` on an ephemeral loopback port and resolves once it
 * listens, with the address it bound. Picking a "free" port first and binding it later
 * races every other process of a parallel test run; binding port 0 cannot.
 */
export async function startCoordinator(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ coord: Proc; address: string }> {
  const coord = startCli(['coordinator', ...args, '--bind', 'tcp://127.0.0.1:0'], env);
  const listening = await coord.waitFor((l) => l.msg === 'coordinator listening');
  return { coord, address: String(listening.bind) };
}

/** A free-ish TCP port on loopback for a coordinator to bind. */
export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}
