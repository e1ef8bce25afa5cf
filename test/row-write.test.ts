/**
 * The classifier's sparse update writing rows in place (SfWriteRows,
 * src/ops/row-write.ts) against the tf.tensorScatterUpdate path it replaces on
 * the tensorflow backend: both run here on the cpu backend, step after step,
 * and must agree bit for bit, while the in-place one keeps each variable's
 * buffer (O(|active|·D) per step) and spares tensors that share it.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { Rng } from '../src/common/random.js';
import { initBackend } from '../src/ops/backend.js';
import { ROW_WRITE_KERNEL } from '../src/ops/row-write.js';
import { createShardState, disposeShardState, updateRows, type ShardState } from '../src/ops/row-optimizer.js';

beforeAll(async () => {
  await initBackend('cpu');
});

const SGD = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 };
const ADAMW = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

const buffers = (s: ShardState) => [s.weight, s.momentum, s.expAvg, s.expAvgSq].filter((b): b is tf.Variable<tf.Rank.R2> => b !== null);
const bits = (t: tf.Tensor) => new Uint32Array(Float32Array.from(t.dataSync()).buffer);

/** A strictly ascending random subset of [0, count), never empty, never every row. */
function activeRows(rng: Rng, count: number): Int32Array {
  const rows: number[] = [];
  for (let r = 0; r < count; r++) if (rng.next() < 0.3) rows.push(r);
  if (rows.length === 0) rows.push(Math.floor(rng.next() * count));
  if (rows.length === count) rows.pop();
  return Int32Array.from(rows);
}

describe('SfWriteRows', () => {
  it('is registered for the cpu and tensorflow backends', () => {
    expect(tf.getKernel(ROW_WRITE_KERNEL, 'cpu')).toBeDefined();
    expect(tf.getKernel(ROW_WRITE_KERNEL, 'tensorflow')).toBeDefined();
  });

  it('writes the rows into the buffer, copies a shared one first, rejects bad input', () => {
    const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [3, 2]);
    const idx = tf.tensor1d([0, 2], 'int32');
    const rows = tf.tensor2d([10, 11, 30, 31], [2, 2]);
    const out = tf.engine().runKernel(ROW_WRITE_KERNEL, { x, index: idx, rows }) as tf.Tensor;
    expect(out.dataId).toBe(x.dataId);
    expect(Array.from(x.dataSync())).toEqual([10, 11, 3, 4, 30, 31]);
    out.dispose();
    const alias = tf.clone(x);
    const copied = tf.engine().runKernel(ROW_WRITE_KERNEL, { x, index: tf.tensor1d([1], 'int32'), rows: tf.tensor2d([[7, 8]]) }) as tf.Tensor;
    expect(copied.dataId).not.toBe(x.dataId);
    expect(Array.from(copied.dataSync())).toEqual([10, 11, 7, 8, 30, 31]);
    expect(Array.from(alias.dataSync())).toEqual([10, 11, 3, 4, 30, 31]);
    expect(() => tf.engine().runKernel(ROW_WRITE_KERNEL, { x, index: tf.tensor1d([3], 'int32'), rows: tf.tensor2d([[0, 0]]) })).toThrow(/row 3 outside \[0, 3\)/);
    expect(() => tf.engine().runKernel(ROW_WRITE_KERNEL, { x, index: idx, rows: tf.tensor2d([[0, 0]]) })).toThrow(/rows \[1,2\] at 2 indices into \[3,2\]/);
    tf.dispose([x, idx, rows, alias, copied]);
  });
});

describe('updateRows, rows written in place vs scattered', () => {
  for (const kind of ['sgd', 'adamw'] as const)
    it(`${kind}: bit-identical over 6 steps of random active rows, each variable kept in its own buffer`, () => {
      const count = 37;
      const dim = 12;
      const hp = kind === 'sgd' ? SGD : ADAMW;
      const init = new Rng(11).fillNormal(new Float32Array(count * dim), 0, 0.01);
      const scattered = createShardState(count, dim, kind, init);
      const inPlace = createShardState(count, dim, kind, init);
      const rng = new Rng(12);
      for (let step = 0; step < 6; step++) {
        const index = activeRows(rng, count);
        const g = new Rng(100 + step).fillNormal(new Float32Array(index.length * dim), 0, 1);
        const ids = buffers(inPlace).map((b) => b.dataId);
        // a tensor sharing the weight's buffer (the in-place write must leave it alone)
        const alias = step === 3 ? tf.clone(inPlace.weight) : null;
        const aliasBefore = alias ? bits(alias) : null;
        updateRows(scattered, index, tf.tensor2d(g, [index.length, dim]), hp, { rowWrite: 'scatter' });
        updateRows(inPlace, index, tf.tensor2d(g, [index.length, dim]), hp);
        buffers(scattered).forEach((b, k) => expect(bits(buffers(inPlace)[k]!), `${kind} step ${step} buffer ${k}`).toEqual(bits(b)));
        if (alias) {
          expect(bits(alias)).toEqual(aliasBefore);
          alias.dispose();
        } else buffers(inPlace).forEach((b, k) => expect(b.dataId, `step ${step} buffer ${k} updated in place`).toBe(ids[k]));
      }
      expect(inPlace.step).toBe(6);
      disposeShardState(scattered);
      disposeShardState(inPlace);
    });

  it('every row in order: both paths assign whole variables alike', () => {
    const a = createShardState(5, 3, 'sgd', new Rng(4));
    const b = createShardState(5, 3, 'sgd', new Rng(4));
    const all = Int32Array.from([0, 1, 2, 3, 4]);
    const g = new Rng(5).fillNormal(new Float32Array(15), 0, 1);
    updateRows(a, all, tf.tensor2d(g, [5, 3]), SGD, { rowWrite: 'scatter' });
    updateRows(b, all, tf.tensor2d(g, [5, 3]), SGD);
    expect(bits(b.weight)).toEqual(bits(a.weight));
    expect(bits(b.momentum!)).toEqual(bits(a.momentum!));
    disposeShardState(a);
    disposeShardState(b);
  });
});
