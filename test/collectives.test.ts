/**
 * Ring collectives across real worker processes on 127.0.0.1: every op equals
 * the serial result bit for bit on every rank, for n = 1..4 and sizes 0, 1, 7, 1e6.
 * All cases of one world size run in one set of child processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { bindInbox, Ring } from '../src/collectives/ring.js';
import { casesFor, expectedFor, inputFor, sha256, SIZES } from './fixtures/collective-cases.js';

const WORKER = fileURLToPath(new URL('./fixtures/collective-worker.ts', import.meta.url));
type Result = { name: string; sha: string | null; error?: string };

async function runWorkers(world: number, chunkBytes?: number): Promise<Result[][]> {
  const children: ChildProcess[] = [];
  const addresses: string[] = [];
  const results: Result[][] = [];
  try {
    await Promise.all(
      Array.from({ length: world }, (_, rank) => {
        const child = spawn(process.execPath, ['--import', 'tsx', WORKER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        children.push(child);
        return new Promise<void>((resolve, reject) => {
          child.once('error', reject);
          child.once('exit', (code) => reject(new Error(`worker ${rank} exited with ${code} before reporting`)));
          child.on('message', (m: { kind: string; address?: string; results?: Result[] }) => {
            if (m.kind === 'address') {
              addresses[rank] = m.address!;
              if (addresses.filter(Boolean).length === world) children.forEach((c, r) => c.send({ rank: r, world, peers: addresses, job: 'test-job', chunkBytes }));
            } else if (m.kind === 'results') {
              results[rank] = m.results!;
              resolve();
            }
          });
        });
      }),
    );
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill();
  }
  return results;
}

describe('ring collectives across processes', () => {
  // world 3 runs with chunks of 10,000 floats, so blocks of 1e6/3 span many chunks with a ragged tail.
  for (const [world, chunkBytes] of [[1], [2], [3, 40_000], [4]] as [number, number?][]) {
    it(`n = ${world}: every op equals the serial result, bit-identical on all ranks`, async () => {
      const results = await runWorkers(world, chunkBytes);
      const cases = casesFor(world);
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        const inputs = Array.from({ length: world }, (_, r) => inputFor(c, i, r));
        for (let r = 0; r < world; r++) {
          const got = results[r]![i];
          expect(got?.error, `${c.name} on rank ${r}`).toBeUndefined();
          const want = expectedFor(c, inputs, r);
          expect(got!.sha, `${c.name} on rank ${r}`).toBe(want ? sha256(want) : null);
        }
        // Ops whose result is the same everywhere must also agree across ranks (implied above; said explicitly).
        if (c.op === 'allreduce' || c.op === 'allgather' || c.op === 'broadcast') expect(new Set(results.map((rs) => rs[i]!.sha)).size, c.name).toBe(1);
      }
      expect(results.every((rs) => rs.length === cases.length)).toBe(true);
    });
  }
});

describe('ring collectives in one process', () => {
  it('tiny chunks (2 elements) on 3 ranks: sizes 0, 1, 7 still equal the serial result', async () => {
    const world = 3;
    const bound = await Promise.all(Array.from({ length: world }, () => bindInbox()));
    const peers = bound.map((b) => b.address);
    const rings = await Promise.all(bound.map((b, rank) => Ring.connect({ job: 'j', rank, world, peers, inbox: b.inbox, chunkBytes: 8, timeoutMs: 5000 })));
    try {
      const cases = casesFor(world).filter((c) => c.size < 1000);
      expect(cases.length).toBeGreaterThan(0);
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        const inputs = rings.map((_, r) => inputFor(c, i, r));
        const outs = await Promise.all(
          rings.map(async (ring, r) => {
            const a = inputs[r]!.slice();
            if (c.op === 'allreduce') return (await ring.allReduce(a, c.reduce), a);
            if (c.op === 'allgather') return ring.allGather(a);
            if (c.op === 'reducescatter') return ring.reduceScatter(a, c.reduce as 'sum' | 'mean');
            if (c.op === 'broadcast') return (await ring.broadcast(a, c.root!), a);
            return (await ring.barrier(), null);
          }),
        );
        outs.forEach((out, r) => {
          const want = expectedFor(c, inputs, r);
          expect(out ? sha256(out) : null, `${c.name} rank ${r}`).toBe(want ? sha256(want) : null);
        });
      }
      expect(SIZES).toContain(7);
    } finally {
      await Promise.all(rings.map((r) => r.close()));
      bound.forEach((b) => b.inbox.close());
    }
  });

  it('counts the bytes it moves: what one rank sent its neighbour received, payload plus small headers', async () => {
    const world = 3;
    const bound = await Promise.all(Array.from({ length: world }, () => bindInbox()));
    const peers = bound.map((b) => b.address);
    const rings = await Promise.all(bound.map((b, rank) => Ring.connect({ job: 'j', rank, world, peers, inbox: b.inbox, timeoutMs: 5000 })));
    try {
      const before = rings.map((r) => r.bytesSent);
      const n = 3 * 300_000; // three blocks of 300,000 floats
      await Promise.all(rings.map((r) => r.allReduce(new Float32Array(n).fill(1), 'sum')));
      // a ring all-reduce sends 2(n−1) blocks per rank: 4 × 300,000 floats here
      const payload = 4 * 300_000 * 4;
      for (const [r, ring] of rings.entries()) {
        const sent = ring.bytesSent - before[r]!;
        expect(sent).toBeGreaterThan(payload);
        expect(sent).toBeLessThan(payload + 64 * 1024); // headers: well under 1 KiB per message
        // rank r sends only to rank r+1, which receives only from r
        expect(rings[(r + 1) % world]!.bytesReceived).toBe(ring.bytesSent);
      }
    } finally {
      await Promise.all(rings.map((r) => r.close()));
      bound.forEach((b) => b.inbox.close());
    }
  });
});
