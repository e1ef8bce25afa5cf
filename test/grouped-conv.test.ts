import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { groupedConv2d, groupedConv2dPerGroup, type Padding } from '../src/ops/grouped-conv.js';
import { Rng } from '../src/common/random.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function randn(shape: number[], seed: number): tf.Tensor {
  const a = new Float32Array(shape.reduce((p, q) => p * q, 1));
  new Rng(seed).fillNormal(a);
  return tf.tensor(a, shape);
}

function expectClose(a: tf.Tensor, b: tf.Tensor, tol = 1e-4): void {
  expect(a.shape).toEqual(b.shape);
  const x = a.dataSync();
  const y = b.dataSync();
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    scale = Math.max(scale, Math.abs(y[i]!));
  }
  expect(worst).toBeLessThanOrEqual(tol * Math.max(1, scale));
}

interface Case {
  label: string;
  n: number;
  size: number;
  cin: number;
  groups: number;
  factor: number;
  kernel: number;
  strides: number;
  pad: Padding;
}

// 8 input channels per group (VarGFaceNet's group_base), output factor 2 unless noted.
const CASES: Case[] = [
  { label: 'stride 1, same', n: 2, size: 7, cin: 16, groups: 2, factor: 2, kernel: 3, strides: 1, pad: 'same' },
  { label: 'stride 2, same', n: 2, size: 8, cin: 16, groups: 2, factor: 2, kernel: 3, strides: 2, pad: 'same' },
  { label: 'stride 1, valid', n: 2, size: 6, cin: 16, groups: 2, factor: 2, kernel: 3, strides: 1, pad: 'valid' },
  { label: 'stride 2, valid', n: 2, size: 9, cin: 24, groups: 3, factor: 2, kernel: 3, strides: 2, pad: 'valid' },
  { label: 'stride 2, pad 1 (PyTorch padding)', n: 2, size: 8, cin: 16, groups: 2, factor: 2, kernel: 3, strides: 2, pad: 1 },
  { label: 'factor 1 (head block)', n: 1, size: 6, cin: 16, groups: 2, factor: 1, kernel: 3, strides: 1, pad: 1 },
  { label: '7×7 valid to 1×1 (embedding block)', n: 2, size: 7, cin: 32, groups: 4, factor: 1, kernel: 7, strides: 1, pad: 'valid' },
];

describe('groupedConv2d matches one conv2d per group', () => {
  for (const c of CASES) {
    it(`${c.label}: forward and gradients w.r.t. x and filter`, () => {
      const cout = c.cin * c.factor;
      const x = randn([c.n, c.size, c.size, c.cin], 1) as tf.Tensor4D;
      const w = randn([c.kernel, c.kernel, c.cin / c.groups, cout], 2) as tf.Tensor4D;
      const args = { strides: c.strides, pad: c.pad, groups: c.groups };
      const y = groupedConv2d(x, w, args);
      const yRef = groupedConv2dPerGroup(x, w, args);
      expectClose(y, yRef);

      // a fixed random upstream gradient makes every output element count
      const dy = randn(yRef.shape, 3);
      const grads = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(groupedConv2d(a as tf.Tensor4D, b as tf.Tensor4D, args), dy)));
      const gradsRef = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(groupedConv2dPerGroup(a as tf.Tensor4D, b as tf.Tensor4D, args), dy)));
      const [gx, gw] = grads([x, w]);
      const [gxRef, gwRef] = gradsRef([x, w]);
      expectClose(gx!, gxRef!);
      expectClose(gw!, gwRef!);
      tf.dispose([x, w, y, yRef, dy, gx, gw, gxRef, gwRef]);
    });
  }

  it('7×7 valid output is 1×1 with the expected channels', () => {
    const x = randn([1, 7, 7, 64], 4) as tf.Tensor4D;
    const w = randn([7, 7, 8, 64], 5) as tf.Tensor4D;
    const y = groupedConv2d(x, w, { strides: 1, pad: 'valid', groups: 8 });
    expect(y.shape).toEqual([1, 1, 1, 64]);
    tf.dispose([x, w, y]);
  });

  it('rejects a filter whose per-group input channels do not match', () => {
    const x = tf.zeros([1, 4, 4, 16]) as tf.Tensor4D;
    const w = tf.zeros([3, 3, 4, 16]) as tf.Tensor4D;
    expect(() => groupedConv2d(x, w, { strides: 1, pad: 'same', groups: 2 })).toThrow(/per group/);
    tf.dispose([x, w]);
  });
});
