/**
 * The reported loss is arcface_torch's: −log(max(p_target, 1e-30)) per row,
 * so a row adds at most −ln(1e-30) ≈ 69.08; the gradient ignores the clamp
 * (p − onehot). Checked on rows above and below the cap against a plain
 * float64 computation written here, for the sharded path (two shards and the
 * coordinator's reduction), the single-process reference and the head
 * reference (CurricularFace), and the gradient against finite differences of
 * the unclamped loss.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { classRange, localiseLabels } from '../src/ops/class-range.js';
import { MARGIN_PRESETS, type MarginSpec } from '../src/ops/margin.js';
import { MAX_ROW_LOSS, reduceSoftmaxStats } from '../src/ops/softmax-reduce.js';
import { shardBackward, shardForward } from '../src/ops/softmax-shard.js';
import { referenceLossAndGrads } from '../src/ops/reference-classifier.js';
import { referenceHeadLossAndGrads } from '../src/ops/reference-heads.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

// four unit class centres on the axes; CosFace m = 0.4 at s = 64
const W = [
  [1, 0],
  [-1, 0],
  [0, 1],
  [0, -1],
];
// row 0: its class points the opposite way (loss ≈ 153, far above the cap);
// row 1: an easy row; row 2: a hard row below the cap (≈ 48); row 3: above it (≈ 83)
const X = [
  [1, 0.05],
  [1, 0.1],
  [0.6, 1],
  [0.1, -1],
];
const Y = [1, 0, 0, 0];
const cosface: MarginSpec = MARGIN_PRESETS.cosface;

const unit = (v: number[]) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};

/** Per-row −log p_target (unclamped) and the clamped −log max(p, 1e-30), float64, CosFace. */
function plainLosses(x: number[][]): { raw: number[]; clamped: number[] } {
  const raw: number[] = [];
  const clamped: number[] = [];
  x.forEach((row, i) => {
    const e = unit(row);
    const z = W.map((w, j) => {
      const c = e[0]! * w[0]! + e[1]! * w[1]!;
      return cosface.s * (j === Y[i] ? c - cosface.m3 : c);
    });
    const denom = z.reduce((a, v) => a + Math.exp(v), 0); // |z| ≤ 90: no overflow in float64
    const p = Math.exp(z[Y[i]!]!) / denom;
    raw.push(Math.log(denom) - z[Y[i]!]!);
    clamped.push(-Math.log(Math.max(p, 1e-30)));
  });
  return { raw, clamped };
}

const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;

function sharded(world: number) {
  const e = tf.tensor2d(X);
  const y = Int32Array.from(Y);
  const shards = Array.from({ length: world }, (_, r) => {
    const range = classRange(W.length, world, r);
    return { labels: localiseLabels(y, range), w: tf.tensor2d(W.slice(range.start, range.start + range.count), [range.count, 2]) };
  });
  const stats = shards.map((s) => shardForward(e, s.w, s.labels, cosface));
  const reduced = reduceSoftmaxStats(stats);
  const gradEmb = new Float32Array(X.length * 2);
  for (const s of shards) {
    const g = shardBackward(e, s.w, s.labels, reduced.logSumExp, cosface, 'exact', X.length);
    const ge = g.gradEmb.dataSync();
    for (let i = 0; i < ge.length; i++) gradEmb[i]! += ge[i]!;
    tf.dispose([g.gradEmb, g.gradWeight, s.w]);
  }
  e.dispose();
  return { loss: reduced.loss, rowLoss: Array.from(reduced.rowLoss), gradEmb };
}

describe('reported loss: arcface_torch clamps the target probability at 1e-30', () => {
  const { raw, clamped } = plainLosses(X);

  it('the case has rows above and below the cap', () => {
    expect(MAX_ROW_LOSS).toBeCloseTo(69.0775527898, 8);
    expect(raw[0]).toBeGreaterThan(100);
    expect(raw[1]).toBeLessThan(1);
    expect(raw[2]).toBeGreaterThan(30);
    expect(raw[2]).toBeLessThan(MAX_ROW_LOSS);
    expect(raw[3]).toBeGreaterThan(MAX_ROW_LOSS);
    expect(clamped[0]).toBeCloseTo(MAX_ROW_LOSS, 10);
  });

  it.each([1, 2, 3])('the coordinator reduction of %i shards reports the clamped rows and their mean', (world) => {
    const r = sharded(world);
    r.rowLoss.forEach((l, i) => expect(Math.abs(l - clamped[i]!), `row ${i}`).toBeLessThan(1e-4 * Math.max(1, clamped[i]!)));
    expect(Math.abs(r.loss - mean(clamped))).toBeLessThan(1e-4 * mean(clamped));
    // and not the unclamped mean, which is far above
    expect(mean(raw) - r.loss).toBeGreaterThan(20);
  });

  it('the single-process reference reports the same clamped mean; its gradient is the unclamped one (finite differences)', () => {
    const ref = referenceLossAndGrads(X, W, Y, cosface, 'exact');
    const g = ref.gradEmb.dataSync();
    tf.dispose([ref.gradEmb, ref.gradWeight]);
    expect(Math.abs(ref.loss - mean(clamped))).toBeLessThan(1e-4 * mean(clamped));
    const h = 1e-5;
    const r = sharded(2);
    for (let i = 0; i < X.length; i++)
      for (let c = 0; c < 2; c++) {
        const plus = X.map((row) => row.slice());
        const minus = X.map((row) => row.slice());
        plus[i]![c]! += h;
        minus[i]![c]! -= h;
        const fd = (mean(plainLosses(plus).raw) - mean(plainLosses(minus).raw)) / (2 * h);
        const tol = 1e-3 * Math.max(1, Math.abs(fd));
        expect(Math.abs(g[i * 2 + c]! - fd), `reference dL/dx[${i}][${c}]`).toBeLessThan(tol);
        expect(Math.abs(r.gradEmb[i * 2 + c]! - fd), `sharded dL/dx[${i}][${c}]`).toBeLessThan(tol);
      }
    // the clamped row still trains: its gradient is not zero
    expect(Math.abs(g[0]!) + Math.abs(g[1]!)).toBeGreaterThan(0.1);
  });

  it('the head reference (CurricularFace) caps each row the same way', () => {
    // CurricularFace with t = 0 and m = 0.5: row 0's target cos θ ≈ −1 (θ + m > π: c − m sin m), far above the cap
    const m = 0.5;
    const r = referenceHeadLossAndGrads(tf.tensor2d(X), tf.tensor2d(W), Y, { kind: 'curricular', s: 64, m, t: 0, emaWeight: 0 });
    tf.dispose([r.gradEmb, r.gradWeight]);
    const rows = X.map((row, i) => {
      const e = unit(row);
      const cos = W.map((w) => e[0]! * w[0]! + e[1]! * w[1]!);
      const cy = cos[Y[i]!]!;
      const sin = Math.sqrt(Math.max(1 - cy * cy, 1e-12));
      const phi = cy * Math.cos(m) - sin * Math.sin(m);
      const target = cy > -Math.cos(m) ? phi : cy - m * Math.sin(m);
      const z = cos.map((c, j) => 64 * (j === Y[i] ? target : c > phi ? c * c : c)); // t = 0: a hard negative's logit is c·(c + 0)
      const denom = z.reduce((a, v) => a + Math.exp(v), 0);
      return -Math.log(Math.max(Math.exp(z[Y[i]!]!) / denom, 1e-30));
    });
    expect(rows[0]).toBeCloseTo(MAX_ROW_LOSS, 6);
    expect(Math.abs(r.loss - mean(rows))).toBeLessThan(1e-4 * mean(rows));
  });
});
