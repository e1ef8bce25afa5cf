import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { Rng } from '../src/common/random.js';
import { classRange } from '../src/ops/class-range.js';
import { createShardState, disposeShardState, gatherRows, updateRows, type ShardState } from '../src/ops/row-optimizer.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 };
const ADAMW = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

function bits(t: tf.Tensor): Uint32Array {
  return new Uint32Array(Float32Array.from(t.dataSync()).buffer);
}

describe('SGD row update (docs/methods.md#partial-fc-test-vectors, vector C, v1 semantics)', () => {
  it('sampled row: v = 0.480250, w = 0.451975; unsampled row: unchanged', () => {
    const state = createShardState(2, 1, 'sgd', Float32Array.from([0.5, 0.5]));
    state.momentum!.assign(tf.tensor2d([[0.2], [0.2]]));
    updateRows(state, Int32Array.from([0]), tf.tensor2d([[0.3]]), SGD);
    const w = state.weight.dataSync();
    const v = state.momentum!.dataSync();
    expect(v[0]).toBeCloseTo(0.48025, 6);
    expect(w[0]).toBeCloseTo(0.451975, 6);
    expect(v[1]).toBe(Math.fround(0.2));
    expect(w[1]).toBe(Math.fround(0.5));
    disposeShardState(state);
  });

  it('rows and state outside the index are bit-for-bit unchanged', () => {
    for (const kind of ['sgd', 'adamw'] as const) {
      const state = createShardState(20, 8, kind, new Rng(3));
      const hp = kind === 'sgd' ? SGD : ADAMW;
      // give every row some state first
      updateRows(state, Int32Array.from(Array.from({ length: 20 }, (_, i) => i)), tf.randomNormal([20, 8], 0, 1, 'float32', 1) as tf.Tensor2D, hp);
      const buffers = (s: ShardState) => [s.weight, s.momentum, s.expAvg, s.expAvgSq].filter((b): b is NonNullable<typeof b> => b !== null);
      const before = buffers(state).map(bits);
      const index = Int32Array.from([1, 4, 5, 13]);
      updateRows(state, index, tf.randomNormal([4, 8], 0, 1, 'float32', 2) as tf.Tensor2D, hp);
      const after = buffers(state).map(bits);
      const inIndex = new Set(index);
      before.forEach((b, k) => {
        for (let r = 0; r < 20; r++) {
          const same = b.subarray(r * 8, (r + 1) * 8).every((x, j) => x === after[k]![r * 8 + j]);
          expect(same, `${kind} buffer ${k} row ${r}`).toBe(!inIndex.has(r));
        }
      });
      disposeShardState(state);
    }
  });

  it('SGD on shards equals SGD on the whole classifier', () => {
    const classes = 11;
    const dim = 4;
    const world = 3;
    const init = new Rng(5).fillNormal(new Float32Array(classes * dim), 0, 0.01);
    const whole = createShardState(classes, dim, 'sgd', init);
    const shards = Array.from({ length: world }, (_, r) => {
      const range = classRange(classes, world, r);
      return { range, state: createShardState(range.count, dim, 'sgd', init.slice(range.start * dim, (range.start + range.count) * dim)) };
    });
    const rng = new Rng(6);
    for (let step = 0; step < 5; step++) {
      // a random active set per step (v1: only these rows move)
      const active = Array.from({ length: classes }, (_, c) => c).filter(() => rng.next() < 0.6);
      const grad = Float32Array.from({ length: active.length * dim }, () => rng.normal());
      updateRows(whole, Int32Array.from(active), tf.tensor2d(grad, [active.length, dim]), SGD);
      for (const { range, state } of shards) {
        const mine = active.map((c, k) => [c - range.start, k] as const).filter(([l]) => l >= 0 && l < range.count);
        const g = new Float32Array(mine.length * dim);
        mine.forEach(([, k], j) => g.set(grad.subarray(k * dim, (k + 1) * dim), j * dim));
        updateRows(state, Int32Array.from(mine.map(([l]) => l)), tf.tensor2d(g, [mine.length, dim]), SGD);
      }
    }
    const joinedW = new Float32Array(classes * dim);
    const joinedV = new Float32Array(classes * dim);
    for (const { range, state } of shards) {
      joinedW.set(state.weight.dataSync() as Float32Array, range.start * dim);
      joinedV.set(state.momentum!.dataSync() as Float32Array, range.start * dim);
    }
    expect(Array.from(joinedW)).toEqual(Array.from(whole.weight.dataSync()));
    expect(Array.from(joinedV)).toEqual(Array.from(whole.momentum!.dataSync()));
  });
});

describe('AdamW row update', () => {
  it('matches decoupled AdamW (PyTorch) over two steps, shared step count', () => {
    const state = createShardState(3, 1, 'adamw', Float32Array.from([0.5, -0.2, 1.0]));
    const grads = [0.3, -0.1];
    // reference for row 0, updated on both calls; row 2 only on the second (its bias correction uses step 2)
    let w0 = 0.5;
    let m0 = 0;
    let v0 = 0;
    grads.forEach((g, t) => {
      w0 *= 1 - ADAMW.lr * ADAMW.weightDecay;
      m0 = 0.9 * m0 + 0.1 * g;
      v0 = 0.999 * v0 + 0.001 * g * g;
      w0 -= (ADAMW.lr * (m0 / (1 - 0.9 ** (t + 1)))) / (Math.sqrt(v0 / (1 - 0.999 ** (t + 1))) + ADAMW.eps);
    });
    updateRows(state, Int32Array.from([0]), tf.tensor2d([[grads[0]!]]), ADAMW);
    updateRows(state, Int32Array.from([0, 2]), tf.tensor2d([[grads[1]!], [0.4]]), ADAMW);
    const w = state.weight.dataSync();
    expect(w[0]).toBeCloseTo(w0, 6);
    expect(w[1]).toBe(Math.fround(-0.2));
    const m2 = 0.1 * 0.4;
    const v2 = 0.001 * 0.16;
    const w2 = 1.0 * (1 - ADAMW.lr * ADAMW.weightDecay) - (ADAMW.lr * (m2 / (1 - 0.81))) / (Math.sqrt(v2 / (1 - 0.999 ** 2)) + ADAMW.eps);
    expect(w[2]).toBeCloseTo(w2, 6);
    expect(state.step).toBe(2);
    disposeShardState(state);
  });
});

describe('shard state', () => {
  it('initialises N(0, 0.01²) from the Rng, deterministically', () => {
    const a = createShardState(500, 16, 'sgd', new Rng(1));
    const b = createShardState(500, 16, 'sgd', null, new Rng(1));
    const w = a.weight.dataSync() as Float32Array;
    expect(Array.from(w)).toEqual(Array.from(b.weight.dataSync()));
    const mean = w.reduce((s, x) => s + x, 0) / w.length;
    const std = Math.sqrt(w.reduce((s, x) => s + (x - mean) ** 2, 0) / w.length);
    expect(Math.abs(mean)).toBeLessThan(5e-4);
    expect(std).toBeGreaterThan(0.0097);
    expect(std).toBeLessThan(0.0103);
    disposeShardState(a);
    disposeShardState(b);
  });

  it('gatherRows returns the active rows; bad indices are rejected', () => {
    const state = createShardState(4, 2, 'sgd', Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    expect(gatherRows(state, Int32Array.from([1, 3])).arraySync()).toEqual([
      [2, 3],
      [6, 7],
    ]);
    expect(gatherRows(state, Int32Array.from([0, 1, 2, 3])).arraySync()).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
      [6, 7],
    ]);
    expect(() => gatherRows(state, Int32Array.from([3, 1]))).toThrow(/ascending/);
    expect(() => gatherRows(state, Int32Array.from([4]))).toThrow(/outside/);
    expect(() => updateRows(state, Int32Array.from([0]), tf.zeros([2, 2]) as tf.Tensor2D, SGD)).toThrow(/gradient/);
    expect(() => updateRows(state, Int32Array.from([0]), tf.zeros([1, 2]) as tf.Tensor2D, ADAMW)).toThrow(/SGD shard/);
    disposeShardState(state);
  });
});
