/**
 * Collectives benchmark: `workers` child processes on 127.0.0.1 form a ring and
 * time p2p, all-reduce, all-gather and reduce-scatter of `floats` float32
 * values. One JSON line per op on stdout:
 *   {op, workers, floats, seconds, algbw_GBps, busbw_GBps}
 * `seconds` is the median over `reps` timed runs (after one warm-up) of the
 * slowest rank's time, each run starting after a barrier. GB = 1e9 bytes.
 *
 * - p2p: rank 0 streams the F floats to rank 1 in the chunks the ring would
 *   use (ring message format, decoded on receipt) and rank 1 echoes every chunk back as it
 *   arrives, so both directions of the link carry F·4 bytes at once, as every
 *   link of the ring does during a collective. algbw = busbw = F·4 / seconds:
 *   the rate one link moves payload each way — the transport's ceiling.
 * - allreduce: every rank reduces F floats. algbw = F·4 / seconds,
 *   busbw = algbw · 2(n−1)/n (the bytes each rank must send and receive).
 * - allreduce_zerocopy (shm only): the same, on the transfer buffer
 *   (Collectives.transferBuffer) the caller filled instead of its own array, as
 *   training passes its gradient buckets; the fill is not timed.
 * - allgather: each rank contributes F/n floats, the result is the full F.
 *   algbw = F·4 / seconds, busbw = algbw · (n−1)/n.
 * - reducescatter: every rank passes F floats and gets back F/n.
 *   algbw = F·4 / seconds, busbw = algbw · (n−1)/n.
 *
 * `transport`: tcp (the ZeroMQ ring), shm (the same-host shared-memory
 * collectives, src/collectives/shm-collectives.ts; p2p is a ring measurement and
 * is skipped) or both (default), one set of lines each, marked `transport`.
 * With `gloo` (default on when /usr/bin/python3 has torch) PyTorch's gloo
 * backend is timed the same way on the same machine first
 * (bench/gloo_collectives.py), and the all-reduce and all-gather lines carry
 * its bus bandwidth and the ratio: `gloo_busbw_GBps`, `vs_gloo`.
 *
 * Rendezvous without a coordinator: each child binds its inboxes on ports the
 * OS picks and reports the addresses to the parent over IPC; the parent sends
 * every child the full peer list. The child entry is this same module with
 * `--child` (run through tsx when this file is TypeScript, plain node when compiled).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bindInbox, Ring, DEFAULT_CHUNK_BYTES, DEFAULT_SCAVENGE_BYTES, MIN_CHUNK_BYTES } from '../src/collectives/ring.js';
import { chunksOf } from '../src/collectives/split.js';
import { Scavenger } from '../src/collectives/scavenge.js';
import { openCollectives } from '../src/collectives/transport.js';
import type { Collectives } from '../src/collectives/collectives.js';
import { decode, encode } from '../src/protocol/codec.js';
import { dataLink, PLAIN_TRANSPORT, type DataInbox } from '../src/protocol/sockets.js';

export interface BenchCollectivesOptions {
  workers: number;
  floats: number;
  reps?: number;
  /** Bytes per ring message (default: the ring's default). */
  chunkBytes?: number;
  /** Chunks in flight per link (default: the ring's default). */
  inFlight?: number;
  /** Which transports to time; default both. */
  transport?: 'tcp' | 'shm' | 'both';
  /** Time PyTorch gloo too; default: when /usr/bin/python3 imports torch. */
  gloo?: boolean;
}

export interface CollectivesLine {
  op: Op;
  transport: 'tcp' | 'shm';
  workers: number;
  floats: number;
  seconds: number;
  algbw_GBps: number;
  busbw_GBps: number;
  /** gloo's bus bandwidth for the same op, size and workers, and this line's ratio to it (allreduce, allgather). */
  gloo_busbw_GBps?: number;
  vs_gloo?: number;
}

const OPS = ['p2p', 'allreduce', 'allreduce_zerocopy', 'allgather', 'reducescatter'] as const;
type Op = (typeof OPS)[number];

interface Hello {
  kind: 'address';
  ring: string;
  p2p: string;
}
interface Start {
  rank: number;
  world: number;
  ring: string[];
  p2p: string[];
  floats: number;
  reps: number;
  chunkBytes?: number;
  inFlight?: number;
  transports: Via[];
}
type Via = 'tcp' | 'shm';
interface Timings {
  kind: 'timings';
  seconds: Record<Via, Record<Op, number[]>>;
}

const THIS_FILE = fileURLToPath(import.meta.url);

/** Runs the benchmark and prints one JSON line per op; returns the lines too. */
export async function benchCollectives(opts: BenchCollectivesOptions): Promise<CollectivesLine[]> {
  const { workers, floats } = opts;
  const reps = opts.reps ?? 5;
  if (!Number.isInteger(workers) || workers < 1) throw new Error(`--workers must be an integer >= 1, got ${workers}`);
  if (!Number.isInteger(floats) || floats < 1) throw new Error(`--floats must be an integer >= 1, got ${floats}`);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be an integer >= 1, got ${reps}`);
  const transports: Via[] = opts.transport === 'tcp' ? ['tcp'] : opts.transport === 'shm' ? ['shm'] : ['tcp', 'shm'];
  const gloo = (opts.gloo ?? glooAvailable()) && workers > 1 ? runGloo(workers, floats, reps) : null;
  const loader = THIS_FILE.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const children: ChildProcess[] = [];
  const hellos: Hello[] = [];
  const timings: Timings[] = [];
  try {
    await Promise.all(
      Array.from({ length: workers }, (_, rank) => {
        const child = spawn(process.execPath, [...loader, THIS_FILE, '--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        children.push(child);
        return new Promise<void>((done, fail) => {
          child.once('error', fail);
          child.once('exit', (code, signal) => fail(new Error(`bench worker ${rank} exited (${signal ?? code}) before reporting its timings`)));
          child.on('message', (m: Hello | Timings) => {
            if (m.kind === 'address') {
              hellos[rank] = m;
              if (hellos.filter(Boolean).length === workers) {
                const ring = hellos.map((h) => h.ring);
                const p2p = hellos.map((h) => h.p2p);
                children.forEach((c, r) => c.send({ rank: r, world: workers, ring, p2p, floats, reps, chunkBytes: opts.chunkBytes, inFlight: opts.inFlight, transports } satisfies Start));
              }
            } else {
              timings[rank] = m;
              done();
            }
          });
        });
      }),
    );
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
  }
  const lines: CollectivesLine[] = [];
  const n = workers;
  const factorOf = (op: Op) => (op === 'allreduce' || op === 'allreduce_zerocopy' ? (2 * (n - 1)) / n : op === 'p2p' ? 1 : (n - 1) / n);
  const payloadOf = (op: Op) => (op === 'allgather' ? Math.floor(floats / n) * n : floats) * 4;
  const glooBus: Partial<Record<Op, number>> = gloo
    ? { allreduce: (payloadOf('allreduce') / gloo.allreduce_s / 1e9) * factorOf('allreduce'), allgather: (payloadOf('allgather') / gloo.allgather_s / 1e9) * factorOf('allgather') }
    : {};
  for (const via of transports) {
    for (const op of OPS) {
      if (skipped(op, via, n)) continue;
      // Per run, the slowest rank; then the median over runs.
      const perRun = Array.from({ length: reps }, (_, i) => Math.max(...timings.map((t) => t.seconds[via][op][i]!)));
      const seconds = median(perRun);
      const algbw = payloadOf(op) / seconds / 1e9;
      const busbw = algbw * factorOf(op);
      const line: CollectivesLine = { op, transport: via, workers: n, floats, seconds: round(seconds, 6), algbw_GBps: round(algbw, 3), busbw_GBps: round(busbw, 3) };
      const g = glooBus[op === 'allreduce_zerocopy' ? 'allreduce' : op];
      if (g !== undefined) Object.assign(line, { gloo_busbw_GBps: round(g, 3), vs_gloo: round(busbw / g, 2) });
      console.log(JSON.stringify(line));
      lines.push(line);
    }
  }
  return lines;
}

const PYTHON = '/usr/bin/python3';
const GLOO_SCRIPT = resolve(dirname(THIS_FILE), THIS_FILE.endsWith('.ts') ? '.' : '../../bench', 'gloo_collectives.py');

function glooAvailable(): boolean {
  return existsSync(PYTHON) && existsSync(GLOO_SCRIPT) && spawnSync(PYTHON, ['-c', 'import torch.distributed'], { stdio: 'ignore' }).status === 0;
}

/** gloo's median seconds for all-reduce and all-gather (bench/gloo_collectives.py). */
function runGloo(workers: number, floats: number, reps: number): { allreduce_s: number; allgather_s: number } {
  const r = spawnSync(PYTHON, [GLOO_SCRIPT, String(workers), String(floats), String(reps)], { encoding: 'utf8', timeout: 600_000 });
  const line = r.stdout?.split('\n').find((l) => l.startsWith('{'));
  if (r.status !== 0 || !line) throw new Error(`gloo benchmark failed (${r.status ?? r.signal}): ${(r.stderr ?? '').trim().split('\n').pop() ?? ''}`);
  return JSON.parse(line) as { allreduce_s: number; allgather_s: number };
}

/** p2p is a ring measurement (tcp only, two ranks or more); the zero-copy all-reduce exists on shm only. */
function skipped(op: Op, via: Via, workers: number): boolean {
  return (op === 'p2p' && (workers < 2 || via === 'shm')) || (op === 'allreduce_zerocopy' && via === 'tcp');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

// ------------------------------------------------------------------ child side

async function child(): Promise<void> {
  const ringInbox = await bindInbox();
  const p2pInbox = await bindInbox();
  process.send!({ kind: 'address', ring: ringInbox.address, p2p: p2pInbox.address } satisfies Hello);
  const start = await new Promise<Start>((done) => process.once('message', (m) => done(m as Start)));
  const { rank, world, floats, reps } = start;
  const ring = await Ring.connect({
    job: 'bench',
    rank,
    world,
    peers: start.ring,
    inbox: ringInbox.inbox,
    chunkBytes: start.chunkBytes,
    inFlight: start.inFlight,
  });
  const seconds = Object.fromEntries((['tcp', 'shm'] as const).map((via) => [via, Object.fromEntries(OPS.map((op) => [op, [] as number[]]))])) as Record<Via, Record<Op, number[]>>;
  const data = new Float32Array(floats);
  for (let i = 0; i < floats; i++) data[i] = ((i * 7 + rank) % 1000) / 1000;
  const part = data.subarray(0, Math.floor(floats / world));
  const p2pLink = world >= 2 && rank < 2 ? dataLink(PLAIN_TRANSPORT, undefined) : null;
  p2pLink?.connect(start.p2p[1 - rank]!);
  const chunkBytes = start.chunkBytes ?? DEFAULT_CHUNK_BYTES;

  for (const via of start.transports) {
    let coll: Collectives | null = null;
    if (via === 'shm')
      coll = await openCollectives({
        ring,
        job: 'bench',
        rank,
        world,
        hosts: Array.from({ length: world }, () => 'this-host'),
        choice: 'shm',
        slotBytes: floats * 4,
        timeoutMs: 60_000,
        pieceBytes: process.env.PB ? Number(process.env.PB) : undefined,
      });
    // The zero-copy all-reduce: the caller fills the transfer buffer (untimed: it writes its data somewhere in any case, as
    // src/worker/grad-buckets.ts does) and all-reduces the buffer itself.
    let buffer: Float32Array | null = null;
    const prepare = async (op: Op) => {
      if (op !== 'allreduce_zerocopy' || !coll) return;
      buffer = await coll.transferBuffer(floats);
      if (!buffer) throw new Error(`no transfer buffer of ${floats} floats`);
      buffer.set(data);
    };
    const runs: Record<Op, () => Promise<unknown>> = coll
      ? {
          p2p: () => Promise.resolve(),
          allreduce: () => coll.allReduce(data, 'sum'),
          allreduce_zerocopy: () => coll.allReduce(buffer!, 'sum'),
          allgather: () => coll.allGather(part),
          reducescatter: () => coll.reduceScatter(data, 'sum'),
        }
      : {
          p2p: () => p2p(rank, data, chunkBytes, p2pInbox.inbox, p2pLink),
          allreduce: () => ring.allReduce(data, 'sum'),
          allreduce_zerocopy: () => Promise.resolve(),
          allgather: () => ring.allGather(part),
          reducescatter: () => ring.reduceScatter(data, 'sum'),
        };
    for (const op of OPS) {
      if (skipped(op, via, world)) continue;
      for (let i = -1; i < reps; i++) {
        await prepare(op);
        await ring.barrier();
        const t0 = process.hrtime.bigint();
        await runs[op]();
        const dt = Number(process.hrtime.bigint() - t0) / 1e9;
        if (i >= 0) seconds[via][op].push(dt);
      }
    }
    await coll?.close();
  }
  await ring.barrier();
  process.send!({ kind: 'timings', seconds } satisfies Timings, () => {
    p2pLink?.close();
    void ring.close().then(() => {
      ringInbox.inbox.close();
      p2pInbox.inbox.close();
      process.disconnect();
    });
  });
}

/** Rank 0 streams `data` to rank 1, which echoes every chunk back as it arrives; other ranks idle. */
async function p2p(rank: number, data: Float32Array, chunkBytes: number, inbox: DataInbox, link: ReturnType<typeof dataLink> | null): Promise<void> {
  if (rank > 1 || !link) return;
  const pieces = chunksOf(0, data.length, Math.max(1, Math.floor(chunkBytes / 4)), MIN_CHUNK_BYTES / 4);
  const env = { job: 'bench', step: 0, rank };
  let sending: Promise<void> = Promise.resolve();
  const post = (frames: Uint8Array[]) => {
    sending = sending.then(() => link.send(frames));
  };
  const body = (k: number) => ({ op: 'p2p', seq: 0, chunk: k, slot: data.length });
  const scavenger = new Scavenger(DEFAULT_SCAVENGE_BYTES); // as the ring does, so GC costs the same
  if (rank === 0) pieces.forEach((p, k) => post(encode('ring', env, body(k), [{ name: 'data', data: data.subarray(p.offset, p.offset + p.length) }])));
  for (let k = 0; k < pieces.length; k++) {
    const [, ...frames] = await inbox.receive(); // the inbox is a ROUTER: frame 0 is the sender's routing id
    const res = decode(frames, { job: 'bench' });
    if (!res.ok) throw res.error;
    scavenger.received(res.msg.tensors['data']!.byteLength);
    if (rank === 1) post(encode('ring', env, body(k), [{ name: 'data', data: res.msg.tensors['data']! }]));
  }
  await sending;
}

function isMain(): boolean {
  return process.argv[1] !== undefined && resolve(process.argv[1]) === THIS_FILE;
}

if (isMain()) {
  if (process.argv.includes('--child')) {
    child().catch((e: Error) => {
      console.error(`bench worker: ${e.stack ?? e.message}`);
      process.exit(1);
    });
  } else {
    // Direct use: tsx bench/collectives.ts --workers N --floats F [--reps R] [--chunk-bytes B] [--in-flight D] [--transport tcp|shm|both]
    const arg = (name: string) => {
      const i = process.argv.indexOf(`--${name}`);
      return i > 0 ? Number(process.argv[i + 1]) : undefined;
    };
    const t = process.argv[process.argv.indexOf('--transport') + 1];
    const transport = process.argv.includes('--transport') && (t === 'tcp' || t === 'shm' || t === 'both') ? t : undefined;
    benchCollectives({ workers: arg('workers') ?? 2, floats: arg('floats') ?? 1_000_000, reps: arg('reps'), chunkBytes: arg('chunk-bytes'), inFlight: arg('in-flight'), transport }).catch(
      (e: Error) => {
        console.error(e.message);
        process.exit(1);
      },
    );
  }
}
