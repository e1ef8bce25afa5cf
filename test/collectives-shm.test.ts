/**
 * Shared-memory collectives across real worker processes on one host: every op
 * equals the TCP ring's serial result bit for bit (same summation order) on
 * every rank; arrays larger than a slot agree across ranks and with a float64
 * sum; a SIGKILLed peer fails the others within the timeout naming its rank and
 * leaves nothing in /dev/shm; a stale segment of a dead run is removed; forced
 * tcp, no room in /dev/shm and unsuitable host layouts fall back (or fail when
 * shm is forced).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { hostLayout } from '../src/collectives/transport.js';
import { casesFor, expectedFor, inputFor, sha256 } from './fixtures/collective-cases.js';
import type { ShmResult, ShmStart } from './fixtures/shm-worker.js';

const WORKER = fileURLToPath(new URL('./fixtures/shm-worker.ts', import.meta.url));
type Report = { results: ShmResult[]; choice: { transport: string; reason: string; removed: string[] } | null; setupError: string | null };

let jobs = 0;
function jobId(): string {
  return `shmtest${process.pid}x${jobs++}`;
}

function segmentsOf(job: string): string[] {
  return readdirSync('/dev/shm').filter((f) => f.startsWith(`shardface-${job}-`));
}

async function runWorkers(world: number, start: Omit<ShmStart, 'rank' | 'world' | 'peers'>, dying: number[] = []): Promise<Report[]> {
  const children: ChildProcess[] = [];
  const addresses: string[] = [];
  const reports: Report[] = [];
  try {
    await Promise.all(
      Array.from({ length: world }, (_, rank) => {
        const child = spawn(process.execPath, ['--import', 'tsx', WORKER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        children.push(child);
        return new Promise<void>((resolve, reject) => {
          child.once('error', reject);
          child.once('exit', (code, signal) => (dying.includes(rank) ? resolve() : reject(new Error(`worker ${rank} exited with ${signal ?? code} before reporting`))));
          child.on('message', (m: { kind: string; address?: string } & Report) => {
            if (m.kind === 'address') {
              addresses[rank] = m.address!;
              if (addresses.filter(Boolean).length === world) children.forEach((c, r) => c.send({ ...start, rank: r, world, peers: addresses } satisfies ShmStart));
            } else if (m.kind === 'results') {
              reports[rank] = { results: m.results, choice: m.choice, setupError: m.setupError };
              resolve();
            }
          });
        });
      }),
    );
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
  }
  return reports;
}

const MiB = 1 << 20;

describe('shared-memory collectives across processes', () => {
  for (const world of [2, 3]) {
    it(`n = ${world}: all-reduce, all-gather and reduce-scatter equal the TCP ring's result bit for bit on every rank`, async () => {
      const job = jobId();
      // Pieces of 256 KiB: the 1e6-element all-reduces run in 16 pieces in place (the float sums from the zero-copy slot).
      const reports = await runWorkers(world, { job, choice: 'shm', slotBytes: 8 * MiB, pieceBytes: 256 << 10, timeoutMs: 10_000, mode: 'cases' });
      const cases = casesFor(world).filter((c) => c.op !== 'broadcast' && c.op !== 'barrier');
      for (const r of reports) {
        expect(r.setupError).toBeNull();
        expect(r.choice?.transport).toBe('shm');
        expect(r.results.length).toBe(cases.length);
      }
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        const inputs = Array.from({ length: world }, (_, r) => inputFor(c, i, r));
        for (let r = 0; r < world; r++) {
          const got = reports[r]!.results[i]!;
          expect(got.error, `${c.name} on rank ${r}`).toBeUndefined();
          expect(got.sha, `${c.name} on rank ${r}`).toBe(sha256(expectedFor(c, inputs, r)!));
        }
      }
      // The name was unlinked as soon as every rank had mapped it.
      expect(segmentsOf(job)).toEqual([]);
    });
  }

  it("n = 3, arrays larger than a slot go in pieces: still the ring's result bit for bit, and a float64 sum within tolerance", async () => {
    const job = jobId();
    const world = 3;
    // 1e6 floats through slots of 256 KiB: 16 pieces, each taking a chunk of every (uneven) slice; pieces of 64 KiB for the sizes that fit.
    const reports = await runWorkers(world, { job, choice: 'shm', slotBytes: 256 << 10, pieceBytes: 64 << 10, timeoutMs: 10_000, mode: 'cases', sizes: [1_000_000, 7] });
    const cases = casesFor(world).filter((c) => c.op !== 'broadcast' && c.op !== 'barrier' && (c.size === 1_000_000 || c.size === 7));
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const inputs = Array.from({ length: world }, (_, r) => inputFor(c, i, r));
      for (let r = 0; r < world; r++) {
        const got = reports[r]!.results[i];
        expect(got?.error, `${c.name} on rank ${r}`).toBeUndefined();
        expect(got!.sha, `${c.name} on rank ${r}`).toBe(sha256(expectedFor(c, inputs, r)!));
      }
      if (c.op === 'allreduce' && c.reduce === 'sum' && c.dtype === 'float32' && c.size === 7) {
        const got = reports[0]!.results[i]!.sum!;
        for (let k = 0; k < c.size; k++)
          expect(got[k]).toBeCloseTo(
            (inputs as Float32Array[]).reduce((s, x) => s + x[k]!, 0),
            5,
          );
      }
    }
    // The serial reference itself is a float32 sum: within float tolerance of float64.
    const idx = cases.findIndex((c) => c.op === 'allreduce' && c.reduce === 'sum' && c.dtype === 'float32' && c.size === 1_000_000);
    const inputs = Array.from({ length: world }, (_, r) => inputFor(cases[idx]!, idx, r) as Float32Array);
    const want = expectedFor(cases[idx]!, inputs, 0)!;
    let worst = 0;
    for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(want[k]! - inputs.reduce((s, x) => s + x[k]!, 0)));
    expect(worst).toBeLessThan(1e-3);
    expect(segmentsOf(job)).toEqual([]);
  });

  it('2 hosts × 2 workers, hierarchical: shm within each host, the cross-host ring between them; every rank agrees bit for bit with the documented order', async () => {
    const job = jobId();
    const world = 4;
    const hosts = ['host-a', 'host-a', 'host-b', 'host-b'];
    const reports = await runWorkers(world, { job, choice: 'shm', slotBytes: 8 * MiB, timeoutMs: 10_000, mode: 'cases', hosts, cross: true, sizes: [0, 1, 7, 1_000_000] });
    const cases = casesFor(world).filter((c) => c.op !== 'broadcast' && c.op !== 'barrier');
    for (const r of reports) {
      expect(r.setupError).toBeNull();
      expect(r.choice?.transport).toBe('shm');
      expect(r.choice?.reason).toMatch(/hierarchical over 2 hosts/);
    }
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const inputs = Array.from({ length: world }, (_, r) => inputFor(c, i, r));
      // Float sums and means add in the hierarchical order; max, integer sums (which wrap) and the gathers equal the ring's.
      const hierarchical = c.op === 'allreduce' && c.dtype === 'float32' && c.reduce !== 'max';
      for (let r = 0; r < world; r++) {
        const got = reports[r]!.results[i];
        expect(got?.error, `${c.name} on rank ${r}`).toBeUndefined();
        const want = hierarchical ? hierarchicalSum(inputs as Float32Array[], 2, c.reduce === 'mean') : expectedFor(c, inputs, r)!;
        expect(got!.sha, `${c.name} on rank ${r}`).toBe(sha256(want));
      }
    }
    expect(segmentsOf(job)).toEqual([]);
  });

  it('a peer SIGKILLed mid-job fails the others within the timeout, naming its rank; nothing is left in /dev/shm', async () => {
    const job = jobId();
    const world = 3;
    const reports = await runWorkers(world, { job, choice: 'shm', slotBytes: MiB, timeoutMs: 5_000, mode: 'kill' }, [world - 1]);
    for (let r = 0; r < world - 1; r++) {
      const res = reports[r]!.results[0]!;
      expect(res.error, `rank ${r}`).toMatch(/rank 2 \(pid \d+, same host\) died|rank \d \(same host\) aborted/);
      expect(res.ms!).toBeLessThan(5_000);
    }
    expect(reports.slice(0, world - 1).some((r) => /rank 2 \(pid \d+, same host\) died/.test(r.results[0]!.error!))).toBe(true);
    expect(segmentsOf(job)).toEqual([]);
  });

  it('forced tcp, and no room in /dev/shm, fall back to the ring with the reason; forced shm without room fails on every rank', async () => {
    const tcp = await runWorkers(2, { job: jobId(), choice: 'tcp', slotBytes: MiB, timeoutMs: 5_000, mode: 'cases', sizes: [7] });
    for (const r of tcp) {
      expect(r.choice).toMatchObject({ transport: 'tcp', reason: 'collectiveTransport is tcp' });
      expect(r.results.every((x) => x.error === undefined)).toBe(true);
    }
    const huge = 2 ** 50; // more than any /dev/shm
    const job = jobId();
    const full = await runWorkers(2, { job, choice: 'auto', slotBytes: huge, timeoutMs: 5_000, mode: 'cases', sizes: [7] });
    expect(full[0]!.choice!.transport).toBe('tcp');
    expect(full[0]!.choice!.reason).toMatch(/\/dev\/shm has [\d.]+ MiB free, the segment needs/);
    expect(full[1]!.choice!.transport).toBe('tcp');
    expect(full[1]!.choice!.reason).toMatch(/rank 0.*could not create the segment/);
    const forced = await runWorkers(2, { job, choice: 'shm', slotBytes: huge, timeoutMs: 5_000, mode: 'cases', sizes: [7] });
    for (const r of forced) expect(r.setupError).toMatch(/^collectiveTransport is shm, but rank \d: /);
    expect(segmentsOf(job)).toEqual([]);
  });

  it('a stale segment of a dead run is removed, not reused', async () => {
    const job = jobId();
    // A process creates a segment the way local rank 0 does and dies before unlinking it.
    const stale = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        `import('${fileURLToPath(new URL('../src/collectives/shm-segment.ts', import.meta.url))}').then((m) => { m.ShmSegment.create('${job}', m.newNonce(), 2, 4096); process.kill(process.pid, 'SIGKILL'); })`,
      ],
      { stdio: 'inherit' },
    );
    await new Promise((r) => stale.once('exit', r));
    const left = segmentsOf(job);
    expect(left.length).toBe(1);
    const reports = await runWorkers(2, { job, choice: 'shm', slotBytes: MiB, timeoutMs: 5_000, mode: 'cases', sizes: [7] });
    expect(reports[0]!.choice!.transport).toBe('shm');
    // every run clears dead runs' segments, so another shm job on this machine (a parallel test file) may clear it first
    const ours = reports[0]!.choice!.removed.filter((n) => n.includes(job));
    if (ours.length > 0) expect(ours).toEqual([`/${left[0]}`]);
    else expect(existsSync(`/dev/shm/${left[0]}`), 'the stale segment was neither removed by this run nor gone').toBe(false);
    expect(reports.every((r) => r.results.length > 0 && r.results.every((x) => x.error === undefined))).toBe(true);
    expect(segmentsOf(job)).toEqual([]);
  });
});

describe('host layout', () => {
  it('needs equal, consecutive groups of two or more workers per host', () => {
    expect(hostLayout(['a', 'a', 'b', 'b'], 3)).toEqual({ local: 2, hosts: 2, localRank: 1, hostIndex: 1 });
    expect(hostLayout(['a', 'a', 'a'], 0)).toEqual({ local: 3, hosts: 1, localRank: 0, hostIndex: 0 });
    expect(hostLayout(['a', 'b', 'a'], 0)).toEqual({ why: 'the ranks of host a are not consecutive' });
    expect(hostLayout(['a', 'a', 'a', 'b'], 0)).toEqual({ why: 'hosts hold different numbers of workers (3, 1)' });
    expect(hostLayout(['a', 'b'], 0)).toEqual({ why: 'no two workers share a host' });
    expect(hostLayout(['a'], 0)).toEqual({ why: 'a single worker' });
  });
});

/**
 * The hierarchical all-reduce's order for arrays that fit one piece: slice l of
 * splitCounts(n, L) is summed over the host's ranks from local rank l+1 round to
 * l; the cross-host ring then splits the slice into H blocks and sums block b
 * from host b+1 round to b; a mean divides once by the world size.
 */
function hierarchicalSum(inputs: Float32Array[], hostCount: number, mean: boolean): Float32Array {
  const world = inputs.length;
  const L = world / hostCount;
  const n = inputs[0]!.length;
  const out = new Float32Array(n);
  const split = (m: number, k: number) => Array.from({ length: k }, (_, j) => Math.floor(m / k) + (j < m % k ? 1 : 0));
  let sliceStart = 0;
  split(n, L).forEach((sliceLen, l) => {
    let blockStart = 0;
    split(sliceLen, hostCount).forEach((blockLen, b) => {
      for (let q = blockStart; q < blockStart + blockLen; q++) {
        const i = sliceStart + q;
        const hostSum = (h: number) => {
          let acc = inputs[h * L + ((l + 1) % L)]![i]!;
          for (let k = 2; k <= L; k++) acc = Math.fround(acc + inputs[h * L + ((l + k) % L)]![i]!);
          return acc;
        };
        let acc = hostSum((b + 1) % hostCount);
        for (let k = 2; k <= hostCount; k++) acc = Math.fround(acc + hostSum((b + k) % hostCount));
        out[i] = mean ? Math.fround(acc / world) : acc;
      }
      blockStart += blockLen;
    });
    sliceStart += sliceLen;
  });
  return out;
}
