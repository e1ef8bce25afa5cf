/**
 * Fused BatchNorm (training mode) / BatchNorm + PReLU / PReLU (src/ops/norm-act.ts):
 * the native kernels on `cpu-native` against the tfjs composite that runs on the
 * stock `cpu` backend (the model's code before the native kernels, and what runs
 * on GPU), forward and through tf.grads with respect to x, γ, β and α, and whole
 * backbones' embeddings, gradients and running statistics.
 * Tolerance: max |native − composite| ≤ TOL · max |composite| per output tensor.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { nativeKernelCounts, registerNativeKernels } from '../src/ops/native/register.js';
import { batchNormPrelu, batchNormTrain, prelu, setNativeNormAct } from '../src/ops/norm-act.js';
import { createBackbone, type BackboneName } from '../src/models/index.js';
import { Rng } from '../src/common/random.js';

const TOL = 1e-4;
let seed = 1;

function rand(shape: number[], lo = -1, hi = 1): tf.Tensor {
  return tf.tidy(() => tf.randomUniform(shape, lo, hi, 'float32', seed++));
}

type Got = { shape: number[]; values: Float32Array };

function relErr(want: Got, got: Got): { err: number; scale: number } {
  expect(got.shape).toEqual(want.shape);
  let scale = 1e-30,
    err = 0;
  for (const v of want.values) scale = Math.max(scale, Math.abs(v));
  for (let j = 0; j < want.values.length; j++) err = Math.max(err, Math.abs(got.values[j]! - want.values[j]!));
  return { err: err / scale, scale };
}

/** Runs `f` on `cpu` (composite) and `cpu-native` (native kernels) and compares every output. */
async function compare(f: () => tf.Tensor[], tol = TOL): Promise<void> {
  const run = async (backend: string): Promise<Got[]> => {
    await tf.setBackend(backend);
    return tf.tidy(() => f().map((t) => ({ shape: t.shape, values: t.dataSync() as Float32Array })));
  };
  const want = await run('cpu');
  const got = await run('cpu-native');
  await tf.setBackend('cpu');
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const { err, scale } = relErr(want[i]!, got[i]!);
    expect(err, `output ${i}: relative error ${err} at scale ${scale}`).toBeLessThanOrEqual(tol);
  }
}

/** Asserts that each kernel ran natively (count increased) during `body`. */
async function ranNatively(kernels: string[], body: () => Promise<void>): Promise<void> {
  const before = nativeKernelCounts();
  await body();
  const after = nativeKernelCounts();
  for (const k of kernels) {
    expect(after[k], `${k} is registered`).toBeDefined();
    expect(after[k]!.native, `${k} ran natively`).toBeGreaterThan(before[k]?.native ?? 0);
    expect(after[k]!.stock, `${k} never fell back`).toBe(0);
  }
}

beforeAll(() => {
  const r = registerNativeKernels({ threads: 2 });
  if (!r.ok) throw new Error(`native kernels must load in CI: ${r.reason}`);
});

// [B, C] (BatchNorm1d), NHWC, odd channel counts, batch 1 with spatial > 1, and one
// large enough (> 64K elements) for the kernels to split rows across threads.
const SHAPES: number[][] = [
  [8, 5],
  [3, 512],
  [1, 3, 4, 7],
  [3, 5, 6, 16],
  [2, 9, 9, 33],
  [4, 1, 1, 3],
  [4, 40, 40, 48],
];

describe('native BatchNorm (training mode) against the composite', () => {
  for (const shape of SHAPES) {
    const c = shape[shape.length - 1]!;
    for (const withPrelu of [false, true]) {
      it(`${JSON.stringify(shape)}${withPrelu ? ' + PReLU' : ''}: y, mean, variance and gradients w.r.t. x, γ, β${withPrelu ? ', α' : ''} (also through mean and variance)`, async () => {
        // An offset and a scale per tensor, so the statistics are not the trivial ones.
        const x = tf.tidy(() => rand(shape, -2, 2).mul(1.5).add(0.7));
        const gamma = rand([c], 0.5, 1.5),
          beta = rand([c], -0.5, 0.5),
          alpha = rand([c], 0, 0.5);
        const ry = rand(shape),
          rm = rand([c]),
          rv = rand([c]);
        const fwd = (xx: tf.Tensor, g: tf.Tensor, b: tf.Tensor, a: tf.Tensor) => (withPrelu ? batchNormPrelu(xx, g, b, a, 1e-5) : batchNormTrain(xx, g, b, 1e-3));
        // A loss that reaches y, mean and variance: every input to the backward kernel matters.
        const loss = (xx: tf.Tensor, g: tf.Tensor, b: tf.Tensor, a: tf.Tensor): tf.Tensor => {
          const { y, mean, variance } = fwd(xx, g, b, a);
          return tf.addN([y.mul(ry).sum(), mean.mul(rm).sum(), variance.mul(rv).sum()]);
        };
        const lossYOnly = (xx: tf.Tensor, g: tf.Tensor, b: tf.Tensor, a: tf.Tensor): tf.Tensor => fwd(xx, g, b, a).y.mul(ry).sum();
        const args = withPrelu ? [x, gamma, beta, alpha] : [x, gamma, beta];
        const names = withPrelu ? ['SfBatchNormPrelu', 'SfBatchNormTrainBackprop'] : ['SfBatchNormTrain', 'SfBatchNormTrainBackprop'];
        await ranNatively(names, () =>
          compare(() => {
            const { y, mean, variance } = fwd(x, gamma, beta, alpha);
            const all = (xs: tf.Tensor[]) => (withPrelu ? loss(xs[0]!, xs[1]!, xs[2]!, xs[3]!) : loss(xs[0]!, xs[1]!, xs[2]!, alpha));
            const yOnly = (xs: tf.Tensor[]) => (withPrelu ? lossYOnly(xs[0]!, xs[1]!, xs[2]!, xs[3]!) : lossYOnly(xs[0]!, xs[1]!, xs[2]!, alpha));
            return [y, mean, variance, ...tf.grads((...xs: tf.Tensor[]) => all(xs))(args), ...tf.grads((...xs: tf.Tensor[]) => yOnly(xs))(args)];
          }),
        );
        tf.dispose([x, gamma, beta, alpha, ry, rm, rv]);
      });
    }
  }

  it('normalises to zero mean and unit variance (γ = 1, β = 0), mean/variance are the biased batch statistics', async () => {
    await tf.setBackend('cpu-native');
    const x = tf.tidy(() => rand([6, 5, 4, 9], -3, 3).add(10)); // large offset: the statistics must not cancel
    const { y, mean, variance } = batchNormTrain(x, tf.ones([9]), tf.zeros([9]), 0);
    const m = tf.moments(y, [0, 1, 2]);
    expect(Math.max(...(m.mean.abs().dataSync() as Float32Array))).toBeLessThan(1e-5);
    expect(Math.max(...(m.variance.sub(1).abs().dataSync() as Float32Array))).toBeLessThan(1e-4);
    const ref = tf.moments(x, [0, 1, 2]);
    expect(Math.max(...(mean.sub(ref.mean).abs().dataSync() as Float32Array))).toBeLessThan(1e-5);
    expect(Math.max(...(variance.sub(ref.variance).abs().dataSync() as Float32Array))).toBeLessThan(1e-4);
    tf.dispose([x, y, mean, variance, m.mean, m.variance, ref.mean, ref.variance]);
    await tf.setBackend('cpu');
  });

  it('falls back to the composite where the kernels do not apply (γ not per channel, native turned off)', async () => {
    await tf.setBackend('cpu-native');
    const before = nativeKernelCounts()['SfBatchNormTrain']!.native;
    const x = rand([2, 3, 3, 4]);
    const composite = tf.tidy(() => batchNormTrain(x, tf.ones([3, 4]), tf.zeros([4]), 1e-5).y.dataSync());
    setNativeNormAct(false);
    try {
      const off = tf.tidy(() => batchNormTrain(x, tf.ones([4]), tf.zeros([4]), 1e-5).y.dataSync());
      expect(Array.from(off)).toEqual(Array.from(composite));
    } finally {
      setNativeNormAct(true);
    }
    expect(nativeKernelCounts()['SfBatchNormTrain']!.native).toBe(before);
    x.dispose();
    await tf.setBackend('cpu');
  });
});

describe('native PReLU against tf.prelu', () => {
  const cases: Array<[number[], number[]]> = [
    [[7], [7]],
    [[8, 5], [5]],
    [[1, 3, 4, 7], [7]],
    [[2, 9, 9, 33], [33]],
    [
      [2, 9, 9, 33],
      [1, 1, 33],
    ],
    [[3, 5, 6, 16], [1]],
    [[4, 40, 40, 48], [48]],
  ];
  for (const [shape, aShape] of cases) {
    it(`x ${JSON.stringify(shape)}, α ${JSON.stringify(aShape)}: forward and gradients w.r.t. x and α`, async () => {
      // Values on a grid of 0.25 include exact zeros: x = 0 takes the α branch (as tf.prelu's gradient).
      const x = tf.tidy(() => rand(shape, -2, 2).mul(4).round().div(4));
      const alpha = rand(aShape, 0, 0.5);
      const r = rand(shape);
      await ranNatively(['SfPrelu', 'SfPreluBackprop'], () => compare(() => [prelu(x, alpha), ...tf.grads((xx: tf.Tensor, a: tf.Tensor) => prelu(xx, a).mul(r).sum())([x, alpha])]));
      tf.dispose([x, alpha, r]);
    });
  }

  it('α that is not per channel runs tf.prelu', async () => {
    await tf.setBackend('cpu-native');
    const before = nativeKernelCounts()['SfPrelu']!.native;
    const x = rand([2, 3, 4]),
      alpha = rand([3, 4], 0, 0.5);
    const y = prelu(x, alpha),
      want = tf.prelu(x, alpha);
    expect(Array.from(y.dataSync())).toEqual(Array.from(want.dataSync()));
    expect(nativeKernelCounts()['SfPrelu']!.native).toBe(before);
    tf.dispose([x, alpha, y, want]);
    await tf.setBackend('cpu');
  });
});

describe('whole backbones: native BatchNorm/PReLU against the composite', () => {
  interface RunOpts {
    backend: string;
    native: boolean;
    /** Every PReLU slope set to this (default: the initialisation, 0.25). */
    alpha?: number;
    /** Every 7th input value multiplied by (1 + perturb): a rounding-size change of the input. */
    perturb?: number;
  }

  function input(b: number, s: number, perturb: number): tf.Tensor4D {
    const a = new Float32Array(b * s * s * 3);
    new Rng(11).fillNormal(a);
    if (perturb) for (let i = 0; i < a.length; i += 7) a[i] = a[i]! * (1 + perturb);
    return tf.tensor4d(a, [b, s, s, 3]);
  }

  /** Embeddings, every trainable variable's gradient of sum(emb · r), the running statistics after one update, eval embeddings. */
  async function run(o: RunOpts, name: BackboneName, batch: number, size: number): Promise<Map<string, Got>> {
    await tf.setBackend(o.backend);
    setNativeNormAct(o.native);
    try {
      const net = createBackbone(name, { seed: 3, inputSize: size });
      const x = input(batch, size, o.perturb ?? 0);
      const out = new Map<string, Got>();
      const keep = (k: string, t: tf.Tensor): void => void out.set(k, { shape: t.shape, values: t.dataSync() as Float32Array });
      const vars = net.trainableVariables();
      if (o.alpha !== undefined) for (const v of vars) if (v.name.endsWith('.alpha')) v.variable.assign(tf.fill(v.variable.shape, o.alpha));
      const emb = net.apply(x, true, { updateStats: false });
      const r = tf.tidy(() => tf.randomUniform(emb.shape, -1, 1, 'float32', 5));
      keep('embedding', emb);
      const { value, grads } = tf.variableGrads(
        () => net.apply(x, true).mul(r).sum() as tf.Scalar,
        vars.map((v) => v.variable),
      );
      for (const v of vars) keep(`grad ${v.name}`, grads[v.variable.name]!);
      for (const [k, v] of net.state()) if (k.endsWith('.runningMean') || k.endsWith('.runningVar')) keep(k, v);
      const evalEmb = net.apply(x, false);
      keep('eval embedding', evalEmb);
      tf.dispose([x, emb, r, value, evalEmb, ...Object.values(grads)]);
      net.dispose();
      return out;
    } finally {
      setNativeNormAct(true);
      await tf.setBackend('cpu');
    }
  }

  /**
   * The largest relative difference over all tensors. Some values are zero in exact
   * arithmetic and rounding noise on both sides: the gradient of a bias or β that
   * feeds only a training-mode BatchNorm (which removes any per-channel constant), the
   * running mean of a conv over a BatchNorm's output. So each gradient is measured
   * against at least 1% of the model's largest gradient, each other tensor against at
   * least 1e-2 (embeddings and running statistics are O(1)).
   */
  function worstError(want: Map<string, Got>, got: Map<string, Got>): { key: string; err: number } {
    expect([...got.keys()]).toEqual([...want.keys()]);
    let gradScale = 0;
    for (const [k, w] of want) if (k.startsWith('grad ')) for (const v of w.values) gradScale = Math.max(gradScale, Math.abs(v));
    let worst = { key: '', err: 0 };
    for (const [k, w] of want) {
      const { err, scale } = relErr(w, got.get(k)!);
      const e = (err * scale) / Math.max(scale, k.startsWith('grad ') ? 0.01 * gradScale : 1e-2);
      if (process.env.DEBUG_NORM_ACT) console.log(k.padEnd(48), scale.toExponential(2), e.toExponential(2));
      if (e > worst.err) worst = { key: k, err: e };
    }
    return worst;
  }

  async function native(name: BackboneName, batch: number, size: number, alpha?: number): Promise<Map<string, Got>> {
    let got!: Map<string, Got>;
    await ranNatively(['SfBatchNormPrelu', 'SfBatchNormTrain', 'SfBatchNormTrainBackprop'], async () => {
      got = await run({ backend: 'cpu-native', native: true, alpha }, name, batch, size);
    });
    return got;
  }

  it('tiny (batch 6, 32 px) against the stock cpu backend', async () => {
    const want = await run({ backend: 'cpu', native: false }, 'tiny', 6, 32);
    const worst = worstError(want, await native('tiny', 6, 32));
    expect(worst.err, `worst: ${worst.key}`).toBeLessThanOrEqual(TOL);
  });

  // The stock cpu backend takes ~5 minutes for a MobileFaceNet step (its conv
  // backprop-filter), so the composite runs on cpu-native's native convolutions,
  // which native-kernels.test.ts checks against stock.
  //
  // At initialisation MobileFaceNet's gradients are ill-conditioned with respect to
  // rounding: PReLU's kink and BatchNorms over few values (the BN1d head over the
  // batch) turn a one-ulp change of the input into 1e-3…1e-1 relative changes of some
  // gradients, for the composite against itself. With every slope at 1 the network is
  // smooth and both implementations must agree to TOL; at the initial slopes they must
  // agree as closely as the composite agrees with itself after a rounding-size change.
  it('mobilefacenet (batch 4, 112 px, PReLU slopes 1: smooth) against the composite on cpu-native', async () => {
    const want = await run({ backend: 'cpu-native', native: false, alpha: 1 }, 'mobilefacenet', 4, 112);
    const worst = worstError(want, await native('mobilefacenet', 4, 112, 1));
    expect(worst.err, `worst: ${worst.key}`).toBeLessThanOrEqual(TOL);
  }, 120_000);

  it('mobilefacenet (batch 2, 112 px, initial slopes) against the composite, within its own rounding sensitivity', async () => {
    const want = await run({ backend: 'cpu-native', native: false }, 'mobilefacenet', 2, 112);
    const perturbed = worstError(want, await run({ backend: 'cpu-native', native: false, perturb: 1e-7 }, 'mobilefacenet', 2, 112));
    const worst = worstError(want, await native('mobilefacenet', 2, 112));
    if (process.env.DEBUG_NORM_ACT) console.log('composite vs perturbed composite', perturbed, 'composite vs native', worst);
    expect(worst.err, `worst: ${worst.key}; composite vs itself perturbed: ${perturbed.err} (${perturbed.key})`).toBeLessThanOrEqual(Math.max(TOL, 4 * perturbed.err));
  }, 120_000);
});
