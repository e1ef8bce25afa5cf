/**
 * MagFace and CurricularFace computed the straightforward way in one process:
 * the full N×C logits written as tfjs ops and both gradients from autograd
 * (tf.valueAndGrads), as reference-classifier.ts does for the margin family.
 * Nothing here is shared with the sharded path (shard-heads.ts and the float64
 * scalar formulas): normalisation, magnitude clamp, margins, the hard mask and
 * the softmax are all written again as tensor ops; the selftest and the tests
 * compare the two.
 */
import { tf } from './tf.js';
import { validateMagFace, type MagFaceSpec } from './magface.js';
import { validateCurricular, type CurricularSpec } from './curricular.js';
import { meanCappedRowLoss } from './reference-classifier.js';

/** A head with everything one step needs (CurricularFace: the incoming t). */
export type HeadCase = ({ kind: 'magface' } & MagFaceSpec) | ({ kind: 'curricular'; t: number } & CurricularSpec);

export type ReferenceHeadResult = {
  /** The whole loss (MagFace: CE + λ_g·mean g); each row's CE capped at −ln 1e-30 as arcface_torch reports it. */
  loss: number;
  gradEmb: tf.Tensor2D;
  gradWeight: tf.Tensor2D;
  /** CurricularFace: t after this batch's update. */
  t?: number;
};

function normalizeAutograd(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.maximum(tf.sum(tf.square(x), 1, true), 1e-24))) as tf.Tensor2D;
}

/**
 * A copy of `x` off the tape (tfjs has no stopGradient): comparisons feeding
 * tf.where must be built from it, since autograd cannot pass through Greater.
 */
function detached(x: tf.Tensor): tf.Tensor {
  return tf.tensor(x.dataSync(), x.shape, x.dtype);
}

/** sqrt(1 − c²), guarded for the gradient as docs/methods.md#legacy-closed-form. */
function sinTheta(c: tf.Tensor): tf.Tensor {
  return tf.sqrt(tf.maximum(tf.sub(1, tf.square(c)), 1e-12));
}

export function referenceHeadLossAndGrads(emb: tf.Tensor2D, weight: tf.Tensor2D, labels: Int32Array | readonly number[], head: HeadCase): ReferenceHeadResult {
  if (head.kind === 'magface') validateMagFace(head);
  else validateCurricular(head);
  const [n] = emb.shape;
  const [classes] = weight.shape;
  if (labels.length !== n) throw new Error(`referenceHeadLossAndGrads: ${labels.length} labels for ${n} rows`);
  const y = Int32Array.from(labels);
  for (let i = 0; i < n; i++) if (y[i]! < 0 || y[i]! >= classes) throw new Error(`referenceHeadLossAndGrads: label ${labels[i]} at row ${i} outside [0, ${classes})`);
  const onehot = tf.oneHot(tf.tensor1d(y, 'int32'), classes);
  const isTarget = tf.cast(onehot, 'bool');
  let t: number | undefined;
  const lossOf = (E: tf.Tensor, W: tf.Tensor): tf.Scalar => {
    const cos = tf.clipByValue(tf.matMul(normalizeAutograd(E as tf.Tensor2D), normalizeAutograd(W as tf.Tensor2D), false, true), -1, 1) as tf.Tensor2D;
    const cy = tf.sum(tf.mul(cos, onehot), 1, true); // N×1
    let logits: tf.Tensor2D;
    let extra: tf.Scalar | null = null;
    if (head.kind === 'magface') {
      const norm = tf.sqrt(tf.sum(tf.square(E), 1, true));
      const a = tf.clipByValue(norm, head.la, head.ua);
      const m = tf.add(tf.mul(tf.sub(a, head.la), (head.um - head.lm) / (head.ua - head.la)), head.lm);
      const phi = tf.sub(tf.mul(cy, tf.cos(m)), tf.mul(sinTheta(cy), tf.sin(m)));
      // easy margin (official default): no margin for c ≤ 0; hard: past the threshold cos(π − m) the target is c − m·sin m
      const target =
        head.easyMargin === false ? tf.where(tf.greater(detached(cy), detached(tf.neg(tf.cos(m)))), phi, tf.sub(cy, tf.mul(m, tf.sin(m)))) : tf.where(tf.greater(detached(cy), 0), phi, cy);
      logits = tf.where(isTarget, tf.mul(target, tf.onesLike(cos)), cos) as tf.Tensor2D;
      extra = tf.mul(tf.mean(tf.add(tf.div(1, a), tf.div(a, head.ua * head.ua))), head.lambdaG) as tf.Scalar;
    } else {
      const { m } = head;
      // t: the batch mean of the un-margined target cosines, read out as a number (no gradient), updated before use
      const mean = tf.mean(cy).dataSync()[0]!;
      t = head.emaWeight * mean + (1 - head.emaWeight) * head.t;
      const phi = tf.sub(tf.mul(cy, Math.cos(m)), tf.mul(sinTheta(cy), Math.sin(m)));
      const hard = tf.greater(detached(cos), detached(phi)); // the hard mask carries no gradient
      const modulated = tf.where(hard, tf.mul(cos, tf.add(cos, t)), cos);
      const target = tf.where(tf.greater(detached(cy), -Math.cos(m)), phi, tf.sub(cy, m * Math.sin(m)));
      logits = tf.where(isTarget, tf.mul(target, tf.onesLike(cos)), modulated) as tf.Tensor2D;
    }
    const z = tf.mul(logits, head.s);
    const ce = meanCappedRowLoss(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, onehot), 1)) as tf.Tensor1D);
    return (extra ? tf.add(ce, extra) : ce) as tf.Scalar;
  };
  const { value, grads } = tf.valueAndGrads(lossOf)([emb, weight]);
  const loss = value.dataSync()[0]!;
  tf.dispose([value, onehot, isTarget]);
  return { loss, gradEmb: grads[0] as tf.Tensor2D, gradWeight: grads[1] as tf.Tensor2D, ...(t !== undefined ? { t } : {}) };
}
