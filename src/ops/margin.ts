/**
 * Margin heads of the combined-margin family (docs/methods.md#margin-heads): only the target logit
 * of each row changes, then every logit is scaled by s:
 *   target z = s · f(c),  non-target z = s · c,  c = clamped cosine.
 *
 * One forward formula for every variant except the legacy ones:
 *   f(c) = cos(m1·θ + m2) − m3,  θ = arccos c
 * computed without acos when m1 = 1 (c·cos m2 − sqrt(max(0, 1 − c²))·sin m2 − m3).
 * θ + m2 > π is not special-cased: cos wraps, as in both reference codes.
 *
 * Variants (how the target's derivative ∂f/∂c is taken, and for the legacy
 * ones also the forward):
 *  - 'straight-through' — arcface_torch HEAD (docs/methods.md#straight-through-gradient): backward is the
 *    identity, ∂f/∂c := 1, because HEAD applies the margin under no_grad.
 *    For ArcFace (m1 = 1, m3 = 0) and CosFace (m1 = 1, m2 = 0) the forward is
 *    exactly HEAD's. HEAD *silently drops m2* when m3 > 0 and rejects m1 ≠ 1;
 *    shardface instead applies the full combined formula in both cases.
 *  - 'exact' — the mxnet combined margin of the ArcFace paper (docs/methods.md#exact-gradient):
 *    the true derivative ∂f/∂c = m1·sin(m1θ + m2)/sinθ, with
 *    sinθ = sqrt(max(1 − c², 1e-12)). With m1 = 1, m2 = 0 it is CosFace with
 *    derivative 1. For ArcFace it equals the legacy (docs/methods.md#legacy-closed-form) derivative
 *    cos m + sin m·c/sinθ wherever the legacy head takes its φ branch (c > th),
 *    so the "legacy" gradients of vector A (docs/methods.md#partial-fc-test-vectors) are reproduced by 'exact' too.
 *  - 'legacy' / 'legacy-easy' — the pre-Dec-2022 arcface_torch / CurricularFace
 *    / MagFace closed form (docs/methods.md#legacy-closed-form), ArcFace only (m1 = 1, m3 = 0, m = m2):
 *    f = φ if c > th (th = −cos m) else c − m·sin m; easy_margin: f = φ if
 *    c > 0 else c. Analytic gradient: φ' on the φ branch, 1 elsewhere.
 *
 * The scalar functions (float64, plain JS) serve the sharded softmax, which
 * only ever touches N target values; the tensor op with tf.customGrad serves
 * the autograd reference. Both implement the same formulas independently.
 */
import { tf } from './tf.js';

export type MarginType = 'arcface' | 'cosface' | 'combined';

export interface MarginSpec {
  type: MarginType;
  /** Logit scale. */
  s: number;
  /** Multiplicative angular margin (SphereFace-like); 1 = none. */
  m1: number;
  /** Additive angular margin (ArcFace). */
  m2: number;
  /** Additive cosine margin (CosFace). */
  m3: number;
}

/** How the target logit's gradient is taken (see the file comment). */
export type MarginGrad = 'straight-through' | 'exact';
/** MarginGrad plus the legacy ArcFace heads of docs/methods.md#legacy-closed-form. */
export type MarginVariant = MarginGrad | 'legacy' | 'legacy-easy';

export const MARGIN_VARIANTS: readonly MarginVariant[] = ['straight-through', 'exact', 'legacy', 'legacy-easy'];

/**
 * Presets (docs/methods.md#margin-presets): ArcFace and CosFace as in arcface_torch, combined as in
 * mxnet `loss.combined`. All with s = 64.
 */
export const MARGIN_PRESETS: Readonly<Record<MarginType, Readonly<MarginSpec>>> = {
  arcface: { type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 },
  cosface: { type: 'cosface', s: 64, m1: 1, m2: 0, m3: 0.4 },
  combined: { type: 'combined', s: 64, m1: 1, m2: 0.3, m3: 0.2 },
};

/**
 * Fills unspecified fields from the type's preset and validates. Errors name
 * the offending field (`margin.<field>`). A type's name must describe its
 * numbers: 'arcface' has no m1/m3, 'cosface' no m1/m2; use 'combined' otherwise.
 */
export function resolveMargin(partial: { type: MarginType } & Partial<Omit<MarginSpec, 'type'>>): MarginSpec {
  const preset = MARGIN_PRESETS[partial.type];
  if (!preset) throw new Error(`margin.type: unknown margin type ${JSON.stringify(partial.type)} (expected arcface, cosface or combined)`);
  const spec: MarginSpec = {
    type: partial.type,
    s: partial.s ?? preset.s,
    m1: partial.m1 ?? preset.m1,
    m2: partial.m2 ?? preset.m2,
    m3: partial.m3 ?? preset.m3,
  };
  validateMargin(spec);
  return spec;
}

/** Throws a field-naming Error if the spec (and, if given, the variant) is unusable. */
export function validateMargin(spec: MarginSpec, variant?: MarginVariant): void {
  if (!MARGIN_PRESETS[spec.type]) throw new Error(`margin.type: unknown margin type ${JSON.stringify(spec.type)} (expected arcface, cosface or combined)`);
  for (const k of ['s', 'm1', 'm2', 'm3'] as const) {
    if (typeof spec[k] !== 'number' || !Number.isFinite(spec[k])) throw new Error(`margin.${k}: must be a finite number, got ${String(spec[k])}`);
  }
  if (spec.s <= 0) throw new Error(`margin.s: must be > 0, got ${spec.s}`);
  if (spec.m1 <= 0) throw new Error(`margin.m1: must be > 0, got ${spec.m1}`);
  if (spec.type === 'arcface') {
    if (spec.m1 !== 1) throw new Error(`margin.m1: arcface has m1 = 1 (got ${spec.m1}); use type "combined"`);
    if (spec.m3 !== 0) throw new Error(`margin.m3: arcface has m3 = 0 (got ${spec.m3}); use type "combined"`);
  }
  if (spec.type === 'cosface') {
    if (spec.m1 !== 1) throw new Error(`margin.m1: cosface has m1 = 1 (got ${spec.m1}); use type "combined"`);
    if (spec.m2 !== 0) throw new Error(`margin.m2: cosface has m2 = 0 (got ${spec.m2}); use type "combined"`);
  }
  if (variant !== undefined) {
    if (!MARGIN_VARIANTS.includes(variant)) throw new Error(`margin gradient: unknown variant ${JSON.stringify(variant)} (expected ${MARGIN_VARIANTS.join(', ')})`);
    if ((variant === 'legacy' || variant === 'legacy-easy') && (spec.m1 !== 1 || spec.m3 !== 0))
      throw new Error(`margin: the ${variant} head is ArcFace only (m1 = 1, m3 = 0), got m1 = ${spec.m1}, m3 = ${spec.m3}`);
  }
}

function isLegacy(variant: MarginVariant): variant is 'legacy' | 'legacy-easy' {
  return variant === 'legacy' || variant === 'legacy-easy';
}

/** sinθ guarded for division (docs/methods.md#legacy-closed-form). */
function sinThetaGuarded(c: number): number {
  return Math.sqrt(Math.max(1 - c * c, 1e-12));
}

/** f(c): the margined target cosine (before ×s), float64. */
export function targetCos(c: number, margin: MarginSpec, variant: MarginVariant): number {
  const { m1, m2, m3 } = margin;
  if (isLegacy(variant)) {
    const phi = c * Math.cos(m2) - Math.sqrt(Math.max(0, 1 - c * c)) * Math.sin(m2);
    if (variant === 'legacy-easy') return c > 0 ? phi : c;
    return c > -Math.cos(m2) ? phi : c - m2 * Math.sin(m2);
  }
  if (m1 === 1) return c * Math.cos(m2) - Math.sqrt(Math.max(0, 1 - c * c)) * Math.sin(m2) - m3;
  return Math.cos(m1 * Math.acos(Math.min(1, Math.max(-1, c))) + m2) - m3;
}

/** The derivative the backward pass uses for the target: ∂f/∂c, or 1 for straight-through. */
export function targetCosGrad(c: number, margin: MarginSpec, variant: MarginVariant): number {
  const { m1, m2 } = margin;
  if (variant === 'straight-through') return 1;
  if (variant === 'legacy' && !(c > -Math.cos(m2))) return 1;
  if (variant === 'legacy-easy' && !(c > 0)) return 1;
  if (m1 === 1) return m2 === 0 ? 1 : Math.cos(m2) + (Math.sin(m2) * c) / sinThetaGuarded(c);
  const theta = Math.acos(Math.min(1, Math.max(-1, c)));
  return (m1 * Math.sin(m1 * theta + m2)) / sinThetaGuarded(c);
}

// ---------------------------------------------------------------------------
// Tensor versions (autograd reference path)

function targetCosTensor(c: tf.Tensor1D, margin: MarginSpec, variant: MarginVariant): tf.Tensor1D {
  const { m1, m2, m3 } = margin;
  return tf.tidy(() => {
    const sinT = tf.sqrt(tf.relu(tf.sub(1, tf.square(c))));
    if (isLegacy(variant)) {
      const phi = tf.sub(tf.mul(c, Math.cos(m2)), tf.mul(sinT, Math.sin(m2)));
      if (variant === 'legacy-easy') return tf.where(tf.greater(c, 0), phi, c) as tf.Tensor1D;
      return tf.where(tf.greater(c, -Math.cos(m2)), phi, tf.sub(c, m2 * Math.sin(m2))) as tf.Tensor1D;
    }
    if (m1 === 1) return tf.sub(tf.sub(tf.mul(c, Math.cos(m2)), tf.mul(sinT, Math.sin(m2))), m3) as tf.Tensor1D;
    return tf.sub(tf.cos(tf.add(tf.mul(tf.acos(tf.clipByValue(c, -1, 1)), m1), m2)), m3) as tf.Tensor1D;
  });
}

function targetCosGradTensor(c: tf.Tensor1D, margin: MarginSpec, variant: MarginVariant): tf.Tensor1D {
  const { m1, m2 } = margin;
  return tf.tidy(() => {
    if (variant === 'straight-through' || (m1 === 1 && m2 === 0)) return tf.onesLike(c);
    const sinT = tf.sqrt(tf.maximum(tf.sub(1, tf.square(c)), 1e-12));
    let d: tf.Tensor1D;
    if (m1 === 1) d = tf.add(Math.cos(m2), tf.div(tf.mul(c, Math.sin(m2)), sinT));
    else d = tf.div(tf.mul(tf.sin(tf.add(tf.mul(tf.acos(tf.clipByValue(c, -1, 1)), m1), m2)), m1), sinT);
    if (variant === 'legacy') return tf.where(tf.greater(c, -Math.cos(m2)), d, tf.onesLike(c));
    if (variant === 'legacy-easy') return tf.where(tf.greater(c, 0), d, tf.onesLike(c));
    return d;
  });
}

/**
 * Logits of the margin head for a cosine matrix: z = s·cos with the target
 * entry (row i, column labels[i]) replaced by s·f(cos_i,labels[i]); rows with
 * label −1 get no margin. Differentiable with respect to `cos` via
 * tf.customGrad: ∂z/∂cos = s, times targetCosGrad on the target entries.
 */
export function marginLogits(cos: tf.Tensor2D, labels: Int32Array | readonly number[], margin: MarginSpec, variant: MarginVariant): tf.Tensor2D {
  validateMargin(margin, variant);
  const [rows, cols] = cos.shape;
  if (labels.length !== rows) throw new Error(`marginLogits: ${labels.length} labels for ${rows} rows`);
  const coords: number[][] = [];
  for (let i = 0; i < rows; i++) {
    const y = labels[i]!;
    if (y === -1) continue;
    if (!Number.isInteger(y) || y < 0 || y >= cols) throw new Error(`marginLogits: label ${y} at row ${i} outside [-1, ${cols})`);
    coords.push([i, y]);
  }
  const s = margin.s;
  if (coords.length === 0) return tf.mul(cos, s) as tf.Tensor2D;
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const c = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    const idx = tf.tensor2d(coords, [coords.length, 2], 'int32');
    const t = tf.gatherND(c, idx) as tf.Tensor1D;
    save([idx, t]);
    const value = tf.tidy(() => tf.mul(tf.tensorScatterUpdate(c, idx, targetCosTensor(t, margin, variant)), s) as tf.Tensor2D);
    return {
      value,
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const [i, tt] = saved as [tf.Tensor2D, tf.Tensor1D];
        return tf.tidy(() => {
          const onTarget = tf.mul(tf.gatherND(dy, i), targetCosGradTensor(tt, margin, variant));
          return tf.mul(tf.tensorScatterUpdate(dy, i, onTarget), s);
        });
      },
    };
  });
  return op(cos) as tf.Tensor2D;
}
