/**
 * CurricularFace (docs/methods.md#curricularface), exactly as the official head:
 *
 *   c    = clamp(n(x)·n(W), −1, 1)
 *   φ_i  = c_y·cos m − sqrt(1 − c_y²)·sin m          (cos(θ_y + m), no threshold)
 *   H_ij = [c_ij > φ_i]                              (strict; no gradient)
 *   T_i  = φ_i if c_y > cos(π − m) else c_y − m·sin m (legacy, non-easy)
 *   t   ← emaWeight·mean_i(c_{i,y_i}) + (1 − emaWeight)·t   (no gradient; BEFORE use)
 *   N(c) = c·(t + c) where H, else c;   target column ← T
 *   L    = CE_mean(s·N)
 *
 * Gradients (docs/methods.md#curricularface-gradients): ∂N/∂c = t + 2c on hard negatives, 1 on easy ones;
 * ∂T/∂c_y = cos m + sin m·c_y/sinθ on the φ branch (guarded sinθ), 1 else.
 *
 * `t` is one job-wide value: the batch mean runs over the GLOBAL batch (all
 * workers' rows), so in the sharded classifier the coordinator computes it
 * (src/coordinator/target-reduction.ts) and every worker uses the value it
 * returns. This file holds the float64 scalar formulas and
 * `curricularLossOnCosF64`, a dense float64 computation on a cosine matrix
 * (docs/methods.md#curricularface-test-vectors vectors, finite-difference tests).
 */

import { tf } from './tf.js';
import type { ShardHead } from './shard-heads.js';
import { curricularNextT } from './softmax-reduce.js';
export { curricularNextT };

export interface CurricularSpec {
  /** Logit scale s. */
  s: number;
  /** Angular margin m. */
  m: number;
  /** EMA weight on the new batch mean (official code: 0.01). */
  emaWeight: number;
}

export const CURRICULAR_DEFAULTS: Readonly<CurricularSpec> = { s: 64, m: 0.5, emaWeight: 0.01 };

/** Throws a field-naming Error if the spec is unusable. */
export function validateCurricular(spec: CurricularSpec, names: Partial<Record<keyof CurricularSpec, string>> = {}): void {
  const name = (k: keyof CurricularSpec) => names[k] ?? `curricular.${k}`;
  for (const k of ['s', 'm', 'emaWeight'] as const) if (typeof spec[k] !== 'number' || !Number.isFinite(spec[k])) throw new Error(`${name(k)}: must be a finite number, got ${String(spec[k])}`);
  if (spec.s <= 0) throw new Error(`${name('s')}: must be > 0, got ${spec.s}`);
  if (spec.m < 0 || spec.m >= Math.PI / 2) throw new Error(`${name('m')}: must be in [0, π/2), got ${spec.m}`);
  if (spec.emaWeight < 0 || spec.emaWeight > 1) throw new Error(`${name('emaWeight')}: must be in [0, 1], got ${spec.emaWeight}`);
}

/** φ = cos(θ + m), no threshold: the hard-negative bound. */
function curricularPhi(c: number, m: number): number {
  return c * Math.cos(m) - Math.sqrt(Math.max(0, 1 - c * c)) * Math.sin(m);
}

/** T: the legacy non-easy target cosine. */
function curricularTarget(c: number, m: number): number {
  return c > -Math.cos(m) ? curricularPhi(c, m) : c - m * Math.sin(m);
}

/** ∂T/∂c. */
function curricularTargetGrad(c: number, m: number): number {
  if (!(c > -Math.cos(m))) return 1;
  return Math.cos(m) + (Math.sin(m) * c) / Math.sqrt(Math.max(1 - c * c, 1e-12));
}

/** N(c) for a non-target entry, given the row's φ and the step's t. */
function curricularNegative(c: number, phi: number, t: number): number {
  return c > phi ? c * (t + c) : c;
}

/** ∂N/∂c. */
function curricularNegativeGrad(c: number, phi: number, t: number): number {
  return c > phi ? t + 2 * c : 1;
}

export interface CurricularF64Result {
  /** t after this batch's update (the value used). */
  t: number;
  loss: number;
  /** Modulated logits / s, target column = T. */
  logits: number[][];
  /** Hard mask (target column included, as the official head computes it). */
  hard: number[][];
  /** ∂L/∂c. */
  gradCos: number[][];
}

/** One CurricularFace step on a cosine matrix (N×C), float64, from the incoming t. */
export function curricularLossOnCosF64(cos: readonly (readonly number[])[], labels: readonly number[], tPrev: number, spec: CurricularSpec): CurricularF64Result {
  const n = cos.length;
  const cl = cos.map((row) => row.map((c) => Math.min(1, Math.max(-1, c))));
  const mean = cl.reduce((a, row, i) => a + row[labels[i]!]!, 0) / n;
  const t = curricularNextT(tPrev, mean, spec.emaWeight);
  const logits: number[][] = [];
  const hard: number[][] = [];
  const gradCos: number[][] = [];
  let loss = 0;
  cl.forEach((row, i) => {
    const y = labels[i]!;
    const phi = curricularPhi(row[y]!, spec.m);
    const mod = row.map((c, j) => (j === y ? curricularTarget(c, spec.m) : curricularNegative(c, phi, t)));
    logits.push(mod);
    hard.push(row.map((c) => (c > phi ? 1 : 0)));
    const z = mod.map((v) => spec.s * v);
    const mx = Math.max(...z);
    const lse = mx + Math.log(z.reduce((a, v) => a + Math.exp(v - mx), 0));
    loss += (lse - z[y]!) / n;
    gradCos.push(
      row.map((c, j) => {
        const p = Math.exp(z[j]! - lse);
        const d = j === y ? curricularTargetGrad(c, spec.m) : curricularNegativeGrad(c, phi, t);
        return (spec.s * (p - (j === y ? 1 : 0)) * d) / n;
      }),
    );
  });
  return { t, loss, logits, hard, gradCos };
}

// ---------------------------------------------------------------------------
// The sharded classifier's view (src/ops/shard-heads.ts)

/**
 * The head for shard-heads.ts, given this step's t (already updated) and the
 * target cosine of EVERY gathered row (from the coordinator: a shard needs the
 * hard-negative bound φ_i of rows whose label another shard owns).
 */
export function curricularShardHead(spec: CurricularSpec, t: number, targetCos: Float32Array): ShardHead {
  const phi = new Float32Array(targetCos.length);
  for (let i = 0; i < phi.length; i++) phi[i] = curricularPhi(targetCos[i]!, spec.m);
  return {
    s: spec.s,
    target: (_row, c) => curricularTarget(c, spec.m),
    targetGrad: (_row, c) => curricularTargetGrad(c, spec.m),
    negatives: (c, r0, r1) =>
      tf.tidy(() => {
        const hard = tf.greater(c, tf.tensor2d(phi.subarray(r0, r1), [r1 - r0, 1]));
        return {
          value: tf.where(hard, tf.mul(c, tf.add(c, t)), c) as tf.Tensor2D,
          grad: tf.where(hard, tf.add(tf.mul(c, 2), t), tf.onesLike(c)) as tf.Tensor2D,
        };
      }),
  };
}
