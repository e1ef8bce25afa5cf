import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { MARGIN_PRESETS, marginLogits, resolveMargin, targetCos, targetCosGrad, type MarginSpec, type MarginVariant } from '../src/ops/margin.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

// docs/methods.md#margin-test-vectors: s = 64, B = 2, C = 4
const COS = [
  [0.8, 0.1, -0.2, 0.3],
  [-0.95, 0.2, 0.05, 0.6],
];
const LABELS = [0, 0];

/** Float64 margin-softmax CE over a cosine matrix, with the gradient the backward uses. */
function ce64(c: number[][], labels: number[], margin: MarginSpec, variant: MarginVariant) {
  const b = c.length;
  const perRow: number[] = [];
  const grad = c.map((row) => row.map(() => 0));
  let loss = 0;
  c.forEach((row, i) => {
    const y = labels[i]!;
    const z = row.map((v, j) => margin.s * (j === y ? targetCos(v, margin, variant) : v));
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0));
    perRow.push(lse - z[y]!);
    loss += (lse - z[y]!) / b;
    z.forEach((v, j) => {
      const g = (Math.exp(v - lse) - (j === y ? 1 : 0)) / b;
      grad[i]![j] = margin.s * g * (j === y ? targetCosGrad(row[j]!, margin, variant) : 1);
    });
  });
  return { loss, perRow, grad };
}

/** The same through the tensor op (customGrad) and tfjs autograd. */
function ceTf(c: number[][], labels: number[], margin: MarginSpec, variant: MarginVariant) {
  return tf.tidy(() => {
    const onehot = tf.oneHot(tf.tensor1d(labels, 'int32'), c[0]!.length);
    const f = (x: tf.Tensor) => {
      const z = marginLogits(x as tf.Tensor2D, labels, margin, variant);
      return tf.mean(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, onehot), 1))) as tf.Scalar;
    };
    const { value, grad } = tf.valueAndGrad(f)(tf.tensor2d(c));
    return { loss: value.dataSync()[0]!, grad: grad.arraySync() as number[][] };
  });
}

function expectClose(actual: number, expected: number, rtol: number, atol: number, what: string) {
  const ok = Math.abs(actual - expected) <= atol + rtol * Math.abs(expected);
  if (!ok) throw new Error(`${what}: got ${actual}, expected ${expected}`);
}

interface Row {
  name: string;
  margin: MarginSpec;
  variant: MarginVariant;
  target: [number, number];
  perRow: [number, number];
  loss: number;
  grad: number[][];
}

const arcface = MARGIN_PRESETS.arcface;
const ROW2 = [-32.0, 2.439e-10, 0, 32.0];
const TABLE: Row[] = [
  {
    name: 'legacy, non-easy',
    margin: arcface,
    variant: 'legacy',
    target: [0.41441073, -1.18971277],
    perRow: [6.60433606e-4, 114.541617],
    loss: 57.27113883,
    grad: [[-3.20456301e-2, 5.83264e-8, 0, 2.11268398e-2], ROW2],
  },
  {
    name: 'legacy, easy_margin',
    margin: arcface,
    variant: 'legacy-easy',
    target: [0.41441073, -0.95],
    perRow: [6.60433606e-4, 99.2],
    loss: 49.60033022,
    grad: [[-3.20456301e-2, 5.83264e-8, 0, 2.11268398e-2], ROW2],
  },
  {
    name: 'arcface_torch HEAD',
    margin: arcface,
    variant: 'straight-through',
    target: [0.41441073, -0.98340401],
    perRow: [6.60433606e-4, 101.337857],
    loss: 50.66925854,
    grad: [[-2.11268982e-2, 5.83264e-8, 0, 2.11268398e-2], ROW2],
  },
  {
    name: 'CosFace 0.4 (straight-through)',
    margin: MARGIN_PRESETS.cosface,
    variant: 'straight-through',
    target: [0.4, -1.35],
    perRow: [1.66018299e-3, 124.8],
    loss: 62.40083009,
    grad: [[-5.30817809e-2, 1.46546e-7, 0, 5.30816343e-2], ROW2],
  },
  {
    name: 'CosFace 0.4 (exact)',
    margin: MARGIN_PRESETS.cosface,
    variant: 'exact',
    target: [0.4, -1.35],
    perRow: [1.66018299e-3, 124.8],
    loss: 62.40083009,
    grad: [[-5.30817809e-2, 1.46546e-7, 0, 5.30816343e-2], ROW2],
  },
  {
    name: 'CosFace 0.35',
    margin: resolveMargin({ type: 'cosface', m3: 0.35 }),
    variant: 'exact',
    target: [0.45, -1.3],
    perRow: [6.772663e-5, 121.6],
    loss: 60.80003386,
    grad: [[-2.16717877e-3, 5.98307e-9, 0, 2.16717279e-3], ROW2],
  },
  {
    name: 'combined (1, 0.3, 0.2) mxnet',
    margin: MARGIN_PRESETS.combined,
    variant: 'exact',
    target: [0.38695707, -1.19984582],
    perRow: [3.82131447e-3, 115.190132],
    loss: 57.59697689,
    grad: [
      [-0.164688081, 3.36948e-7, 0, 0.122048384],
      [-1.79953575, 2.439e-10, 0, 32.0],
    ],
  },
  {
    name: 'm1 = 1.35 mxnet',
    margin: resolveMargin({ type: 'combined', m1: 1.35, m2: 0, m3: 0 }),
    variant: 'exact',
    target: [0.6457994, -0.78329302],
    perRow: [2.44658e-10, 88.5307531],
    loss: 44.26537654,
    grad: [
      [-1.34495e-8, 0, 0, 7.82904e-9],
      [86.0060984, 2.439e-10, 0, 32.0],
    ],
  },
];

describe('margin heads reproduce docs/methods.md#margin-test-vectors', () => {
  for (const row of TABLE) {
    it(`${row.name}: target, per-sample loss, mean loss, ∂L/∂c`, () => {
      // float64 scalar path (used by the sharded softmax)
      row.target.forEach((t, i) => expectClose(targetCos(COS[i]![0]!, row.margin, row.variant), t, 1e-7, 1e-8, `target row ${i}`));
      const r64 = ce64(COS, LABELS, row.margin, row.variant);
      row.perRow.forEach((l, i) => expectClose(r64.perRow[i]!, l, 1e-6, 1e-12, `per-sample loss row ${i}`));
      expectClose(r64.loss, row.loss, 1e-8, 0, 'mean loss');
      row.grad.forEach((g, i) => g.forEach((v, j) => expectClose(r64.grad[i]![j]!, v, 1e-5, 1e-10, `dL/dc[${i}][${j}]`)));
      // float32 tensor path (customGrad; used by the reference) — docs/methods.md#tolerances tolerances
      const rtf = ceTf(COS, LABELS, row.margin, row.variant);
      expectClose(rtf.loss, row.loss, 1e-5, 0, 'mean loss (tf)');
      row.grad.forEach((g, i) => g.forEach((v, j) => expectClose(rtf.grad[i]![j]!, v, 1e-4, 1e-5, `dL/dc[${i}][${j}] (tf)`)));
    });
  }
});

describe('margin gradients', () => {
  const cases: [string, MarginSpec, MarginVariant][] = [
    ['arcface exact', arcface, 'exact'],
    ['arcface legacy', arcface, 'legacy'],
    ['arcface legacy-easy', arcface, 'legacy-easy'],
    ['cosface exact', MARGIN_PRESETS.cosface, 'exact'],
    ['combined exact', MARGIN_PRESETS.combined, 'exact'],
    ['m1 = 1.35 exact', resolveMargin({ type: 'combined', m1: 1.35, m2: 0.1, m3: 0.05 }), 'exact'],
    ['m1 = 0.8 exact', resolveMargin({ type: 'combined', m1: 0.8, m2: 0.2, m3: 0 }), 'exact'],
  ];
  const grid = Array.from({ length: 41 }, (_, i) => -0.985 + (i * 1.97) / 40);

  for (const [name, m, v] of cases) {
    it(`${name}: ∂f/∂c equals central finite differences of f (float64)`, () => {
      const h = 1e-6;
      for (const c of grid) {
        // skip the legacy heads' branch points, where f is discontinuous / kinked
        if (v === 'legacy' && Math.abs(c + Math.cos(m.m2)) < 1e-3) continue;
        if (v === 'legacy-easy' && Math.abs(c) < 1e-3) continue;
        const fd = (targetCos(c + h, m, v) - targetCos(c - h, m, v)) / (2 * h);
        expectClose(targetCosGrad(c, m, v), fd, 1e-6, 1e-7, `${name} at c = ${c}`);
      }
    });
  }

  it('the full softmax-CE gradient over cosines matches finite differences (float64, exact variants)', () => {
    const c = [
      [0.31, -0.42, 0.77, 0.05],
      [-0.6, 0.12, -0.2, 0.9],
      [0.4, 0.41, -0.9, 0.0],
    ];
    const labels = [2, 3, 0];
    for (const [name, m, v] of cases) {
      const small = { ...m, s: 8 }; // keep the softmax away from saturation so FD sees every entry
      const { grad } = ce64(c, labels, small, v);
      const h = 1e-6;
      c.forEach((row, i) =>
        row.forEach((_, j) => {
          const plus = c.map((r) => r.slice());
          const minus = c.map((r) => r.slice());
          plus[i]![j]! += h;
          minus[i]![j]! -= h;
          const fd = (ce64(plus, labels, small, v).loss - ce64(minus, labels, small, v).loss) / (2 * h);
          expectClose(grad[i]![j]!, fd, 1e-6, 1e-8, `${name} dL/dc[${i}][${j}]`);
        }),
      );
    }
  });

  it('straight-through passes s·(p − onehot)/B on the target, whatever the margin', () => {
    const r = ce64(COS, LABELS, arcface, 'straight-through');
    const exact = ce64(COS, LABELS, arcface, 'exact');
    expect(r.loss).toBe(exact.loss); // same forward
    // exact target gradient = straight-through × ∂f/∂c (docs/methods.md#margin-test-vectors "checks you can derive by hand")
    expectClose(exact.grad[0]![0]!, r.grad[0]![0]! * 1.5168166, 1e-6, 0, 'chain factor');
  });

  it('exact equals the legacy derivative wherever c > th (docs/methods.md#partial-fc-test-vectors, vector A note)', () => {
    for (const c of grid) if (c > -Math.cos(0.5)) expect(targetCosGrad(c, arcface, 'exact')).toBe(targetCosGrad(c, arcface, 'legacy'));
  });

  it('the guarded sinθ keeps the endpoints finite', () => {
    for (const v of ['exact', 'legacy'] as const) {
      expect(Number.isFinite(targetCosGrad(1, arcface, v))).toBe(true);
      expect(Number.isFinite(targetCosGrad(-1, arcface, 'exact'))).toBe(true);
    }
    const g = tf.tidy(
      () =>
        tf
          .grad((x: tf.Tensor) => tf.sum(marginLogits(x as tf.Tensor2D, [0, 0], arcface, 'exact')))(
            tf.tensor2d([
              [1, 0.2],
              [-1, 0.3],
            ]),
          )
          .arraySync() as number[][],
    );
    for (const row of g) for (const x of row) expect(Number.isFinite(x)).toBe(true);
  });
});

describe('margin specs', () => {
  it('fills presets and validates names against numbers', () => {
    expect(resolveMargin({ type: 'arcface' })).toEqual({ type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 });
    expect(resolveMargin({ type: 'cosface', s: 30 })).toEqual({ type: 'cosface', s: 30, m1: 1, m2: 0, m3: 0.4 });
    expect(() => resolveMargin({ type: 'arcface', m3: 0.2 })).toThrow(/margin\.m3/);
    expect(() => resolveMargin({ type: 'cosface', m2: 0.2 })).toThrow(/margin\.m2/);
    expect(() => resolveMargin({ type: 'combined', s: -1 })).toThrow(/margin\.s/);
    expect(() => resolveMargin({ type: 'nope' as never })).toThrow(/margin\.type/);
    expect(() => marginLogits(tf.zeros([1, 2]) as tf.Tensor2D, [0], MARGIN_PRESETS.cosface, 'legacy')).toThrow(/ArcFace only/);
  });
});
