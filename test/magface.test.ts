import { describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { MAGFACE_DEFAULTS, magMargin, magRegulariser, magRegulariserGrad, magfaceLambdaMin, magfaceLossF64, validateMagFace, type MagFaceSpec } from '../src/ops/magface.js';
import { referenceHeadLossAndGrads } from '../src/ops/reference-heads.js';
import { Rng } from '../src/common/random.js';
import { runShardsInProcess } from './helpers/in-process-shards.js';

const spec = MAGFACE_DEFAULTS;
// docs/methods.md#magface-test-vectors: three unit class centres (rows)
const W = [
  [1, 0],
  [0, 1],
  [-0.6, 0.8],
];
const close = (a: number, b: number, rtol = 1e-6, atol = 1e-7) => expect(Math.abs(a - b), `${a} vs ${b}`).toBeLessThanOrEqual(atol + rtol * Math.abs(b));

/** docs/methods.md#magface-test-vectors vectors 1–3: [x, labels, targets, L_id, mean g, total, ∂L/∂x]. */
const VECTORS: [number[][], number[], number[], number, number, number, number[][]][] = [
  [[[30, 40]], [0], [0.05347559], 47.7775623, 0.02413223, 48.62219039, [[-1.50939158, 1.39775876]]],
  [[[3, 4]], [0], [0.19229583], 38.89306662, 0.10082645, 42.42199224, [[-16.1928909, 12.14466818]]],
  [
    [
      [30, 40],
      [3, 4],
    ],
    [0, 1],
    [0.05347559, 0.45937836],
    28.3887353,
    0.06247934,
    30.57551216,
    [
      [-0.75469579, 0.69887938],
      [8.64272549, -6.48204412],
    ],
  ],
];

describe('MagFace (docs/methods.md#magface)', () => {
  it('margin and regulariser table of docs/methods.md#magface-test-vectors', () => {
    for (const [a, m, g, lg, gp] of [
      [10, 0.45, 0.10082645, 3.528926, -0.00991736],
      [50, 0.59, 0.02413223, 0.844628, -0.00031736],
      [110, 0.8, 0.01818182, 0.636364, 0],
    ] as const) {
      close(magMargin(a, spec), m);
      close(magRegulariser(a, spec), g, 1e-6);
      close(spec.lambdaG * magRegulariser(a, spec), lg, 1e-6);
      close(magRegulariserGrad(a, spec), gp, 1e-4, 1e-8);
    }
  });

  it('the λ_g feasibility bound (docs/methods.md#magface-regulariser-bound): 22.5867 for the defaults; 35 passes, 20 is a clear error naming the field', () => {
    close(magfaceLambdaMin(spec), 22.5866667, 1e-7);
    expect(() => validateMagFace(spec)).not.toThrow();
    expect(() => validateMagFace({ ...spec, lambdaG: 20 })).toThrow(/^magface\.lambdaG: 20 is below the MagFace feasibility bound .* = 22\.5867/);
    close(magfaceLambdaMin({ ...spec, lm: 0.35 }), 29.04, 1e-3); // Mag-CosFace
    expect(() => validateMagFace({ ...spec, ua: 5 })).toThrow(/^magface\.ua:/);
    expect(() => validateMagFace({ ...spec, um: 0.3 })).toThrow(/^magface\.um:/);
  });

  for (const [i, [x, y, targets, lossId, meanG, total, grad]] of VECTORS.entries()) {
    it(`vector ${i + 1} in float64 (magfaceLossF64)`, () => {
      const r = magfaceLossF64(x, W, y, spec);
      targets.forEach((t, k) => close(r.targets[k]!, t));
      close(r.lossId, lossId);
      close(r.meanG, meanG);
      close(r.loss, total);
      grad.forEach((row, k) => row.forEach((g, d) => close(r.gradX[k]![d]!, g, 1e-6, 1e-7)));
    });

    it(`vector ${i + 1} through the tfjs autograd reference (float32)`, () => {
      const r = tf.tidy(() => referenceHeadLossAndGrads(tf.tensor2d(x), tf.tensor2d(W), y, { kind: 'magface', ...spec }));
      close(r.loss, total, 1e-4);
      const g = r.gradEmb.arraySync();
      grad.forEach((row, k) => row.forEach((v, d) => close(g[k]![d]!, v, 1e-4, 1e-5)));
      tf.dispose([r.gradEmb, r.gradWeight]);
    });
  }

  it('vector 1: the radial part of ∂L/∂x is dL/da = 0.22367949 (CE) − 0.01110744 (λ_g g′)', () => {
    const r = magfaceLossF64([[30, 40]], W, [0], spec);
    close(r.gradX[0]![0]! * 0.6 + r.gradX[0]![1]! * 0.8, 0.21257205);
  });

  it('vector 2: the clamp blocks the radial part (∂L/∂x ⟂ x)', () => {
    const r = magfaceLossF64([[3, 4]], W, [0], spec);
    expect(Math.abs(r.gradX[0]![0]! * 3 + r.gradX[0]![1]! * 4)).toBeLessThan(1e-9);
  });

  it('vectors 1–3 through the sharded step (lossHeadStep on 1 shard, and on 2 for the batch of 2: 1 + 2 classes)', async () => {
    for (const [x, y, , , , total, grad] of VECTORS) {
      for (const workers of [1, 2, 3].filter((n) => x.length % n === 0)) {
        const r = await runShardsInProcess(workers, x, y, W, { kind: 'magface', spec });
        close(r.loss, total, 1e-5);
        grad.forEach((row, k) => row.forEach((v, d) => close(r.gradEmb[k]![d]!, v, 1e-4, 1e-5)));
      }
    }
  });

  it('finite differences in float64 agree with the analytic gradient (rows inside and outside the clamp)', () => {
    const rng = Rng.derive(3, 'magface-fd');
    const s: MagFaceSpec = { ...spec, s: 16 };
    const d = 4;
    const x = [12, 60, 5, 105, 130].map((norm) => {
      const v = Array.from(rng.fillNormal(new Float32Array(d), 0, 1));
      const n = Math.hypot(...v);
      return v.map((a) => (a / n) * norm);
    });
    const w = Array.from({ length: 6 }, () => Array.from(rng.fillNormal(new Float32Array(d), 0, 1)));
    const y = [0, 3, 5, 1, 2];
    const r = magfaceLossF64(x, w, y, s);
    const h = 1e-6;
    for (const [mat, grad] of [
      [x, r.gradX],
      [w, r.gradW],
    ] as const) {
      for (let i = 0; i < mat.length; i++)
        for (let j = 0; j < d; j++) {
          const orig = mat[i]![j]!;
          mat[i]![j] = orig + h;
          const up = magfaceLossF64(x, w, y, s).loss;
          mat[i]![j] = orig - h;
          const down = magfaceLossF64(x, w, y, s).loss;
          mat[i]![j] = orig;
          close(grad[i]![j]!, (up - down) / (2 * h), 1e-5, 1e-7);
        }
    }
  });
});

describe('MagFace without easy margin (magface.easyMargin false: the official easy_margin = False)', () => {
  const hard: MagFaceSpec = { ...spec, s: 16, easyMargin: false };
  const W4 = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [-0.6, 0, 0.8],
  ];
  const dir = (v: number[], norm: number) => {
    const n = Math.hypot(...v);
    return v.map((a) => (a / n) * norm);
  };
  // target cosines (label 0, class centre [1, 0, 0]) on every branch:
  // c > 0 (margin either way); −cos m < c ≤ 0 (margin only when hard); c < −cos m (hard: c − m·sin m); outside the clamp on both sides
  const X = [
    dir([0.6, 0.8, 0], 50),
    dir([-0.3, Math.sqrt(1 - 0.09), 0], 60),
    dir([-0.95, 0, Math.sqrt(1 - 0.9025)], 100),
    dir([-0.9, Math.sqrt(1 - 0.81), 0], 130),
    dir([0.2, 0, Math.sqrt(0.96)], 5),
    dir([-0.5, 0.5, Math.sqrt(0.5)], 30),
  ];
  const Y = [0, 0, 0, 0, 0, 0];

  /** The official MagLinear's target with easy_margin False, written from its definition: threshold cos(π − m), mm = sin(π − m)·m. */
  function officialHardTarget(c: number, norm: number): number {
    const a = Math.min(hard.ua, Math.max(hard.la, norm));
    const m = ((hard.um - hard.lm) / (hard.ua - hard.la)) * (a - hard.la) + hard.lm;
    const threshold = Math.cos(Math.PI - m);
    const mm = Math.sin(Math.PI - m) * m;
    return c > threshold ? Math.cos(Math.acos(c) + m) : c - mm;
  }

  it('targets follow the official hard-margin rule and differ from the easy ones exactly where c ≤ 0', () => {
    const r = magfaceLossF64(X, W4, Y, hard);
    const easy = magfaceLossF64(X, W4, Y, { ...hard, easyMargin: true });
    X.forEach((x, i) => {
      const norm = Math.hypot(...x);
      const c = x[0]! / norm;
      close(r.targets[i]!, officialHardTarget(c, norm), 1e-9, 1e-12);
      if (c > 0) close(easy.targets[i]!, r.targets[i]!, 1e-12, 1e-15);
      else close(easy.targets[i]!, c, 1e-12, 1e-15);
    });
    // rows 2 and 3 take the c − m·sin m fallback, row 1 the margin that easy_margin would skip
    expect(r.targets[2]).toBeLessThan(-0.95);
    expect(r.targets[1]).toBeLessThan(-0.3);
  });

  it('finite differences in float64 agree with the analytic gradient, the fallback’s pull on the magnitude included', () => {
    const x = X.map((r) => r.slice());
    const w = W4.map((r) => r.slice());
    const r = magfaceLossF64(x, w, Y, hard);
    const h = 1e-6;
    for (const [mat, grad] of [
      [x, r.gradX],
      [w, r.gradW],
    ] as const) {
      for (let i = 0; i < mat.length; i++)
        for (let j = 0; j < 3; j++) {
          const orig = mat[i]![j]!;
          mat[i]![j] = orig + h;
          const up = magfaceLossF64(x, w, Y, hard).loss;
          mat[i]![j] = orig - h;
          const down = magfaceLossF64(x, w, Y, hard).loss;
          mat[i]![j] = orig;
          close(grad[i]![j]!, (up - down) / (2 * h), 1e-5, 1e-7);
        }
    }
    // row 2 (fallback, inside the clamp) has a radial gradient; the easy rule would give only the regulariser's
    const radial = (g: number[], v: number[]) => g.reduce((a, t, k) => a + t * v[k]!, 0) / Math.hypot(...v);
    const easy = magfaceLossF64(x, w, Y, { ...hard, easyMargin: true });
    expect(Math.abs(radial(r.gradX[2]!, x[2]!) - radial(easy.gradX[2]!, x[2]!))).toBeGreaterThan(1e-4);
  });

  it('the tfjs autograd reference and the sharded step (1, 2 and 3 shards) agree with the float64 computation', async () => {
    const f64 = magfaceLossF64(X, W4, Y, hard);
    const ref = tf.tidy(() => referenceHeadLossAndGrads(tf.tensor2d(X), tf.tensor2d(W4), Y, { kind: 'magface', ...hard }));
    close(ref.loss, f64.loss, 1e-4);
    const g = ref.gradEmb.arraySync();
    f64.gradX.forEach((row, k) => row.forEach((v, d) => close(g[k]![d]!, v, 1e-3, 1e-5)));
    tf.dispose([ref.gradEmb, ref.gradWeight]);
    for (const workers of [1, 2, 3]) {
      const r = await runShardsInProcess(workers, X, Y, W4, { kind: 'magface', spec: hard });
      close(r.loss, f64.loss, 1e-5);
      f64.gradX.forEach((row, k) => row.forEach((v, d) => close(r.gradEmb[k]![d]!, v, 1e-3, 1e-5)));
    }
  });

  it('a non-boolean easyMargin is a clear error naming the field', () => {
    expect(() => validateMagFace({ ...spec, easyMargin: 'no' as unknown as boolean })).toThrow(/^magface\.easyMargin: must be true or false, got "no"/);
  });
});
