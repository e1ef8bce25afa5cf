/**
 * BatchNorm through TensorFlow's fused training ops (src/ops/fused-batch-norm.ts),
 * the tensorflow backend's path, against the tfjs composite.
 *
 * tfjs-node cannot run here, so the two kernels the path dispatches to are
 * registered for `cpu` with a stand-in written from TensorFlow's documented
 * semantics of FusedBatchNormV3 / FusedBatchNormGradV3 in training mode (outputs:
 * y, batch mean, Bessel-corrected batch variance, and reserve spaces that the
 * CPU kernel fills with the mean and the biased variance; the backward from dy
 * alone). Everything of ours then runs for real: the dispatch in norm-act.ts,
 * the [n,1,1,C] view of any rank, the variance rescaling, the gradient config
 * (saved tensors, the statistics' own gradient terms, statsGradient) and the
 * model runner's use of it; values and gradients must match the composite.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { initBackend } from '../src/ops/backend.js';
import { FUSED_BN_GRAD_KERNEL, FUSED_BN_KERNEL } from '../src/ops/fused-batch-norm.js';
import { batchNormPrelu, batchNormTrain, setNativeNormAct } from '../src/ops/norm-act.js';
import { createBackbone } from '../src/models/index.js';
import { Rng } from '../src/common/random.js';

const TOL = 2e-5;
const calls = { forward: 0, backward: 0 };

/** TensorFlow's FusedBatchNormV3, is_training, NHWC, exponential_avg_factor 1 (its CPU kernel's outputs). */
const standInForward: tf.KernelFunc = ({ inputs, attrs }) =>
  tf.tidy(() => {
    calls.forward++;
    const x = inputs.x as tf.Tensor4D;
    const { epsilon } = attrs as unknown as { epsilon: number };
    const n = x.size / x.shape[3];
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    const y = tf.add(tf.mul(tf.sub(x, mean), tf.mul(inputs.gamma as tf.Tensor, tf.rsqrt(tf.add(variance, epsilon)))), inputs.beta as tf.Tensor);
    return [y, mean, tf.mul(variance, n / (n - 1)), tf.clone(mean), tf.clone(variance), tf.zeros([1])];
  }) as unknown as tf.TensorInfo[];

/** TensorFlow's FusedBatchNormGradV3, is_training: dx, dγ, dβ from dy and the reserve spaces (mean, biased variance). */
const standInBackward: tf.KernelFunc = ({ inputs, attrs }) =>
  tf.tidy(() => {
    calls.backward++;
    const dy = inputs.dy as tf.Tensor4D,
      x = inputs.x as tf.Tensor4D;
    const { epsilon } = attrs as unknown as { epsilon: number };
    const inv = tf.rsqrt(tf.add(inputs.reserve2 as tf.Tensor, epsilon));
    const xhat = tf.mul(tf.sub(x, inputs.reserve1 as tf.Tensor), inv);
    const dbeta = tf.sum(dy, [0, 1, 2]);
    const dgamma = tf.sum(tf.mul(dy, xhat), [0, 1, 2]);
    const n = x.size / x.shape[3];
    const dx = tf.mul(tf.mul(inputs.gamma as tf.Tensor, inv), tf.sub(tf.sub(dy, tf.div(dbeta, n)), tf.mul(xhat, tf.div(dgamma, n))));
    return [dx, dgamma, dbeta];
  }) as unknown as tf.TensorInfo[];

beforeAll(async () => {
  await initBackend('cpu'); // registers the path's gradient (and the kernels for tensorflow)
  expect(tf.getKernel(FUSED_BN_KERNEL, 'tensorflow')).toBeDefined();
  expect(tf.getKernel(FUSED_BN_GRAD_KERNEL, 'tensorflow')).toBeDefined();
  tf.registerKernel({ kernelName: FUSED_BN_KERNEL, backendName: 'cpu', kernelFunc: standInForward });
  tf.registerKernel({ kernelName: FUSED_BN_GRAD_KERNEL, backendName: 'cpu', kernelFunc: standInBackward });
});

let seed = 1;
const rand = (shape: number[], lo = -1, hi = 1) => tf.tidy(() => tf.randomUniform(shape, lo, hi, 'float32', seed++));

type Got = { shape: number[]; values: Float32Array };

/**
 * `f` with the fused path and with the composite; every output must agree to TOL of its scale
 * (its largest magnitude, or `floors[i]` where larger: values that are zero in exact arithmetic).
 */
function compare(f: () => tf.Tensor[], expectCalls: { forward: boolean; backward: boolean }, tol = TOL, floors?: (want: Got[]) => number[]): void {
  const run = (fused: boolean) => {
    setNativeNormAct(fused);
    try {
      return tf.tidy(() => f().map((t) => ({ shape: t.shape, values: Float32Array.from(t.dataSync()) })));
    } finally {
      setNativeNormAct(true);
    }
  };
  const before = { ...calls };
  const want = run(false);
  expect(calls).toEqual(before);
  const got = run(true);
  expect(calls.forward > before.forward, 'the fused forward ran').toBe(expectCalls.forward);
  expect(calls.backward > before.backward, 'the fused backward ran').toBe(expectCalls.backward);
  expect(got.length).toBe(want.length);
  const floor = floors?.(want);
  want.forEach((w, i) => {
    expect(got[i]!.shape).toEqual(w.shape);
    let scale = floor?.[i] ?? 1e-30,
      err = 0;
    for (const v of w.values) scale = Math.max(scale, Math.abs(v));
    w.values.forEach((v, j) => (err = Math.max(err, Math.abs(got[i]!.values[j]! - v))));
    expect(err / scale, `output ${i}`).toBeLessThanOrEqual(tol);
  });
}

describe('BatchNorm via the fused training ops against the composite', () => {
  for (const shape of [
    [8, 5],
    [3, 4, 7],
    [3, 5, 6, 16],
    [2, 9, 9, 33],
  ]) {
    const c = shape[shape.length - 1]!;
    it(`${JSON.stringify(shape)}: y, mean, variance; gradients of losses through y only and through the statistics too`, () => {
      const x = tf.tidy(() => rand(shape, -2, 2).mul(1.5).add(0.7));
      const [gamma, beta, ry, rm, rv] = [rand([c], 0.5, 1.5), rand([c], -0.5, 0.5), rand(shape), rand([c]), rand([c])];
      const args = [x, gamma, beta];
      compare(
        () => {
          const { y, mean, variance } = batchNormTrain(x, gamma, beta, 1e-5);
          const all = tf.grads((xx: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
            const r = batchNormTrain(xx, g, b, 1e-5);
            return tf.addN([r.y.mul(ry).sum(), r.mean.mul(rm).sum(), r.variance.mul(rv).sum()]);
          })(args);
          // the model runner's mode: statistics outside the loss, their gradient terms skipped
          const yOnly = tf.grads((xx: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => batchNormTrain(xx, g, b, 1e-5, { statsGradient: false }).y.mul(ry).sum())(args);
          return [y, mean, variance, ...all, ...yOnly];
        },
        { forward: true, backward: true },
      );
      tf.dispose([x, gamma, beta, ry, rm, rv]);
    });
  }

  it('BatchNorm + PReLU: the fused BatchNorm, then tf.prelu', () => {
    const shape = [2, 6, 6, 8];
    const x = rand(shape, -2, 2);
    const [gamma, beta, alpha, r] = [rand([8], 0.5, 1.5), rand([8]), rand([8], 0, 0.5), rand(shape)];
    compare(() => [batchNormPrelu(x, gamma, beta, alpha, 1e-5).y, ...tf.grads((xx: tf.Tensor, a: tf.Tensor) => batchNormPrelu(xx, gamma, beta, a, 1e-5).y.mul(r).sum())([x, alpha])], {
      forward: true,
      backward: true,
    });
    tf.dispose([x, gamma, beta, alpha, r]);
  });

  it('γ that is not one per channel keeps the composite', () => {
    const x = rand([2, 3, 3, 4]);
    compare(() => [batchNormTrain(x, tf.ones([3, 4]), tf.zeros([4]), 1e-5).y], { forward: false, backward: false });
    x.dispose();
  });

  // As in native-norm-act.test.ts, some values are zero in exact arithmetic and rounding noise on
  // both sides (the gradient of a β that feeds only a training-mode BatchNorm, which removes any
  // per-channel constant): each gradient is measured against at least 1% of the model's largest
  // gradient, each other tensor against at least 1e-2.
  it('a whole backbone (tiny, batch 6, 32 px): embeddings, every gradient and the running statistics', () => {
    let grads = 0;
    const a = new Float32Array(6 * 32 * 32 * 3);
    new Rng(11).fillNormal(a);
    const r = new Rng(12).fillNormal(new Float32Array(6 * 64), 0, 1);
    compare(
      () => {
        const net = createBackbone('tiny', { seed: 3, inputSize: 32, embeddingSize: 64 });
        const x = tf.tensor4d(a, [6, 32, 32, 3]);
        const vars = net.trainableVariables();
        const { grads: grads_ } = tf.variableGrads(
          () =>
            net
              .apply(x, true)
              .mul(tf.tensor2d(r, [6, 64]))
              .sum() as tf.Scalar,
          vars.map((v) => v.variable),
        );
        const stats = [...net.state()].filter(([k]) => k.endsWith('.runningMean') || k.endsWith('.runningVar')).map(([, v]) => tf.clone(v));
        grads = vars.length;
        const out = [net.apply(x, false), ...vars.map((v) => grads_[v.variable.name]!), ...stats];
        net.dispose();
        return out;
      },
      { forward: true, backward: true },
      1e-4, // float32 rounding compounds through the layers (the native kernels' comparison allows the same)
      (want) => {
        const gradScale = Math.max(...want.slice(1, 1 + grads).map((g) => g.values.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
        return want.map((_, i) => (i >= 1 && i <= grads ? 0.01 * gradScale : 1e-2));
      },
    );
  });
});
