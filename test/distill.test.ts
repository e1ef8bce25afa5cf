import { describe, expect, it } from 'vitest';
import { distillLoss } from '../src/ops/distill.js';
import { Rng } from '../src/common/random.js';

const close = (a: number, b: number, rtol = 1e-6, atol = 1e-8) => expect(Math.abs(a - b), `${a} vs ${b}`).toBeLessThanOrEqual(atol + rtol * Math.abs(b));
// docs/methods.md#distillation-test-vector
const FT = [3, 4, 0, 1, -2, 2];
const FS = [2, 5, 1, 0.5, -1, 2.5];

describe('distillation losses (docs/methods.md#distillation, docs/methods.md#distillation-test-vector)', () => {
  it('angular (VarGFaceNet eq. 5): loss and gradient', () => {
    const r = distillLoss('angular', FT, FS, 3);
    close(r.loss, 0.13774330448, 1e-9);
    [-0.04625213, 0.01217161, 0.03164619, -0.06085806, 0.12171612, 0.06085806].forEach((g, i) => close(r.grad[i]!, g, 1e-6));
  });

  it('l2: loss and gradient', () => {
    const r = distillLoss('l2', FT, FS, 3);
    close(r.loss, 2.25);
    [-1, 1, 1, -0.5, 1, 0.5].forEach((g, i) => close(r.grad[i]!, g));
  });

  it('the mean can run over a larger (global) batch: loss and gradient scale by B/R', () => {
    const r = distillLoss('angular', FT, FS, 3, 8);
    close(r.loss, (0.13774330448 * 2) / 8, 1e-9);
    close(r.grad[0]!, (-0.04625213 * 2) / 8, 1e-6);
  });

  for (const kind of ['angular', 'l2'] as const) {
    it(`${kind}: finite differences in float64 agree with the gradient`, () => {
      const rng = Rng.derive(9, 'distill-fd', kind);
      const t = Array.from(rng.fillNormal(new Float32Array(15), 0, 2));
      const s = Array.from(rng.fillNormal(new Float32Array(15), 0, 2));
      const r = distillLoss(kind, t, s, 5);
      const h = 1e-6;
      for (let i = 0; i < s.length; i++) {
        const o = s[i]!;
        s[i] = o + h;
        const up = distillLoss(kind, t, s, 5).loss;
        s[i] = o - h;
        const down = distillLoss(kind, t, s, 5).loss;
        s[i] = o;
        close(r.grad[i]!, (up - down) / (2 * h), 1e-5, 1e-9);
      }
    });
  }

  it('rejects mismatched shapes with a clear error', () => {
    expect(() => distillLoss('l2', [1, 2, 3], [1, 2], 1)).toThrow(/teacher has 3 values, student 2/);
    expect(() => distillLoss('cosine' as never, FT, FS, 3)).toThrow(/unknown kind/);
  });
});
