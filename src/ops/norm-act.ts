/**
 * BatchNorm in training mode (batch statistics over every axis but the last),
 * optionally fused with a per-channel PReLU, and PReLU on its own. As with
 * grouped-conv.ts, each function is written once for every backend:
 *
 *  - where the backend has the native kernel (cpu-native: `SfBatchNormTrain`,
 *    `SfBatchNormPrelu`, `SfPrelu`), it runs as that one kernel, and its
 *    gradient (registered below) as one native backward kernel
 *    (`SfBatchNormTrainBackprop`, `SfPreluBackprop`) instead of the dozen
 *    broadcasting element-wise ops and reductions of the composite's gradient;
 *  - BatchNorm where the backend has TensorFlow's fused training ops
 *    (tensorflow, GPU included: fused-batch-norm.ts) as FusedBatchNormV3 and
 *    its gradient as FusedBatchNormGradV3, PReLU as tf.prelu after it;
 *  - otherwise (stock cpu, or a case the kernels above do not cover) as
 *    the tfjs composite that has always run: tf.moments, one scale and one shift
 *    per channel, tf.prelu.
 *
 * Both return the batch mean and the biased variance (the normalisation's), for
 * the caller's running-statistics update. Gradients also flow through them, as
 * through the composite's tf.moments.
 */
import { tf } from './tf.js';
import { FUSED_BN_KERNEL, fusedBatchNormTrain } from './fused-batch-norm.js';

export const BN_TRAIN_KERNEL = 'SfBatchNormTrain';
export const BN_PRELU_KERNEL = 'SfBatchNormPrelu';
export const BN_BACKPROP_KERNEL = 'SfBatchNormTrainBackprop';
export const PRELU_KERNEL = 'SfPrelu';
export const PRELU_BACKPROP_KERNEL = 'SfPreluBackprop';

export interface BatchNormTrainResult {
  /** Normalised (and, for batchNormPrelu, activated) x, x's shape. */
  y: tf.Tensor;
  /** Per-channel batch mean, [C]. */
  mean: tf.Tensor;
  /** Per-channel biased batch variance, [C]. */
  variance: tf.Tensor;
}

export interface BatchNormOptions {
  /**
   * Whether gradients must flow through the returned mean and variance (default true). A caller
   * whose statistics feed only running averages passes false; the fused TensorFlow path then
   * skips their terms. The native and composite paths are exact either way.
   */
  statsGradient?: boolean;
}

/** SHARDFACE_NATIVE_NORM_ACT=0 starts with the native kernels off (A/B benches across worker processes). */
let nativeEnabled = process.env.SHARDFACE_NATIVE_NORM_ACT !== '0';

/** Turns the native kernels off (composite on every backend) or back on: for A/B benches and tests. */
export function setNativeNormAct(on: boolean): void {
  nativeEnabled = on;
}

function hasNative(kernel: string, ...ts: tf.Tensor[]): boolean {
  return nativeEnabled && ts.every((t) => t.dtype === 'float32') && tf.getKernel(kernel, tf.getBackend()) !== undefined;
}

/** t holds one value per channel of x (shape [..., C], broadcasting to x's shape). */
function perChannel(t: tf.Tensor, x: tf.Tensor): boolean {
  const c = x.shape[x.rank - 1]!;
  return t.rank >= 1 && t.rank <= x.rank && t.size === c && t.shape[t.rank - 1] === c;
}

function bnCovered(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): boolean {
  return x.rank >= 2 && x.size > 0 && perChannel(gamma, x) && perChannel(beta, x);
}

/**
 * y = (x − mean)·γ/√(variance + eps) + β with the batch statistics of x (every
 * axis but the last); x is [B, C] (BatchNorm1d) or NHWC.
 */
export function batchNormTrain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number, opts: BatchNormOptions = {}): BatchNormTrainResult {
  if (bnCovered(x, gamma, beta) && hasNative(BN_TRAIN_KERNEL, x, gamma, beta)) {
    const [y, mean, variance] = tf.engine().runKernel(BN_TRAIN_KERNEL, { x, gamma, beta }, { epsilon: eps }) as tf.Tensor[];
    return { y: y!, mean: mean!, variance: variance! };
  }
  if (bnCovered(x, gamma, beta) && hasNative(FUSED_BN_KERNEL, x, gamma, beta)) return fusedBatchNormTrain(x, gamma, beta, eps, opts.statsGradient ?? true);
  return batchNormComposite(x, gamma, beta, eps);
}

/** prelu(batchNormTrain(x).y, alpha), one kernel where native (alpha per channel). */
export function batchNormPrelu(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, alpha: tf.Tensor, eps: number, opts: BatchNormOptions = {}): BatchNormTrainResult {
  if (bnCovered(x, gamma, beta) && perChannel(alpha, x) && hasNative(BN_PRELU_KERNEL, x, gamma, beta, alpha)) {
    const [y, mean, variance] = tf.engine().runKernel(BN_PRELU_KERNEL, { x, gamma, beta, alpha }, { epsilon: eps }) as tf.Tensor[];
    return { y: y!, mean: mean!, variance: variance! };
  }
  const bn = batchNormTrain(x, gamma, beta, eps, opts);
  return { ...bn, y: prelu(bn.y, alpha) };
}

/** y = x < 0 ? α·x : x, α per channel (last axis) or a scalar. */
export function prelu(x: tf.Tensor, alpha: tf.Tensor): tf.Tensor {
  const covered = x.rank >= 1 && x.size > 0 && (perChannel(alpha, x) || (alpha.size === 1 && alpha.rank <= x.rank));
  if (covered && hasNative(PRELU_KERNEL, x, alpha)) return tf.engine().runKernel(PRELU_KERNEL, { x, alpha }, {}) as tf.Tensor;
  return tf.prelu(x, alpha);
}

/** What the model ran before the native kernels, and still runs on other backends. */
function batchNormComposite(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): BatchNormTrainResult {
  return tf.tidy(() => {
    const axes = x.shape.slice(0, -1).map((_, i) => i);
    const { mean, variance } = tf.moments(x, axes);
    // Folded into one scale and one shift per channel.
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(variance, eps)));
    const shift = tf.sub(beta, tf.mul(mean, scale));
    return { y: tf.add(tf.mul(x, scale), shift), mean, variance };
  });
}

/** dys = [dy, dmean, dvariance]; saved = [x, gamma, beta, (alpha), mean, variance]. */
function batchNormGrad(withAlpha: boolean): tf.GradFunc {
  return (dys, saved, attrs) => {
    const [dy, dmean, dvariance] = dys as tf.Tensor[];
    const [x, gamma, beta, ...rest] = saved;
    const alpha = withAlpha ? rest.shift() : undefined;
    const [mean, variance] = rest;
    const inputs: tf.NamedTensorMap = { x: x!, gamma: gamma!, beta: beta!, mean: mean!, variance: variance!, dy: dy!, dmean: dmean!, dvariance: dvariance! };
    if (alpha) inputs.alpha = alpha;
    const [dx, dgamma, dbeta, dalpha] = tf.engine().runKernel(BN_BACKPROP_KERNEL, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
    const grads: Record<string, () => tf.Tensor> = { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
    if (withAlpha) grads.alpha = () => dalpha!;
    return grads;
  };
}

const batchNormTrainGradient: tf.GradConfig = {
  kernelName: BN_TRAIN_KERNEL,
  inputsToSave: ['x', 'gamma', 'beta'],
  outputsToSave: [false, true, true],
  gradFunc: batchNormGrad(false),
};

const batchNormPreluGradient: tf.GradConfig = {
  kernelName: BN_PRELU_KERNEL,
  inputsToSave: ['x', 'gamma', 'beta', 'alpha'],
  outputsToSave: [false, true, true],
  gradFunc: batchNormGrad(true),
};

const preluGradient: tf.GradConfig = {
  kernelName: PRELU_KERNEL,
  inputsToSave: ['x', 'alpha'],
  gradFunc: (dy, saved) => {
    const [x, alpha] = saved;
    const [dx, dalpha] = tf.engine().runKernel(PRELU_BACKPROP_KERNEL, { x: x!, alpha: alpha!, dy: dy as tf.Tensor }, {}) as tf.Tensor[];
    return { x: () => dx!, alpha: () => dalpha! };
  },
};

/** The gradients of the native kernels (tf.registerGradient is global; they only ever run where the kernels do). */
export const normActGradients: tf.GradConfig[] = [batchNormTrainGradient, batchNormPreluGradient, preluGradient];
