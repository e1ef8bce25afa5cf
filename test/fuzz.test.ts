/**
 * Property-based fuzzing of every receiver. In process: decode() never
 * throws, whatever the frames. Live: ≥ 10,000 hostile messages (mutated real
 * frames, junk msgpack, random bytes; test/helpers/fuzz-frames.ts) at a
 * coordinator and at a worker's ring inbox — both stay up, their memory stays
 * bounded, and the training job they then run ends with the very checkpoint
 * of a run nobody fuzzed. SHARDFACE_FUZZ_FRAMES=N fuzzes with N messages per
 * target instead (a longer run).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { decode, MESSAGE_TYPES } from '../src/protocol/index.js';
import { hostileMessages } from './helpers/fuzz-frames.js';
import { rssBytes } from './helpers/rss.js';
import { strangerSocket, trainWithExternalWorkers, type Stranger } from './helpers/strangers.js';

const FRAMES = Number(process.env.SHARDFACE_FUZZ_FRAMES ?? 10_000);
const MiB = 2 ** 20;

describe('decode() under fuzzing', () => {
  it(`never throws, and accepts only well-formed messages (${FRAMES} cases)`, () => {
    fc.assert(
      fc.property(hostileMessages('fuzz-job'), fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }), (frames, world) => {
        const r = decode(frames, { world, job: world === undefined ? undefined : 'fuzz-job' });
        if (!r.ok) return typeof r.error.code === 'string';
        const h = r.msg.header;
        return (
          (MESSAGE_TYPES as readonly string[]).includes(h.type) &&
          h.tensors.length === frames.length - 1 &&
          Object.keys(r.msg.tensors).length <= h.tensors.length &&
          (world === undefined || h.rank < world)
        );
      }),
      { numRuns: FRAMES, seed: 20261203 },
    );
  });
});

/** Sends `messages` through `sockets` round robin and waits until all are handed to ZeroMQ. */
async function blast(sockets: Stranger[], messages: Uint8Array[][]): Promise<void> {
  messages.forEach((m, i) => sockets[i % sockets.length]!.post(m));
  await Promise.all(sockets.map((s) => s.flushed()));
}

/** Waits until `count()` has stopped growing for a second (at most `ms`). */
async function settle(count: () => number, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  let last = -1;
  while (Date.now() - t0 < ms) {
    const n = count();
    if (n === last) return;
    last = n;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

describe('live processes under fuzzing', () => {
  it(`a coordinator and a worker take ${FRAMES} hostile messages each, stay up with bounded RSS, and then train exactly as if unfuzzed`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-fuzz-'));
    const clean = await trainWithExternalWorkers(dir, 'clean');
    const rss: Record<string, { before: number; after: number }> = {};
    let replies = 0;
    const fuzzed = await trainWithExternalWorkers(
      dir,
      'fuzzed',
      async (job, addr, workers) => {
        // a second wave at the coordinator while the job runs
        const wave = fc.sample(hostileMessages(job), { numRuns: 2000, seed: 7 });
        const inbox = String((await workers[1]!.waitFor((l) => l.msg === 'registering')).dataAddress);
        const sockets = [strangerSocket(addr), strangerSocket(inbox)];
        await blast([sockets[0]!], wave);
        await blast([sockets[1]!], wave);
        sockets.forEach((s) => s.close());
      },
      {
        // rank 0 has registered and waits, idle, for rank 1: fuzz it and the coordinator now
        beforeSecond: async (job, addr, first, coord) => {
          const inbox = String((await first.waitFor((l) => l.msg === 'registering')).dataAddress);
          const messages = fc.sample(hostileMessages(job), { numRuns: FRAMES, seed: 20261203 });
          const pids = { coordinator: coord.child.pid!, worker: first.child.pid! };
          for (const [k, pid] of Object.entries(pids)) rss[k] = { before: rssBytes(pid), after: 0 };
          const toCoordinator = [strangerSocket(addr), strangerSocket(addr, 'w-00000000000000000000000000000000'), strangerSocket(addr, `h-${job}`)];
          const toInbox = [strangerSocket(inbox), strangerSocket(inbox, `${job}/ring/1`)];
          await Promise.all([blast(toCoordinator, messages), blast(toInbox, messages)]);
          // the coordinator answers what it can decode as a message to it; wait until it has worked through the lot
          await settle(() => toCoordinator.reduce((a, s) => a + s.replies, 0));
          replies = toCoordinator.reduce((a, s) => a + s.replies, 0);
          for (const [k, pid] of Object.entries(pids)) rss[k]!.after = rssBytes(pid);
          [...toCoordinator, ...toInbox].forEach((s) => s.close());
        },
      },
    );
    expect(replies).toBeGreaterThan(FRAMES * 0.8); // all but the heartbeats, which strangers never get answers to
    for (const [k, r] of Object.entries(rss)) expect(r.after - r.before, `${k} RSS ${(r.before / MiB).toFixed(1)} → ${(r.after / MiB).toFixed(1)} MiB`).toBeLessThan(64 * MiB);
    const ckpt = (run: string, f: string) => readFileSync(join(run, 'ckpt', 'step-000003', f));
    for (const f of ['backbone.safetensors', 'classifier-shard-0.safetensors', 'classifier-shard-1.safetensors']) expect(ckpt(fuzzed.runDir, f).equals(ckpt(clean.runDir, f)), f).toBe(true);
    // logs stayed bounded: a burst per interval plus counted summaries
    const rejected = fuzzed.coord.json().filter((l) => /rejected message/.test(String(l.msg))).length;
    expect(rejected).toBeLessThanOrEqual(10 * 6);
    console.log(
      `fuzz: ${FRAMES} messages per target; coordinator RSS ${(rss.coordinator!.before / MiB).toFixed(1)} → ${(rss.coordinator!.after / MiB).toFixed(1)} MiB, worker ${(rss.worker!.before / MiB).toFixed(1)} → ${(rss.worker!.after / MiB).toFixed(1)} MiB; ${replies} error replies; ${rejected} log lines`,
    );
  });
});
