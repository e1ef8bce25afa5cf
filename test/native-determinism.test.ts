/**
 * The native kernels give the same bytes every time with 2 threads. The ones
 * at risk sum per-thread partials (every filter gradient): if which thread
 * takes which rows changed from run to run (a dynamic schedule), so would the
 * order of the float additions and the last bits of the result, and a resumed
 * run with threads > 1 would drift from a straight one.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { tf } from '../src/ops/tf.js';
import { groupedConv2d } from '../src/ops/grouped-conv.js';
import { registerNativeKernels } from '../src/ops/native/register.js';

const RUNS = 8;

beforeAll(async () => {
  const r = registerNativeKernels({ threads: 2 });
  if (!r.ok) throw new Error(`native kernels must load in CI: ${r.reason}`);
  await tf.setBackend('cpu-native');
});

const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
const digest = (t: tf.Tensor) =>
  createHash('sha256')
    .update(Buffer.from((t.dataSync() as Float32Array).buffer))
    .digest('hex');

/** ∂/∂w of Σ (f(x, w) · r) for a fixed random r. */
function filterGrad(f: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D, xShape: number[], wShape: number[]): () => tf.Tensor {
  const x = rnd(xShape, 11) as tf.Tensor4D;
  const w = rnd(wShape, 12) as tf.Tensor4D;
  const r = tf.keep(rnd(f(x, w).shape, 13));
  return () =>
    tf.grad((ww: tf.Tensor) =>
      f(x, ww as tf.Tensor4D)
        .mul(r)
        .sum(),
    )(w);
}

const CASES: [string, () => () => tf.Tensor][] = [
  ['conv 3×3 stride 1', () => filterGrad((x, w) => tf.conv2d(x, w, 1, 'same'), [16, 28, 28, 32], [3, 3, 32, 64])],
  ['conv 3×3 stride 2', () => filterGrad((x, w) => tf.conv2d(x, w, 2, 'same'), [16, 28, 28, 32], [3, 3, 32, 64])],
  ['conv 1×1', () => filterGrad((x, w) => tf.conv2d(x, w, 1, 'same'), [16, 28, 28, 64], [1, 1, 64, 128])],
  ['grouped 3×3, 10 groups of 8 → 16', () => filterGrad((x, w) => groupedConv2d(x, w, { strides: 1, pad: 'same', groups: 10 }), [8, 28, 28, 80], [3, 3, 8, 160])],
  ['grouped 3×3, 32 groups of 2', () => filterGrad((x, w) => groupedConv2d(x, w, { strides: 1, pad: 'same', groups: 32 }), [8, 28, 28, 64], [3, 3, 2, 64])],
  ['depthwise 3×3', () => filterGrad((x, w) => tf.depthwiseConv2d(x, w, 1, 'same'), [16, 28, 28, 64], [3, 3, 64, 1])],
];

describe('native kernels with 2 threads are deterministic', () => {
  for (const [name, make] of CASES) {
    it(`${name}: the filter gradient has the same bytes in ${RUNS} runs`, () => {
      const run = make();
      const seen = new Set<string>();
      for (let i = 0; i < RUNS; i++) seen.add(tf.tidy(() => digest(run())));
      expect(seen.size).toBe(1);
    });
  }
});
