/**
 * DCQ, the Dynamic Class Queue (docs/methods.md#dynamic-class-queue): the test vector of docs/methods.md#dcq-test-vector, the sharded queue
 * softmax against a float64 reference and finite differences, the enqueue,
 * the EMA, the reference-image draw, and real multi-process runs (the queue
 * assembled from n = 1, 2, 3 workers' checkpoints is the same; a 2-worker run
 * lowers the loss and verifies with the key encoder).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tf } from '../src/ops/tf.js';
import { Rng } from '../src/common/random.js';
import { reduceSoftmaxStats, type SoftmaxStats } from '../src/ops/softmax-shard.js';
import { MAX_ROW_LOSS } from '../src/ops/softmax-reduce.js';
import { dcqLogits, momentumUpdate } from '../src/ops/dcq.js';
import { ShardedClassQueue, type QueueState } from '../src/worker/sharded-class-queue.js';
import type { ShardComm } from '../src/worker/sharded-classifier.js';
import { classRange } from '../src/ops/class-range.js';
import { IdentityIndex, ReferenceSampler, referenceIndex } from '../src/data/reference.js';
import { DistributedSampler } from '../src/data/sampler.js';
import { openTrainingData } from '../src/data/open.js';
import { readManifest, stepDir } from '../src/checkpoint/checkpoint.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';
import { loadBackboneFromCheckpoint } from '../src/eval/load-backbone.js';
import { DCQ_QUERY_PREFIX } from '../src/worker/dcq-training.js';
import { registerNativeKernels } from '../src/ops/native/register.js';
import { startCli } from './helpers/processes.js';
import { maxRelDiff } from './helpers/compare.js';

/** The in-process checks run on the stock CPU kernels and on cpu-native (native matmul, scatter, exp…). */
const BACKENDS = ['cpu', 'cpu-native'] as const;

beforeAll(async () => {
  const r = registerNativeKernels({ threads: 2 });
  if (!r.ok) throw new Error(`native kernels must load: ${r.reason}`);
  await tf.setBackend('cpu');
});

async function on<T>(backend: (typeof BACKENDS)[number], f: () => Promise<T>): Promise<T> {
  await tf.setBackend(backend);
  if (tf.getBackend() !== backend) throw new Error(`could not switch to ${backend}`);
  try {
    return await f();
  } finally {
    await tf.setBackend('cpu');
  }
}

// ---------------------------------------------------------------- helpers

/** In-process collectives for `world` ranks: each operation waits for every rank, like the ring and the coordinator. */
function localComms(world: number): ShardComm[] {
  const rounds = new Map<number, { values: unknown[]; arrived: number; waiters: ((v: unknown[]) => void)[] }>();
  const calls = new Array<number>(world).fill(0);
  const meet = (rank: number, value: unknown): Promise<unknown[]> => {
    const id = calls[rank]!++;
    let r = rounds.get(id);
    if (!r) rounds.set(id, (r = { values: new Array(world), arrived: 0, waiters: [] }));
    r.values[rank] = value;
    r.arrived++;
    const round = r;
    const p = new Promise<unknown[]>((resolve) => round.waiters.push(resolve));
    if (round.arrived === world) round.waiters.forEach((f) => f(round.values));
    return p;
  };
  const concat = <T extends Float32Array | Int32Array>(parts: T[], make: (n: number) => T): T => {
    const out = make(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  return Array.from({ length: world }, (_, rank) => ({
    allGatherFloat: async (a) => concat((await meet(rank, a)) as Float32Array[], (n) => new Float32Array(n)),
    allGatherInt: async (a) => concat((await meet(rank, a)) as Int32Array[], (n) => new Int32Array(n)),
    exchangeSoftmax: async (_step, _batch, stats) => {
      const r = reduceSoftmaxStats((await meet(rank, stats)) as SoftmaxStats[]);
      return { logSumExp: r.logSumExp, loss: r.loss };
    },
    reduceScatter: async (a) => {
      const parts = (await meet(rank, a)) as Float32Array[];
      const n = a.length / world;
      const out = new Float32Array(n);
      for (const p of parts) for (let i = 0; i < n; i++) out[i] += p[rank * n + i]!;
      return out;
    },
  }));
}

const unit = (v: number[]): number[] => {
  const n = Math.max(Math.hypot(...v), 1e-12);
  return v.map((x) => x / n);
};

/** The whole queue (K×D slot-major) and labels split into each rank's block, as the workers hold it. */
function splitQueue(keys: number[][], labels: number[], world: number, ptr = 0): QueueState[] {
  return Array.from({ length: world }, (_, r) => {
    const { start, count } = classRange(keys.length, world, r);
    return { keys: Float32Array.from(keys.slice(start, start + count).flat()), labels: Int32Array.from(labels.slice(start, start + count)), ptr };
  });
}

/** One step of the sharded queue over `world` in-process workers; returns the loss, ∂L/∂q_raw (G×D) and the queues after the enqueue. */
async function runSharded(o: { q: number[][]; k: number[][]; y: number[]; queue: number[][]; queueLabels: number[]; world: number; s: number; m: number; chunk?: number }) {
  const d = o.q[0]!.length;
  const b = o.q.length / o.world;
  const comms = localComms(o.world);
  const states = splitQueue(o.queue, o.queueLabels, o.world);
  const workers = states.map((st, r) => new ShardedClassQueue(o.world, r, { dim: d, queueSize: o.queue.length, head: { s: o.s, m: o.m }, chunkRows: o.chunk ?? 256, seed: 1 }, st));
  const results = await Promise.all(
    workers.map((w, r) =>
      w.forwardBackward(1, Float32Array.from(o.q.slice(r * b, (r + 1) * b).flat()), Float32Array.from(o.k.slice(r * b, (r + 1) * b).flat()), Int32Array.from(o.y.slice(r * b, (r + 1) * b)), comms[r]!),
    ),
  );
  const grad = new Float32Array(o.q.length * d);
  results.forEach((res, r) => grad.set(res.gradEmbeddings, r * b * d));
  results.forEach((res) => res.enqueue());
  const keys: number[] = [];
  const labels: number[] = [];
  for (const w of workers) {
    keys.push(...w.state.keys);
    labels.push(...w.state.labels);
  }
  return { loss: results[0]!.loss, losses: results.map((r) => r.loss), grad, keys, labels, ptrs: workers.map((w) => w.state.ptr) };
}

/**
 * docs/methods.md#dcq-step in plain float64 JS: mean over rows of logsumexp([s(q̂·k − m), s q̂·Q_j (j unmasked)]) − s(q̂·k − m),
 * each row capped at `cap` (the reported loss caps at −ln 1e-30 as arcface_torch does; finite differences use no cap).
 */
function referenceLoss(q: number[][], k: number[][], y: number[], queue: number[][], queueLabels: number[], s: number, m: number, cap = Infinity): number {
  let total = 0;
  q.forEach((row, i) => {
    const qh = unit(row);
    const dot = (a: number[]) => a.reduce((acc, v, c) => acc + v * qh[c]!, 0);
    const z = [s * (dot(k[i]!) - m)];
    queue.forEach((col, j) => {
      if (queueLabels[j] !== y[i]) z.push(s * dot(col));
    });
    const mx = Math.max(...z);
    total += Math.min(mx + Math.log(z.reduce((a, v) => a + Math.exp(v - mx), 0)) - z[0]!, cap);
  });
  return total / q.length;
}

// ---------------------------------------------------------------- docs/methods.md#dcq-test-vector

describe('DCQ test vector (docs/methods.md#dcq-test-vector) (s = 50, m = 0.3, K = 4, D = 3, B = 2)', () => {
  const qRaw = [
    [1.0, 0.2, -0.3],
    [0.1, 0.9, 0.4],
  ];
  const k = [unit([0.9, 0.3, -0.2]), unit([0.2, 0.8, 0.1])];
  const qCols = [
    [0.5, -0.2, 0.9, 0.1],
    [0.1, 0.7, 0.2, -0.6],
    [0.8, 0.3, -0.1, 0.7],
  ];
  const queue = [0, 1, 2, 3].map((j) => unit(qCols.map((r) => r[j]!))); // slot-major
  const queueLabels = [3, 7, 5, 3];
  const y = [3, 5];
  const s = 50;
  const m = 0.3;

  it('gives the logits, with same-identity queue entries masked', () => {
    const queries = tf.tensor2d(qRaw);
    const keys = tf.tensor2d(queue);
    const z = dcqLogits({ queries, keys: Float32Array.from(k.flat()), labels: Int32Array.from(y), owned: Uint8Array.from([1, 1]) }, { keys, labels: Int32Array.from(queueLabels) }, { s, m });
    tf.dispose([queries, keys]);
    const M = -Infinity;
    const expected = [
      [0.68968508, M, -0.17920751, 0.98397324, M],
      [0.64854299, 0.48980537, 0.93651336, M, -0.27231888],
    ].flat();
    expected.forEach((e, i) => {
      if (e === M) expect(z[i]).toBe(-Infinity);
      else expect(z[i]).toBeCloseTo(e, 5);
    });
  });

  for (const [world, backend] of [1, 2].flatMap((w) => BACKENDS.map((b) => [w, b] as const))) {
    it(`gives the loss, dL/dq_raw and the enqueue result on ${world} worker(s), ${backend}`, async () => {
      const r = await on(backend, () => runSharded({ q: qRaw, k, y, queue, queueLabels, world, s, m }));
      expect(Math.abs(r.loss - 14.556463666704268) / 14.556463666704268).toBeLessThan(1e-4);
      expect(new Set(r.losses).size).toBe(1);
      const expected = [1.1192007, -2.17979465, 2.27747257, -12.46418407, -1.59476102, 6.70425831];
      expected.forEach((e, i) => expect(Math.abs(r.grad[i]! - e)).toBeLessThan(1e-4 * Math.abs(e) + 1e-4));
      // after enqueue (G = 2, ptr 0 → 2): slots 0, 1 hold k, Lq = [3, 5, 5, 3]
      expect(r.labels).toEqual([3, 5, 5, 3]);
      expect(r.ptrs).toEqual(new Array(world).fill(2));
      expect(maxRelDiff(r.keys, [...k.flat(), ...queue.slice(2).flat()])).toBeLessThan(1e-6);
    });
  }

  it('updates the key encoder by EMA: θ_k = 0.5, θ_q = 0.7 → 0.5002', () => {
    const key = tf.variable(tf.tensor1d([0.5, -1]));
    const query = tf.variable(tf.tensor1d([0.7, 1]));
    momentumUpdate([key], [query], 0.999);
    const v = key.dataSync();
    expect(v[0]).toBeCloseTo(0.5002, 6);
    expect(v[1]).toBeCloseTo(-0.998, 6);
    expect(Array.from(query.dataSync())).toEqual([Math.fround(0.7), 1]);
    tf.dispose([key, query]);
  });
});

// ---------------------------------------------------------------- gradient

describe('the sharded queue softmax', () => {
  const rng = new Rng(11);
  const g = 6;
  const d = 5;
  const kSize = 12;
  const q = Array.from({ length: g }, () => Array.from({ length: d }, () => rng.normal()));
  const k = Array.from({ length: g }, () => unit(Array.from({ length: d }, () => rng.normal())));
  const y = [0, 1, 2, 0, 3, 4];
  const queue = Array.from({ length: kSize }, () => unit(Array.from({ length: d }, () => rng.normal())));
  // identities 0 and 2 sit in the queue; rank 2's block (slots 8..11 of 3 workers) is all identity 0
  const queueLabels = [5, 0, 2, 6, 7, 8, 2, 9, 0, 0, 0, 0];
  const s = 50;
  const m = 0.3;

  it.each(BACKENDS)('matches a float64 reference and finite differences, on 1, 2 and 3 workers and in chunks (%s)', async (backend) => {
    const expectedLoss = referenceLoss(q, k, y, queue, queueLabels, s, m, MAX_ROW_LOSS);
    const h = 1e-6;
    const fd = new Float64Array(g * d);
    for (let i = 0; i < g; i++)
      for (let c = 0; c < d; c++) {
        const plus = q.map((r) => [...r]);
        const minus = q.map((r) => [...r]);
        plus[i]![c]! += h;
        minus[i]![c]! -= h;
        fd[i * d + c] = (referenceLoss(plus, k, y, queue, queueLabels, s, m) - referenceLoss(minus, k, y, queue, queueLabels, s, m)) / (2 * h);
      }
    for (const [world, chunk] of [
      [1, 256],
      [2, 256],
      [3, 256],
      [3, 4],
    ] as const) {
      const r = await on(backend, () => runSharded({ q, k, y, queue, queueLabels, world, s, m, chunk }));
      expect(Math.abs(r.loss - expectedLoss) / expectedLoss, `world ${world}`).toBeLessThan(1e-5);
      expect(maxRelDiff(r.grad, fd), `world ${world} chunk ${chunk}`).toBeLessThan(2e-4);
    }
  });

  it('with a larger s (> 87) takes the shifted path to the same answer', async () => {
    const big = 120;
    const expectedLoss = referenceLoss(q, k, y, queue, queueLabels, big, m, MAX_ROW_LOSS);
    const a = await runSharded({ q, k, y, queue, queueLabels, world: 2, s: big, m });
    expect(Math.abs(a.loss - expectedLoss) / expectedLoss).toBeLessThan(1e-5);
  });
});

// ---------------------------------------------------------------- reference images

describe('reference images', () => {
  const labels = Int32Array.from({ length: 60 }, (_, i) => ((i * 7) % 9 === 0 ? 8 : i % 8)); // identity 8 is rarer
  labels[59] = 9; // a single-image identity
  const ids = new IdentityIndex(labels);

  it('are drawn uniformly from the same identity, deterministically from (seed, epoch, index)', () => {
    const counts = new Map<number, number>();
    for (let e = 0; e < 4000; e++) {
      const r = referenceIndex(ids, 3, e, 5);
      expect(labels[r]).toBe(labels[5]);
      counts.set(r, (counts.get(r) ?? 0) + 1);
      expect(referenceIndex(ids, 3, e, 5)).toBe(r);
    }
    const images = ids.imagesOf(labels[5]!);
    expect(counts.size).toBe(images.length); // the query itself included
    for (const c of counts.values()) expect(Math.abs(c / 4000 - 1 / images.length)).toBeLessThan(0.04);
    expect(referenceIndex(ids, 3, 0, 59)).toBe(59);
  });

  it('do not depend on the batch layout: n workers × B read what 1 worker × n·B reads', () => {
    const one = new ReferenceSampler(new DistributedSampler({ size: 60, world: 1, rank: 0, batchPerWorker: 12, seed: 4 }), ids);
    for (const world of [2, 3]) {
      const parts = Array.from({ length: world }, (_, r) => new ReferenceSampler(new DistributedSampler({ size: 60, world, rank: r, batchPerWorker: 12 / world, seed: 4 }), ids));
      for (const [epoch, b] of [
        [0, 0],
        [1, 3],
      ] as const)
        expect(Array.from(parts.flatMap((p) => Array.from(p.batchIndices(epoch, b))))).toEqual(Array.from(one.batchIndices(epoch, b)));
    }
  });
});

// ---------------------------------------------------------------- real processes

const root = mkdtempSync(join(tmpdir(), 'shardface-dcq-'));

async function train(name: string, args: string[]): Promise<string> {
  const runDir = join(root, name);
  const p = startCli(['train', '--classifier', 'dcq', '--backbone', 'tiny', '--image-size', '16', '--warmup-steps', '0', '--run-dir', runDir, '--log-format', 'json', ...args]);
  const { code } = await p.exit;
  expect(code, p.lines.slice(-20).join('\n')).toBe(0);
  return runDir;
}

/** The whole queue, assembled from the checkpoint's shards in slot order. */
function assembledQueue(runDir: string, step: number) {
  const dir = stepDir(join(runDir, 'ckpt'), step);
  const m = readManifest(dir);
  const parts = m.shards.map((s) => readTensorFile(join(dir, s.file), s.sha256)).sort((a, b) => Number(a.metadata.slotStart) - Number(b.metadata.slotStart));
  const keys: number[] = [];
  const labels: number[] = [];
  for (const p of parts) {
    keys.push(...(p.tensors.keys!.data as Float32Array));
    labels.push(...(p.tensors.labels!.data as Int32Array));
  }
  return { keys, labels, ptrs: parts.map((p) => Number(p.metadata.ptr)), slots: parts.map((p) => [Number(p.metadata.slotStart), Number(p.metadata.slotCount)]), dir };
}

describe('DCQ training (real processes)', () => {
  // tiny without BatchNorm: n workers × B and 1 worker × n·B compute the same keys (to float rounding)
  const exact = [
    '--backbone-norm',
    'none',
    '--embedding-size',
    '16',
    '--held-out-identities',
    '0',
    '--data',
    'synthetic:24',
    '--images-per-identity',
    '8',
    '--steps',
    '5',
    '--lr',
    '0.2',
    '--seed',
    '5',
    '--dcq.queue-size',
    '24',
    '--dcq.momentum',
    '0.9',
  ];

  it('fills the same queue on 1, 2 and 3 workers, and it holds the global batches in FIFO order', async () => {
    const [one, two, three] = await Promise.all([
      train('one', ['--workers', '1', '--batch', '6', ...exact]),
      train('two', ['--workers', '2', '--batch', '3', ...exact]),
      train('three', ['--workers', '3', '--batch', '2', ...exact]),
    ]);
    const ref = assembledQueue(one, 5);
    // 5 steps × G = 6 into K = 24: slots 0..5 hold step 5's batch (wrapped), 6..23 steps 2..4
    const { train: data } = await openTrainingData({ data: 'synthetic:24', imageSize: 16, imagesPerIdentity: 8, heldOutIdentities: 0, seed: 5 });
    const sampler = new DistributedSampler({ size: data.size, world: 1, rank: 0, batchPerWorker: 6, seed: 5 });
    const expected = new Array<number>(24).fill(-1);
    for (let t = 0; t < 5; t++) sampler.globalBatchIndices(0, t).forEach((idx, i) => (expected[(t * 6 + i) % 24] = (data as { label(i: number): number }).label(idx)));
    expect(ref.labels).toEqual(expected);
    expect(ref.ptrs).toEqual([6]);
    for (const [run, world] of [
      [two, 2],
      [three, 3],
    ] as const) {
      const q = assembledQueue(run, 5);
      expect(q.slots).toEqual(Array.from({ length: world }, (_, r) => [classRange(24, world, r).start, classRange(24, world, r).count]));
      expect(q.labels).toEqual(ref.labels);
      expect(q.ptrs).toEqual(new Array(world).fill(6));
      expect(maxRelDiff(q.keys, ref.keys), `${world} workers`).toBeLessThan(1e-4);
    }
    // every queue key is a unit vector, and the checkpoint holds the key encoder (plain names) and the query encoder
    for (let j = 0; j < 24; j++) expect(Math.hypot(...ref.keys.slice(j * 16, j * 16 + 16))).toBeCloseTo(1, 5);
    const m = readManifest(ref.dir);
    const bb = readTensorFile(join(ref.dir, m.backbone.file), m.backbone.sha256);
    expect(bb.metadata.network).toBe('dcq-key-encoder');
    const names = Object.keys(bb.tensors).filter((n) => !n.startsWith(DCQ_QUERY_PREFIX));
    expect(names.length).toBeGreaterThan(0);
    for (const n of names) expect(bb.tensors[DCQ_QUERY_PREFIX + n], n).toBeDefined();
    const moved = names.some((n) => maxRelDiff(bb.tensors[n]!.data, bb.tensors[DCQ_QUERY_PREFIX + n]!.data) > 1e-4);
    expect(moved, 'the key encoder is an EMA, not a copy of the query encoder').toBe(true);
  });

  it('lowers the loss on 2 workers, exits 0 and verifies with the key encoder', async () => {
    const run = await train('loss', [
      '--workers',
      '2',
      '--batch',
      '16',
      '--embedding-size',
      '32',
      '--data',
      'synthetic:40',
      '--images-per-identity',
      '8',
      '--held-out-identities',
      '10',
      '--verification-pairs',
      '100',
      '--steps',
      '30',
      '--lr',
      '0.2',
      '--seed',
      '3',
      '--dcq.queue-size',
      '64',
      '--dcq.s',
      '20',
      '--dcq.momentum',
      '0.99',
    ]);
    const losses = readFileSync(join(run, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).loss as number);
    expect(losses).toHaveLength(30);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    // the queue is full of real keys from step 3 on (K = 2 global batches)
    expect(mean(losses.slice(-6))).toBeLessThan(0.85 * mean(losses.slice(2, 8)));
    const summary = JSON.parse(readFileSync(join(run, 'summary.json'), 'utf8'));
    expect(summary.ok).toBe(true);
    expect(summary.verification.pairs).toBeGreaterThan(0);
    // eval/embed/export load the plain names: the key encoder
    const { backbone, dir } = await loadBackboneFromCheckpoint(summary.checkpoint);
    const m = readManifest(dir);
    const bb = readTensorFile(join(dir, m.backbone.file), m.backbone.sha256);
    for (const [name, v] of backbone.state()) expect(Array.from(v.dataSync())).toEqual(Array.from(bb.tensors[name]!.data));
    backbone.dispose();
  });
});
