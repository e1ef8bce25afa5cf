/**
 * The unsharded classifier loss, computed the straightforward way: full C×N
 * logits, tf.logSumExp, and tfjs autograd for both gradients. It deliberately
 * shares no code with softmax-shard.ts beyond the margin formulas' definition:
 * the normalisation is written with autograd (not normalize.ts's hand-written
 * backward), the margin is the tensor customGrad op (not the float64 scalar
 * functions the shard uses), and the softmax backward comes from autograd.
 * The selftest and the tests compare the sharded computation against it.
 */
import { tf } from './tf.js';
import { marginLogits, validateMargin, type MarginSpec, type MarginVariant } from './margin.js';
import { MAX_ROW_LOSS } from './softmax-reduce.js';

// a type alias (not an interface) so it is a tf.TensorContainer and can be returned from tf.tidy
export type ReferenceResult = {
  /** Mean over the N rows of min(logsumexp(z_i) − z_{i,y_i}, −ln 1e-30) (arcface_torch's clamp). */
  loss: number;
  /** ∂loss/∂E, N×D, w.r.t. the raw embeddings. */
  gradEmb: tf.Tensor2D;
  /** ∂loss/∂W, C×D, w.r.t. the raw weight. */
  gradWeight: tf.Tensor2D;
};

/**
 * n(x) = x / sqrt(max(‖x‖², 1e-24)) = x / max(‖x‖, 1e-12), left to autograd
 * (the max keeps an all-zero row finite: its gradient is then g / 1e-12, as in PyTorch).
 */
function normalizeAutograd(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.maximum(tf.sum(tf.square(x), 1, true), 1e-24))) as tf.Tensor2D;
}

/**
 * Mean over rows of min(rowLoss, −ln 1e-30), as arcface_torch reports it
 * (−log of the target probability clamped at 1e-30), with the gradient of
 * the unclamped mean: arcface_torch's backward ignores the clamp (p − onehot).
 */
export function meanCappedRowLoss(rowLoss: tf.Tensor1D): tf.Scalar {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor;
    const n = x.shape[0]!;
    return { value: tf.mean(tf.minimum(x, MAX_ROW_LOSS)), gradFunc: (dy: tf.Tensor) => tf.mul(tf.onesLike(x), tf.div(dy, n)) };
  });
  return op(rowLoss) as tf.Scalar;
}

export function referenceLossAndGrads(
  emb: number[][] | tf.Tensor2D,
  weight: number[][] | tf.Tensor2D,
  labels: Int32Array | readonly number[],
  margin: MarginSpec,
  marginGrad: MarginVariant,
): ReferenceResult {
  validateMargin(margin, marginGrad);
  const e = emb instanceof tf.Tensor ? emb : tf.tensor2d(emb);
  const w = weight instanceof tf.Tensor ? weight : tf.tensor2d(weight);
  try {
    const [n] = e.shape;
    const [c] = w.shape;
    if (labels.length !== n) throw new Error(`referenceLossAndGrads: ${labels.length} labels for ${n} rows`);
    const y = Int32Array.from(labels);
    for (let i = 0; i < n; i++) if (!Number.isInteger(labels[i]) || y[i]! < 0 || y[i]! >= c) throw new Error(`referenceLossAndGrads: label ${labels[i]} at row ${i} outside [0, ${c})`);
    const onehot = tf.oneHot(tf.tensor1d(y, 'int32'), c);
    const lossOf = (E: tf.Tensor, W: tf.Tensor): tf.Scalar => {
      const cos = tf.clipByValue(tf.matMul(normalizeAutograd(E as tf.Tensor2D), normalizeAutograd(W as tf.Tensor2D), false, true), -1, 1) as tf.Tensor2D;
      const z = marginLogits(cos, y, margin, marginGrad);
      return meanCappedRowLoss(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, onehot), 1)) as tf.Tensor1D);
    };
    const { value, grads } = tf.valueAndGrads(lossOf)([e, w]);
    const loss = value.dataSync()[0]!;
    tf.dispose([value, onehot]);
    return { loss, gradEmb: grads[0] as tf.Tensor2D, gradWeight: grads[1] as tf.Tensor2D };
  } finally {
    if (e !== emb) e.dispose();
    if (w !== weight) w.dispose();
  }
}
