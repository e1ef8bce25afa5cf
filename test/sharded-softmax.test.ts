import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { Rng } from '../src/common/random.js';
import { classRange, localiseLabels } from '../src/ops/class-range.js';
import { sampleClasses } from '../src/ops/sampling.js';
import { MARGIN_PRESETS, resolveMargin, type MarginSpec, type MarginVariant } from '../src/ops/margin.js';
import { prepareWeight, reduceSoftmaxStats, shardBackward, shardForward, type SoftmaxStats } from '../src/ops/softmax-shard.js';
import { referenceLossAndGrads } from '../src/ops/reference-classifier.js';
import { HEAD_DW, HEAD_DX, LEGACY_DW, LEGACY_DX, VECTOR_A_LOSS, W, X, Y } from './helpers/vector-a.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

interface Sharded {
  loss: number;
  gradEmb: Float32Array;
  /** Full C×D, zero on rows no shard had active. */
  gradWeight: Float32Array;
  stats: SoftmaxStats[];
  active: number[];
}

/**
 * Runs the sharded step for n in-process shards: forward on each, the
 * coordinator's reduction, backward on each, partial ∇E summed (reduce-scatter).
 */
function runSharded(
  emb: number[][],
  weight: number[][],
  labels: number[],
  world: number,
  margin: MarginSpec,
  variant: MarginVariant,
  opts: { chunk?: number; numSample?: (count: number) => number; seed?: number; prepared?: boolean } = {},
): Sharded {
  const n = emb.length;
  const d = emb[0]!.length;
  const c = weight.length;
  const y = Int32Array.from(labels);
  const e = tf.tensor2d(emb);
  const shards = Array.from({ length: world }, (_, r) => {
    const range = classRange(c, world, r);
    const local = localiseLabels(y, range);
    const numSample = opts.numSample ? opts.numSample(range.count) : range.count;
    const sample = sampleClasses(local, range.count, numSample, new Rng(1000 * (opts.seed ?? 0) + r));
    const rows = Array.from(sample.index, (j) => weight[range.start + j]!);
    const w = rows.length > 0 ? tf.tensor2d(rows) : (tf.zeros([0, d]) as tf.Tensor2D);
    return { range, sample, w, prepared: opts.prepared ? prepareWeight(w) : undefined };
  });
  const variantForward = variant === 'legacy' || variant === 'legacy-easy' ? variant : undefined;
  const stats = shards.map((s) => shardForward(e, s.w, s.sample.labels, margin, { chunk: opts.chunk, prepared: s.prepared, variant: variantForward }));
  const reduced = reduceSoftmaxStats(stats);
  const gradEmb = new Float32Array(n * d);
  const gradWeight = new Float32Array(c * d);
  const active: number[] = [];
  for (const s of shards) {
    const g = shardBackward(e, s.w, s.sample.labels, reduced.logSumExp, margin, variant, n, { chunk: opts.chunk, prepared: s.prepared });
    const ge = g.gradEmb.dataSync();
    for (let i = 0; i < ge.length; i++) gradEmb[i]! += ge[i]!;
    const gw = g.gradWeight.dataSync();
    s.sample.index.forEach((j, k) => {
      active.push(s.range.start + j);
      gradWeight.set(gw.subarray(k * d, (k + 1) * d), (s.range.start + j) * d);
    });
    tf.dispose([g.gradEmb, g.gradWeight, s.w]);
    s.prepared?.dispose();
  }
  e.dispose();
  return { loss: reduced.loss, gradEmb, gradWeight, stats, active };
}

function reference(emb: number[][], weight: number[][], labels: number[], margin: MarginSpec, variant: MarginVariant) {
  const r = referenceLossAndGrads(emb, weight, labels, margin, variant);
  const out = { loss: r.loss, gradEmb: r.gradEmb.dataSync() as Float32Array, gradWeight: r.gradWeight.dataSync() as Float32Array };
  tf.dispose([r.gradEmb, r.gradWeight]);
  return out;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** max |a − b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m / Math.max(maxAbs(b), 1e-30);
}

function randomCase(seed: number, n: number, c: number, d: number) {
  const rng = new Rng(seed);
  const mat = (rows: number, std: number) => Array.from({ length: rows }, () => Array.from(rng.fillNormal(new Float32Array(d), 0, std)));
  const emb = mat(n, 1);
  const weight = mat(c, 0.01);
  const labels = Array.from({ length: n }, () => rng.int(c));
  return { emb, weight, labels };
}

// docs/methods.md#partial-fc-test-vectors, vector A: X, Y, W and the expected values in test/helpers/vector-a.ts

function expectMatrix(actual: ArrayLike<number>, expected: number[][], what: string) {
  const flat = expected.flat();
  flat.forEach((v, i) => {
    if (Math.abs(actual[i]! - v) > 1e-5 + 1e-4 * Math.abs(v)) throw new Error(`${what}[${i}]: got ${actual[i]}, expected ${v}`);
  });
}

describe('docs/methods.md#partial-fc-test-vectors, vector A: two shards equal the full computation', () => {
  const arcface = MARGIN_PRESETS.arcface;

  it('straight-through (arcface_torch HEAD): loss, per-rank statistics, dL/dW, dL/dX', () => {
    const r = runSharded(X, W, Y, 2, arcface, 'straight-through');
    expect(Math.abs(r.loss - VECTOR_A_LOSS)).toBeLessThan(1e-5 * 4.354);
    // global M, S and q from the per-rank statistics
    const M = [60.952381, 33.67247, 51.178943, 27.076652];
    const S = [1.032474, 1.465468, 1.090352, 1.00215];
    const q = [0.000225, 0.682376, 0.082865, 0.002145];
    for (let i = 0; i < 4; i++) {
      const m = Math.max(r.stats[0]!.rowMax[i]!, r.stats[1]!.rowMax[i]!);
      const s = r.stats.reduce((a, p) => a + p.sumExp[i]! * Math.exp(p.rowMax[i]! - m), 0);
      const owner = r.stats.find((p) => p.owned[i])!;
      // docs/methods.md#tolerances tolerances (rtol 1e-4, atol 1e-5): the printed values are rounded to 6 decimals
      expect(Math.abs(m - M[i]!)).toBeLessThan(1e-4 * M[i]!);
      expect(Math.abs(s - S[i]!)).toBeLessThan(1e-5 + 1e-4 * S[i]!);
      expect(Math.abs(Math.exp(owner.target[i]! - m) / s - q[i]!)).toBeLessThan(1e-5 + 1e-4 * q[i]!);
    }
    expect(Array.from(r.stats[0]!.owned)).toEqual([1, 0, 0, 1]);
    expect(Array.from(r.stats[1]!.owned)).toEqual([0, 1, 1, 0]);
    expectMatrix(r.gradWeight, HEAD_DW, 'dL/dW');
    expectMatrix(r.gradEmb, HEAD_DX, 'dL/dX');
    const ref = reference(X, W, Y, arcface, 'straight-through');
    expect(Math.abs(ref.loss - VECTOR_A_LOSS)).toBeLessThan(1e-5 * 4.354);
    expectMatrix(ref.gradWeight, HEAD_DW, 'reference dL/dW');
    expectMatrix(ref.gradEmb, HEAD_DX, 'reference dL/dX');
  });

  for (const variant of ['legacy', 'exact'] as const) {
    it(`${variant}: same loss, the legacy gradient vectors (every target has c > th)`, () => {
      const r = runSharded(X, W, Y, 2, arcface, variant);
      expect(Math.abs(r.loss - VECTOR_A_LOSS)).toBeLessThan(1e-5 * 4.354);
      expectMatrix(r.gradWeight, LEGACY_DW, 'dL/dW');
      expectMatrix(r.gradEmb, LEGACY_DX, 'dL/dX');
      const ref = reference(X, W, Y, arcface, variant);
      expectMatrix(ref.gradWeight, LEGACY_DW, 'reference dL/dW');
      expectMatrix(ref.gradEmb, LEGACY_DX, 'reference dL/dX');
    });
  }
});

describe('n shards equal the single-process reference', () => {
  const margins: [string, MarginSpec][] = [
    ['arcface', MARGIN_PRESETS.arcface],
    ['cosface', MARGIN_PRESETS.cosface],
  ];
  const layouts: [number, number][] = [
    [1, 12],
    [2, 12],
    [3, 12],
    [4, 12],
    [3, 13],
    [4, 14],
    [4, 3], // one empty shard
  ];
  for (const [mname, margin] of margins) {
    for (const variant of ['straight-through', 'exact'] as const) {
      it(`${mname}, ${variant}: n = 1..4, C divisible or not`, () => {
        let seed = 0;
        for (const [world, classes] of layouts) {
          const { emb, weight, labels } = randomCase(++seed, 8, classes, 6);
          const ref = reference(emb, weight, labels, margin, variant);
          const r = runSharded(emb, weight, labels, world, margin, variant, { chunk: 3 });
          const ctx = `n=${world} C=${classes}`;
          expect(Math.abs(r.loss - ref.loss) / Math.max(1, ref.loss), ctx).toBeLessThan(1e-5);
          expect(relErr(r.gradEmb, ref.gradEmb), ctx).toBeLessThan(1e-5);
          expect(relErr(r.gradWeight, ref.gradWeight), ctx).toBeLessThan(1e-5);
        }
      });
    }
  }

  it('combined margin and the legacy heads agree too', () => {
    const { emb, weight, labels } = randomCase(77, 10, 11, 5);
    const cases: [MarginSpec, MarginVariant][] = [
      [MARGIN_PRESETS.combined, 'exact'],
      [MARGIN_PRESETS.combined, 'straight-through'],
      [resolveMargin({ type: 'combined', m1: 1.35, m2: 0, m3: 0 }), 'exact'],
      [MARGIN_PRESETS.arcface, 'legacy'],
      [MARGIN_PRESETS.arcface, 'legacy-easy'],
      [resolveMargin({ type: 'arcface', s: 100 }), 'exact'], // s > 87: the forward shifts by the row max before exp
    ];
    for (const [margin, variant] of cases) {
      const ref = reference(emb, weight, labels, margin, variant);
      const r = runSharded(emb, weight, labels, 3, margin, variant, { chunk: 4 });
      expect(Math.abs(r.loss - ref.loss) / Math.max(1, ref.loss)).toBeLessThan(1e-5);
      expect(relErr(r.gradEmb, ref.gradEmb)).toBeLessThan(1e-5);
      expect(relErr(r.gradWeight, ref.gradWeight)).toBeLessThan(1e-5);
    }
  });

  it('single-class shards (K = 1), with and without the exp shift', () => {
    const { emb, weight, labels } = randomCase(78, 8, 4, 5);
    for (const margin of [MARGIN_PRESETS.cosface, resolveMargin({ type: 'cosface', s: 90 })]) {
      const ref = reference(emb, weight, labels, margin, 'exact');
      const r = runSharded(emb, weight, labels, 4, margin, 'exact', { chunk: 4 });
      expect(Math.abs(r.loss - ref.loss) / Math.max(1, ref.loss)).toBeLessThan(1e-5);
      expect(relErr(r.gradEmb, ref.gradEmb)).toBeLessThan(1e-5);
      expect(relErr(r.gradWeight, ref.gradWeight)).toBeLessThan(1e-5);
    }
  });

  it('with sampling, equals the reference over the union of active classes', () => {
    const { emb, weight, labels } = randomCase(5, 6, 40, 4);
    const r = runSharded(emb, weight, labels, 3, MARGIN_PRESETS.arcface, 'straight-through', { numSample: (k) => Math.ceil(0.3 * k), seed: 3 });
    const active = [...r.active].sort((a, b) => a - b);
    expect(active.length).toBeLessThan(40);
    const pos = new Map(active.map((c, i) => [c, i]));
    const ref = reference(
      emb,
      active.map((c) => weight[c]!),
      labels.map((y) => pos.get(y)!),
      MARGIN_PRESETS.arcface,
      'straight-through',
    );
    expect(Math.abs(r.loss - ref.loss) / Math.max(1, ref.loss)).toBeLessThan(1e-5);
    expect(relErr(r.gradEmb, ref.gradEmb)).toBeLessThan(1e-5);
    const d = 4;
    const shardActive = new Float32Array(active.length * d);
    active.forEach((c, i) => shardActive.set(r.gradWeight.subarray(c * d, (c + 1) * d), i * d));
    expect(relErr(shardActive, ref.gradWeight)).toBeLessThan(1e-5);
  });
});

describe('row chunking', () => {
  it('chunks smaller than N give the same statistics and gradients; prepared weights too', () => {
    const { emb, weight, labels } = randomCase(11, 10, 9, 5);
    const whole = runSharded(emb, weight, labels, 2, MARGIN_PRESETS.arcface, 'exact', { chunk: 256 });
    for (const chunk of [1, 3, 7]) {
      const r = runSharded(emb, weight, labels, 2, MARGIN_PRESETS.arcface, 'exact', { chunk, prepared: chunk === 3 });
      r.stats.forEach((s, k) => {
        expect(Array.from(s.rowMax)).toEqual(Array.from(whole.stats[k]!.rowMax));
        expect(Array.from(s.sumExp)).toEqual(Array.from(whole.stats[k]!.sumExp));
        expect(Array.from(s.target)).toEqual(Array.from(whole.stats[k]!.target));
      });
      expect(r.loss).toBe(whole.loss);
      expect(Array.from(r.gradEmb)).toEqual(Array.from(whole.gradEmb));
      // ∇W sums the chunks' contributions in a different order: equal to rounding
      expect(relErr(r.gradWeight, whole.gradWeight)).toBeLessThan(1e-6);
    }
  });
});

describe('shard edge cases', () => {
  it('an empty shard reports −∞ / 0 and zero gradients', () => {
    const e = tf.tensor2d([
      [1, 0],
      [0, 1],
    ]);
    const w = tf.zeros([0, 2]) as tf.Tensor2D;
    const s = shardForward(e, w, Int32Array.from([-1, -1]), MARGIN_PRESETS.arcface);
    expect(Array.from(s.rowMax)).toEqual([-Infinity, -Infinity]);
    expect(Array.from(s.sumExp)).toEqual([0, 0]);
    const g = shardBackward(e, w, Int32Array.from([-1, -1]), Float32Array.from([1, 1]), MARGIN_PRESETS.arcface, 'exact', 2);
    expect(g.gradEmb.shape).toEqual([2, 2]);
    expect(g.gradWeight.shape).toEqual([0, 2]);
    expect(Array.from(g.gradEmb.dataSync())).toEqual([0, 0, 0, 0]);
    tf.dispose([e, w, g.gradEmb, g.gradWeight]);
  });

  it('reduceSoftmaxStats rejects rows with no owner or two owners', () => {
    const part = (owned: number[]): SoftmaxStats => ({
      rowMax: Float32Array.from([1, 1]),
      sumExp: Float32Array.from([1, 1]),
      target: Float32Array.from([0, 0]),
      owned: Uint8Array.from(owned),
    });
    expect(() => reduceSoftmaxStats([part([1, 0]), part([0, 0])])).toThrow(/row 1 is owned by no shard/);
    expect(() => reduceSoftmaxStats([part([1, 1]), part([0, 1])])).toThrow(/row 1 is owned by shards 0 and 1/);
    const ok = reduceSoftmaxStats([part([1, 0]), part([0, 1])]);
    expect(ok.logSumExp[0]).toBeCloseTo(1 + Math.log(2), 6);
    expect(ok.loss).toBeCloseTo(1 + Math.log(2), 6);
  });

  it('reduceSoftmaxStats is stable for logits far apart (no exp overflow/underflow of the sum)', () => {
    const r = reduceSoftmaxStats([
      { rowMax: Float32Array.from([64]), sumExp: Float32Array.from([1]), target: Float32Array.from([-4]), owned: Uint8Array.from([1]) },
      { rowMax: Float32Array.from([-1e4]), sumExp: Float32Array.from([3]), target: Float32Array.from([0]), owned: Uint8Array.from([0]) },
    ]);
    expect(r.logSumExp[0]).toBe(64);
    // 68: below the −ln 1e-30 cap of the reported loss (test/loss-clamp.test.ts covers rows above it)
    expect(r.loss).toBe(68);
  });

  it('does not leak tensors', () => {
    const { emb, weight, labels } = randomCase(3, 5, 6, 4);
    runSharded(emb, weight, labels, 2, MARGIN_PRESETS.arcface, 'exact', { chunk: 2 });
    const before = tf.memory().numTensors;
    runSharded(emb, weight, labels, 2, MARGIN_PRESETS.arcface, 'exact', { chunk: 2, prepared: true });
    expect(tf.memory().numTensors).toBe(before);
  });
});
