/**
 * Row-wise L2 normalisation, PyTorch `F.normalize` semantics (docs/methods.md#normalisation):
 *   n(v) = v / max(‖v‖₂, 1e-12)
 *   ∂L/∂v = (g − (g·v̂) v̂) / ‖v‖            when ‖v‖ > 1e-12
 *   ∂L/∂v = g / 1e-12                          when ‖v‖ ≤ 1e-12 (the max picks the constant)
 *
 * The gradient is written out (tf.customGrad) rather than left to autograd:
 * autograd through sqrt gives 0·∞ = NaN for an all-zero row, where PyTorch
 * gives the finite value above. For every row with a non-zero norm the two are
 * the same function; test/normalize.test.ts checks it against autograd and
 * finite differences.
 */
import { tf } from './tf.js';

export const NORM_EPS = 1e-12;

export interface Normalized {
  /** n(x), same shape as x. */
  unit: tf.Tensor2D;
  /** ‖x_i‖₂ per row, shape [rows, 1] (unclamped). */
  norm: tf.Tensor2D;
}

/** n(x) together with the row norms (the backward pass needs both). */
export function l2NormalizeWithNorm(x: tf.Tensor2D): Normalized {
  return tf.tidy(() => {
    const norm = tf.sqrt(tf.sum(tf.square(x), 1, true)) as tf.Tensor2D;
    const unit = tf.div(x, tf.maximum(norm, NORM_EPS)) as tf.Tensor2D;
    return { unit, norm };
  });
}

/**
 * The backward of n(·) for a batch of rows: given the upstream gradient `dy`
 * with respect to `unit = n(x)` and the row norms, returns ∂L/∂x.
 */
export function l2NormalizeGrad(dy: tf.Tensor2D, unit: tf.Tensor2D, norm: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    // radial component (g·v̂) only where the norm, not eps, was the divisor
    const radial = tf.mul(tf.sum(tf.mul(dy, unit), 1, true), tf.cast(tf.greater(norm, NORM_EPS), 'float32'));
    return tf.div(tf.sub(dy, tf.mul(radial, unit)), tf.maximum(norm, NORM_EPS)) as tf.Tensor2D;
  });
}

/**
 * The same backward written with the raw rows `x` instead of n(x):
 *   ∂L/∂x = dy/m − mask·((dy·x)/m³)·x,  m = max(‖x‖, 1e-12),  mask = [‖x‖ > 1e-12]
 * (n(x) = x/m). Used where only the raw rows are at hand.
 */
export function l2NormalizeGradFromRaw(dy: tf.Tensor2D, x: tf.Tensor2D, norm: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const m = tf.maximum(norm, NORM_EPS);
    const mask = tf.cast(tf.greater(norm, NORM_EPS), 'float32');
    // (dy·x)/m³, divided step by step so large norms do not overflow m³ (K×1 values, cheap)
    const coef = tf.div(tf.div(tf.div(tf.mul(tf.sum(tf.mul(dy, x), 1, true), mask), m), m), m);
    return tf.sub(tf.div(dy, m), tf.mul(x, coef)) as tf.Tensor2D;
  });
}

const l2NormalizeOp = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor2D;
  const save = args[1] as tf.GradSaveFunc;
  const { unit, norm } = l2NormalizeWithNorm(x);
  save([unit, norm]);
  return {
    value: unit,
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => l2NormalizeGrad(dy, saved[0] as tf.Tensor2D, saved[1] as tf.Tensor2D),
  };
});

/** n(x) row by row, differentiable (docs/methods.md#normalisation backward). */
export function l2Normalize(x: tf.Tensor2D): tf.Tensor2D {
  if (x.rank !== 2) throw new Error(`l2Normalize: expected a 2-D tensor, got shape [${x.shape.join(',')}]`);
  return l2NormalizeOp(x) as tf.Tensor2D;
}
