/**
 * The classifier's fused native kernels (src/ops/native/classifier.cc) against
 * the tfjs composite they replace: the same public functions (shardForward,
 * shardBackward, gatherRows, updateRows) run on `cpu` (composite, stock
 * kernels) and on `cpu-native` (fused), in one process.
 *  - softmax statistics and gradients: max |native − composite| ≤ 2e-4 · max |composite|
 *    per output (float32 GEMMs summed in a different order);
 *  - row updates: bit-identical (same float32 operations in the same order), and
 *    rows outside the index bit-unchanged;
 *  - the native path really ran (kernel counters), and the addon must load.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf } from '../src/ops/tf.js';
import { Rng } from '../src/common/random.js';
import { classRange, localiseLabels } from '../src/ops/class-range.js';
import { MARGIN_PRESETS, resolveMargin, type MarginSpec, type MarginVariant } from '../src/ops/margin.js';
import { prepareWeight, reduceSoftmaxStats, shardBackward, shardForward, type SoftmaxStats } from '../src/ops/softmax-shard.js';
import { createShardState, disposeShardState, gatherRows, updateRows, type RowHyperParams, type ShardState } from '../src/ops/row-optimizer.js';
import { initialShardWeights } from '../src/ops/classifier-init.js';
import { nativeKernelCounts, registerNativeKernels } from '../src/ops/native/register.js';
import { HEAD_DW, HEAD_DX, LEGACY_DW, LEGACY_DX, VECTOR_A_LOSS, W, X, Y as VECTOR_A_Y } from './helpers/vector-a.js';

const TOL = 2e-4;

beforeAll(async () => {
  const r = registerNativeKernels({ threads: 2 });
  if (!r.ok) throw new Error(`native kernels must load: ${r.reason}`);
  await tf.setBackend('cpu');
});

/** tf.tidy for callbacks that return typed arrays beside tensors (tidy keeps returned tensors, ignores the rest). */
function tidyAny<T>(f: () => T): T {
  return tf.tidy(f as unknown as () => tf.TensorContainer) as unknown as T;
}

function on<T>(backend: 'cpu' | 'cpu-native', f: () => T): T {
  // setBackend switches synchronously for backends that are already initialised
  void tf.setBackend(backend);
  if (tf.getBackend() !== backend) throw new Error(`could not switch to ${backend}`);
  try {
    return f();
  } finally {
    void tf.setBackend('cpu');
  }
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = TOL): void {
  expect(got.length, what).toBe(want.length);
  let scale = 1e-30;
  for (let i = 0; i < want.length; i++) if (Number.isFinite(want[i]!)) scale = Math.max(scale, Math.abs(want[i]!));
  let err = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!,
      g = got[i]!;
    if (w === g) continue; // includes matching ±Infinity
    const e = Math.abs(g - w);
    if (!(e <= err)) {
      err = e;
      at = i;
    }
  }
  expect(err / scale, `${what}: max error ${err} at ${at} (got ${got[at]}, want ${want[at]}) at scale ${scale}`).toBeLessThanOrEqual(tol);
}

function expectBitEqual(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length, what).toBe(want.length);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let first = -1;
  for (let i = 0; i < a.length && first < 0; i++) if (a[i] !== b[i]) first = i;
  expect(first, `${what}: first differing element ${first} (${got[first]} vs ${want[first]})`).toBe(-1);
}

async function ranNatively<T>(kernels: string[], body: () => T): Promise<T> {
  const before = nativeKernelCounts();
  const out = body();
  const after = nativeKernelCounts();
  for (const k of kernels) expect(after[k]?.native ?? 0, `${k} ran natively`).toBeGreaterThan(before[k]?.native ?? 0);
  return out;
}

interface Case {
  n: number;
  k: number;
  d: number;
  chunk: number;
  margin: MarginSpec;
  variant: MarginVariant;
  /** Fraction of rows whose label is in this shard. */
  owned: number;
  prepared: boolean;
  zeroRow?: boolean;
}

interface Pass {
  stats: SoftmaxStats;
  gradEmb: Float32Array;
  gradWeight: Float32Array;
}

/** One shard's forward, the reduction over it plus a fake second shard owning the rest, and backward. */
function runShard(c: Case, seed: number): Pass {
  const rng = new Rng(seed);
  const embV = rng.fillNormal(new Float32Array(c.n * c.d));
  const wV = rng.fillNormal(new Float32Array(c.k * c.d), 0, 0.05);
  if (c.zeroRow && c.k > 1) wV.fill(0, 0, c.d);
  const labels = new Int32Array(c.n);
  for (let i = 0; i < c.n; i++) labels[i] = c.k > 0 && rng.next() < c.owned ? rng.int(c.k) : -1;
  return tidyAny(() => {
    const emb = tf.tensor2d(embV, [c.n, c.d]);
    const w = tf.tensor2d(wV, [c.k, c.d]);
    const prepared = c.prepared ? prepareWeight(w) : undefined;
    const forwardVariant = c.variant === 'legacy' || c.variant === 'legacy-easy' ? c.variant : undefined;
    const stats = shardForward(emb, w, labels, c.margin, { chunk: c.chunk, prepared, variant: forwardVariant });
    // the other shard: owns the rows this one does not, one logit s·0.3 each
    const other: SoftmaxStats = {
      rowMax: new Float32Array(c.n).fill(c.margin.s * 0.3),
      sumExp: new Float32Array(c.n).fill(1),
      target: new Float32Array(c.n).fill(c.margin.s * 0.3),
      owned: Uint8Array.from(stats.owned, (o) => 1 - o),
    };
    const { logSumExp } = reduceSoftmaxStats([stats, other]);
    const g = shardBackward(emb, w, labels, logSumExp, c.margin, c.variant, c.n * 2, { chunk: c.chunk, prepared });
    const out = { stats, gradEmb: (g.gradEmb.dataSync() as Float32Array).slice(), gradWeight: (g.gradWeight.dataSync() as Float32Array).slice() };
    prepared?.dispose();
    return out;
  });
}

const combinedSteep = resolveMargin({ type: 'combined', m1: 1.35, m2: 0, m3: 0 });

describe('native classifier: fused forward/backward equal the composite', () => {
  const margins: Array<[string, MarginSpec, MarginVariant[]]> = [
    ['arcface', MARGIN_PRESETS.arcface, ['straight-through', 'exact', 'legacy', 'legacy-easy']],
    ['cosface', MARGIN_PRESETS.cosface, ['straight-through', 'exact']],
    ['combined', MARGIN_PRESETS.combined, ['straight-through', 'exact']],
    ['m1=1.35', combinedSteep, ['straight-through', 'exact']],
  ];
  const shapes: Array<Omit<Case, 'margin' | 'variant'>> = [
    { n: 16, k: 40, d: 8, chunk: 256, owned: 0.7, prepared: false },
    { n: 37, k: 301, d: 33, chunk: 5, owned: 0.5, prepared: true }, // chunk < N, ragged last chunk
    { n: 9, k: 3, d: 4, chunk: 1, owned: 1, prepared: false, zeroRow: true },
    { n: 64, k: 1000, d: 64, chunk: 16, owned: 0.3, prepared: true },
    { n: 5, k: 1, d: 7, chunk: 2, owned: 1, prepared: false }, // one class: the target is every row's only logit
    { n: 6, k: 12, d: 5, chunk: 4, owned: 0, prepared: false }, // nothing owned here
  ];
  let seed = 100;
  for (const [name, margin, variants] of margins)
    for (const variant of variants)
      it(`${name} / ${variant}`, async () => {
        for (const shape of shapes) {
          const c: Case = { ...shape, margin, variant };
          const s = seed++;
          const want = on('cpu', () => runShard(c, s));
          const got = await ranNatively(['SfShardForward', 'SfShardBackward'], () => on('cpu-native', () => runShard(c, s)));
          const tag = `${name}/${variant} n=${c.n} k=${c.k} d=${c.d} chunk=${c.chunk}`;
          expectClose(got.stats.rowMax, want.stats.rowMax, `${tag} rowMax`);
          expectClose(got.stats.sumExp, want.stats.sumExp, `${tag} sumExp`);
          expectClose(got.stats.target, want.stats.target, `${tag} target`);
          expect(Array.from(got.stats.owned)).toEqual(Array.from(want.stats.owned));
          expectClose(got.gradEmb, want.gradEmb, `${tag} gradEmb`);
          expectClose(got.gradWeight, want.gradWeight, `${tag} gradWeight`);
        }
      });

  it('empty shard and empty batch', () => {
    const margin = MARGIN_PRESETS.arcface;
    for (const [n, k] of [
      [4, 0],
      [0, 5],
      [0, 0],
    ] as const) {
      const both = (['cpu', 'cpu-native'] as const).map((b) =>
        on(b, () =>
          tidyAny(() => {
            const emb = tf.zeros([n, 3]) as tf.Tensor2D;
            const w = tf.ones([k, 3]) as tf.Tensor2D;
            const labels = new Int32Array(n).fill(-1);
            const stats = shardForward(emb, w, labels, margin, { prepared: k > 0 ? prepareWeight(w) : undefined });
            const g = shardBackward(emb, w, labels, new Float32Array(n), margin, 'straight-through', 8);
            return { stats, ge: g.gradEmb.shape, gw: g.gradWeight.shape };
          }),
        ),
      );
      expect(both[1]).toEqual(both[0]);
    }
    // the kernels themselves accept an empty shard
    on('cpu-native', () =>
      tf.tidy(() => {
        const outs = tf
          .engine()
          .runKernel('SfShardForward', { emb: tf.ones([3, 2]), weight: tf.zeros([0, 2]), labels: tf.tensor1d([-1, -1, -1], 'int32') }, { margin: [64, 1, 0.5, 0, 0], chunk: 2 }) as tf.Tensor[];
        expect(Array.from(outs[0]!.dataSync())).toEqual([-Infinity, -Infinity, -Infinity]);
        expect(Array.from(outs[1]!.dataSync())).toEqual([0, 0, 0]);
      }),
    );
  });

  it('reproduces docs/methods.md#partial-fc-test-vectors, vector A (two shards, straight-through and exact) on cpu-native', () => {
    const Y = Int32Array.from(VECTOR_A_Y);
    const margin = resolveMargin({ type: 'arcface' });
    const run = (variant: MarginVariant) =>
      on('cpu-native', () =>
        tf.tidy(() => {
          const emb = tf.tensor2d(X);
          const shards = [0, 1].map((r) => {
            const range = classRange(6, 2, r);
            return { w: tf.tensor2d(W.slice(range.start, range.start + range.count)), labels: localiseLabels(Y, range) };
          });
          const stats = shards.map((s) => shardForward(emb, s.w, s.labels, margin, { chunk: 3 }));
          const red = reduceSoftmaxStats(stats);
          const grads = shards.map((s) => shardBackward(emb, s.w, s.labels, red.logSumExp, margin, variant, 4, { chunk: 3 }));
          const dX = tf.add(grads[0]!.gradEmb, grads[1]!.gradEmb).dataSync().slice();
          const dW = tf.concat([grads[0]!.gradWeight, grads[1]!.gradWeight]).dataSync().slice();
          return { loss: red.loss, dX, dW };
        }),
      );
    const st = run('straight-through');
    expect(st.loss).toBeCloseTo(VECTOR_A_LOSS, 4);
    expectClose(st.dX, HEAD_DX.flat(), 'dX', 2e-5);
    expectClose(st.dW.slice(0, 9), HEAD_DW.slice(0, 3).flat(), 'dW rank0', 2e-5);
    expectClose(st.dW.slice(9), HEAD_DW.slice(3).flat(), 'dW rank1', 2e-5);
    const ex = run('exact');
    expectClose(ex.dX, LEGACY_DX.flat(), 'legacy dX', 2e-5);
    expectClose(ex.dW, LEGACY_DW.flat(), 'legacy dW', 2e-5);
  });
});

// ---------------------------------------------------------------------------------------

function backendValues(t: tf.Tensor): Float32Array {
  return (tf.backend() as MathBackendCPU).data.get(t.dataId)!.values as Float32Array;
}

function snapshot(state: ShardState): Float32Array[] {
  return [state.weight, state.momentum, state.expAvg, state.expAvgSq].filter((v): v is tf.Variable<tf.Rank.R2> => v !== null).map((v) => (v.dataSync() as Float32Array).slice());
}

/** Three update steps on a fresh state with the given row subsets; returns every buffer after each step. */
function runUpdates(kind: 'sgd' | 'adamw', count: number, dim: number, steps: Int32Array[], seed: number): Float32Array[][] {
  const rng = new Rng(seed);
  const init = rng.fillNormal(new Float32Array(count * dim), 0, 0.1);
  const state = createShardState(count, dim, kind, init);
  const hp: RowHyperParams = kind === 'sgd' ? { kind, lr: 0.1, momentum: 0.9, weightDecay: 5e-4 } : { kind, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
  const out: Float32Array[][] = [];
  try {
    for (const index of steps) {
      const g = tf.tensor2d(rng.fillNormal(new Float32Array(index.length * dim)), [index.length, dim]);
      updateRows(state, index, g, hp);
      g.dispose();
      out.push(snapshot(state));
    }
  } finally {
    disposeShardState(state);
  }
  return out;
}

function subset(count: number, rate: number, rng: Rng): Int32Array {
  const rows: number[] = [];
  for (let j = 0; j < count; j++) if (rng.next() < rate) rows.push(j);
  return Int32Array.from(rows);
}

describe('native classifier: in-place row updates', () => {
  for (const kind of ['sgd', 'adamw'] as const)
    it(`${kind}: bit-identical to the composite; unsampled rows untouched`, async () => {
      const rng = new Rng(7);
      const count = 300,
        dim = 24;
      const steps = [subset(count, 0.1, rng), Int32Array.from({ length: count }, (_, i) => i), new Int32Array(0), subset(count, 0.5, rng)];
      const want = on('cpu', () => runUpdates(kind, count, dim, steps, 11));
      const kernel = kind === 'sgd' ? 'SfRowSgdUpdate' : 'SfRowAdamWUpdate';
      const got = await ranNatively([kernel], () => on('cpu-native', () => runUpdates(kind, count, dim, steps, 11)));
      for (let s = 0; s < steps.length; s++) for (let b = 0; b < want[s]!.length; b++) expectBitEqual(got[s]![b]!, want[s]![b]!, `${kind} step ${s} buffer ${b}`);
      // step 0 touched only its rows: compare every other row with the initial values
      const init = new Rng(11).fillNormal(new Float32Array(count * dim), 0, 0.1);
      const touched = new Set(steps[0]);
      for (let j = 0; j < count; j++) {
        if (touched.has(j)) continue;
        expectBitEqual(got[0]![0]!.subarray(j * dim, (j + 1) * dim), init.subarray(j * dim, (j + 1) * dim), `untouched weight row ${j}`);
        for (let b = 1; b < got[0]!.length; b++)
          expect(
            got[0]![b]!.subarray(j * dim, (j + 1) * dim).every((v) => v === 0),
            `untouched state row ${j}`,
          ).toBe(true);
      }
    });

  it('updates the variable buffer in place, and never a buffer someone else holds', () => {
    on('cpu-native', () => {
      const init = Float32Array.from({ length: 40 }, (_, i) => i / 40);
      const initCopy = init.slice();
      const state = createShardState(10, 4, 'sgd', init);
      const hp: RowHyperParams = { kind: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0 };
      const grad = () => tf.ones([2, 4]) as tf.Tensor2D;
      const index = Int32Array.from([1, 7]);
      const buffer = backendValues(state.weight);
      const g1 = grad();
      updateRows(state, index, g1, hp);
      g1.dispose();
      expect(backendValues(state.weight), 'same storage: updated in place').toBe(buffer);
      expect(init, "the caller's init array is not the storage").toEqual(initCopy);
      expect(buffer[4]).toBeCloseTo(initCopy[4]! - 0.1, 6);
      // a clone shares the buffer (refCount 2): the update must leave the clone's values alone
      const clone = tf.clone(state.weight);
      const before = (clone.dataSync() as Float32Array).slice();
      const g2 = grad();
      updateRows(state, index, g2, hp);
      g2.dispose();
      expectBitEqual(clone.dataSync() as Float32Array, before, 'clone after update');
      expect(backendValues(state.weight)).not.toBe(buffer); // the variable got a private copy
      expect(state.weight.dataSync()[4]).toBeCloseTo(before[4]! - 0.1 * (0.9 + 1), 6);
      clone.dispose();
      // and with the clone gone, in place again
      const mine = backendValues(state.weight);
      const g3 = grad();
      updateRows(state, index, g3, hp);
      g3.dispose();
      expect(backendValues(state.weight)).toBe(mine);
      disposeShardState(state);
    });
  });

  it('gatherRows: native gather equals tf.gather; every row in order shares the buffer', async () => {
    const count = 50,
      dim = 6;
    const init = new Rng(3).fillNormal(new Float32Array(count * dim));
    const idx = Int32Array.from([0, 3, 4, 10, 49]);
    const want = on('cpu', () => {
      const st = createShardState(count, dim, 'sgd', init);
      const r = gatherRows(st, idx);
      const v = (r.dataSync() as Float32Array).slice();
      r.dispose();
      disposeShardState(st);
      return v;
    });
    const got = await ranNatively(['SfGatherRows'], () =>
      on('cpu-native', () => {
        const st = createShardState(count, dim, 'sgd', init);
        const r = gatherRows(st, idx);
        const v = (r.dataSync() as Float32Array).slice();
        r.dispose();
        const all = gatherRows(
          st,
          Int32Array.from({ length: count }, (_, i) => i),
        );
        expect(all.dataId, 'identity gather is a reference, not a copy').toBe(st.weight.dataId);
        all.dispose();
        disposeShardState(st);
        return v;
      }),
    );
    expectBitEqual(got, want, 'gathered rows');
  });
});

describe('classifier init', () => {
  it('is the same matrix for any number of workers', () => {
    const dim = 5,
      classes = 3000;
    const whole = initialShardWeights(classRange(classes, 1, 0), dim, 9);
    for (const world of [2, 3, 7]) {
      const parts = Array.from({ length: world }, (_, r) => initialShardWeights(classRange(classes, world, r), dim, 9));
      const joined = new Float32Array(classes * dim);
      let off = 0;
      for (const p of parts) {
        joined.set(p, off);
        off += p.length;
      }
      expectBitEqual(joined, whole, `world ${world}`);
    }
    let sum = 0,
      sq = 0;
    for (const v of whole) {
      sum += v;
      sq += v * v;
    }
    const mean = sum / whole.length,
      std = Math.sqrt(sq / whole.length - mean * mean);
    expect(Math.abs(mean)).toBeLessThan(0.001);
    expect(std).toBeGreaterThan(0.0097);
    expect(std).toBeLessThan(0.0103);
  });
});
