import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { l2Normalize, l2NormalizeGrad, l2NormalizeGradFromRaw, l2NormalizeWithNorm } from '../src/ops/normalize.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const X = [
  [3, 4, 0],
  [1, -2, 2],
  [0.5, 0.1, -0.3],
];
const G = [
  [0.2, -0.7, 1.1],
  [-0.3, 0.4, 0.05],
  [1.5, 0.25, -0.6],
];

/** docs/methods.md#normalisation backward in float64: (g − (g·v̂)v̂)/‖v‖. */
function spec64(x: number[], g: number[]): number[] {
  const n = Math.hypot(...x);
  const u = x.map((v) => v / n);
  const gu = g.reduce((a, v, i) => a + v * u[i]!, 0);
  return g.map((v, i) => (v - gu * u[i]!) / n);
}

describe('l2Normalize', () => {
  it('divides each row by its norm', () => {
    const y = tf.tidy(() => l2Normalize(tf.tensor2d(X)).arraySync());
    expect(y[0]).toEqual([0.6, 0.8, 0].map((v) => expect.closeTo(v, 6)));
    for (const row of y) expect(Math.hypot(...row)).toBeCloseTo(1, 6);
  });

  it('its gradient is the docs/methods.md#normalisation formula, matches plain autograd and finite differences', () => {
    const [custom, auto] = tf.tidy(() => {
      const x = tf.tensor2d(X);
      const g = tf.tensor2d(G);
      const f = (v: tf.Tensor) => tf.sum(tf.mul(l2Normalize(v as tf.Tensor2D), g)) as tf.Scalar;
      const plain = (v: tf.Tensor) => tf.sum(tf.mul(tf.div(v, tf.maximum(tf.norm(v, 'euclidean', 1, true), 1e-12)), g)) as tf.Scalar;
      return [tf.grad(f)(x).arraySync() as number[][], tf.grad(plain)(x).arraySync() as number[][]];
    });
    X.forEach((x, i) => {
      const want = spec64(x, G[i]!);
      // finite differences of Σ g·n(x) in float64
      const h = 1e-6;
      const fd = x.map((_, j) => {
        const p = x.slice();
        const m = x.slice();
        p[j]! += h;
        m[j]! -= h;
        const val = (v: number[]) => {
          const n = Math.hypot(...v);
          return v.reduce((a, c, k) => a + (c / n) * G[i]![k]!, 0);
        };
        return (val(p) - val(m)) / (2 * h);
      });
      want.forEach((w, j) => {
        expect(custom[i]![j]!).toBeCloseTo(w, 5);
        expect(auto[i]![j]!).toBeCloseTo(w, 5);
        expect(fd[j]!).toBeCloseTo(w, 6);
      });
    });
  });

  it('an all-zero row stays finite: value 0, gradient g / 1e-12 (PyTorch F.normalize)', () => {
    const [y, g] = tf.tidy(() => {
      const x = tf.tensor2d([
        [0, 0],
        [3, 4],
      ]);
      const up = tf.tensor2d([
        [1e-13, -2e-13],
        [1, 1],
      ]);
      const y = l2Normalize(x).arraySync();
      const g = tf
        .grad((v: tf.Tensor) => tf.sum(tf.mul(l2Normalize(v as tf.Tensor2D), up)))(x)
        .arraySync() as number[][];
      return [y, g];
    });
    expect(y[0]).toEqual([0, 0]);
    expect(g[0]![0]).toBeCloseTo(0.1, 5);
    expect(g[0]![1]).toBeCloseTo(-0.2, 5);
  });

  it('l2NormalizeGrad (and its raw-row form) is the customGrad backward', () => {
    const diff = tf.tidy(() => {
      const x = tf.tensor2d(X);
      const g = tf.tensor2d(G);
      const { unit, norm } = l2NormalizeWithNorm(x);
      const manual = l2NormalizeGrad(g, unit, norm);
      const auto = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(l2Normalize(v as tf.Tensor2D), g)))(x);
      const fromRaw = l2NormalizeGradFromRaw(g, x, norm);
      return [tf.max(tf.abs(tf.sub(manual, auto))).dataSync()[0]!, tf.max(tf.abs(tf.sub(fromRaw, auto))).dataSync()[0]!];
    });
    expect(diff[0]).toBe(0);
    expect(diff[1]).toBeLessThan(1e-6);
  });
});
