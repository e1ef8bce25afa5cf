/** A stranger on the network, and a small training run with external workers to aim it at. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { expect } from 'vitest';
import { type Proc, startCli, startCoordinator } from './processes.js';

export interface Stranger {
  /** Queues a send (a socket allows one send in flight); failures are ignored. */
  post(frames: Uint8Array[]): void;
  /** Resolves when everything posted so far has been handed to ZeroMQ. */
  flushed(): Promise<void>;
  /** Replies received so far. */
  readonly replies: number;
  close(): void;
}

/** A DEALER connected to `addr`, optionally with a chosen routing id; replies are counted and dropped. */
export function strangerSocket(addr: string, routingId?: string): Stranger {
  const s = new zmq.Dealer({ linger: 0, ...(routingId ? { routingId } : {}) });
  s.connect(addr);
  let replies = 0;
  void (async () => {
    try {
      for await (const _ of s) replies++;
    } catch {
      // closed
    }
  })();
  let chain: Promise<unknown> = Promise.resolve();
  return {
    post: (frames) => {
      chain = chain.then(() => s.send(frames)).catch(() => undefined);
    },
    flushed: () => chain.then(() => undefined),
    get replies() {
      return replies;
    },
    close: () => s.close(),
  };
}

export const TINY_TRAINING = {
  workers: 2,
  batch: 8,
  imageSize: 16,
  embeddingSize: 16,
  data: 'synthetic:20',
  imagesPerIdentity: 4,
  heldOutIdentities: 0,
  steps: 3,
  backend: 'cpu-native',
  backboneNorm: 'none',
  threads: 1,
};

export interface TrainRun {
  runDir: string;
  workers: Proc[];
  coord: Proc;
}

/**
 * A training run (`coordinator --config` plus two `worker` processes, as on a
 * cluster); `meddle` runs alongside, given the job id, the coordinator's
 * address and the processes; `beforeSecond` runs once rank 0 has registered
 * and waits (idle) for rank 1, which starts after it. Asserts that every
 * process exits 0.
 */
export async function trainWithExternalWorkers(
  dir: string,
  name: string,
  meddle?: (job: string, addr: string, workers: Proc[], coord: Proc) => Promise<void>,
  opts: { config?: Record<string, unknown>; beforeSecond?: (job: string, addr: string, first: Proc, coord: Proc) => Promise<void> } = {},
): Promise<TrainRun> {
  const config = opts.config ?? TINY_TRAINING;
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const runDir = join(dir, name);
  const job = `job-${name}`;
  writeFileSync(join(dir, 'token'), 'not-for-strangers');
  const { coord, address: addr } = await startCoordinator(['--config', file, '--workers', '2', '--token-file', join(dir, 'token'), '--job', job, '--run-dir', runDir]);
  await coord.waitFor((l) => /waiting for 2 workers/.test(String(l.msg)));
  const start = (r: number) => startCli(['worker', '--coordinator', addr, '--job', job, '--rank', String(r), '--token-file', join(dir, 'token')]);
  const first = start(0);
  if (opts.beforeSecond) {
    await first.waitFor((l) => l.msg === 'registering');
    await coord.waitFor((l) => l.msg === 'worker registered');
    await opts.beforeSecond(job, addr, first, coord);
  }
  const workers = [first, start(1)];
  const meddling = meddle ? meddle(job, addr, workers, coord) : Promise.resolve();
  const [c, ...w] = await Promise.all([coord.exit, ...workers.map((p) => p.exit)]);
  await meddling;
  expect(c.code, coord.lines.slice(-10).join('\n')).toBe(0);
  w.forEach((x) => expect(x.code).toBe(0));
  return { runDir, workers, coord };
}
