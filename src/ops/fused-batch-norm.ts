/**
 * BatchNorm in training mode as TensorFlow's own fused ops, for the
 * `tensorflow` backend (GPU): one `FusedBatchNormV3` forward (batch moments,
 * normalisation, scale and shift in one kernel; cuDNN on the GPU) and one
 * `FusedBatchNormGradV3` backward, instead of the composite's tf.moments and
 * broadcasts, about 20 element-wise passes and reductions over x with their
 * gradients. tfjs-node registers `FusedBatchNorm` only for inference (running
 * statistics, no gradient), so shardface runs the training variants itself,
 * by name, through tfjs-node's backend, as tfjs-node's own kernels do.
 *
 * norm-act.ts dispatches here where the backend has FUSED_BN_KERNEL
 * (backend.ts registers it for tensorflow; cpu-native keeps its native
 * kernels). Any rank works: the statistics are over every axis but the last,
 * so x is viewed as [n, 1, 1, C] NHWC.
 *
 * The op returns the unbiased batch variance (for running statistics);
 * batchNormTrain's contract is the biased one, so it is rescaled by (n−1)/n,
 * a [C] op. Its gradient also serves losses that reach the mean and variance
 * (`statsGradient`, the default, adds their terms to ∂x: three element-wise
 * ops); the model's runner, whose statistics feed only the running averages,
 * turns that off and pays for the one backward op alone.
 */
import { tf } from './tf.js';
import type { BatchNormTrainResult } from './norm-act.js';

/** {x [n,1,1,C], gamma [C], beta [C]}, {epsilon, statsGradient} → y, batch mean, unbiased batch variance, reserve 1–3. */
export const FUSED_BN_KERNEL = 'SfFusedBatchNormTrain';
/** {dy, x, gamma, reserve1, reserve2, reserve3}, {epsilon} → dx, dgamma, dbeta. */
export const FUSED_BN_GRAD_KERNEL = 'SfFusedBatchNormTrainGrad';

/** y, mean and (biased) variance of x over every axis but the last, by the fused kernel. */
export function fusedBatchNormTrain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number, statsGradient: boolean): BatchNormTrainResult {
  const c = x.shape[x.rank - 1]!;
  const n = x.size / c;
  return tf.tidy(() => {
    const [y4, mean, unbiased] = tf.engine().runKernel(FUSED_BN_KERNEL, { x: tf.reshape(x, [n, 1, 1, c]), gamma: tf.reshape(gamma, [c]), beta: tf.reshape(beta, [c]) }, {
      epsilon: eps,
      statsGradient,
    } as unknown as tf.NamedAttrMap) as tf.Tensor[];
    return { y: tf.reshape(y4!, x.shape), mean: mean!, variance: tf.mul(unbiased!, (n - 1) / n) };
  });
}

export const fusedBatchNormGradient: tf.GradConfig = {
  kernelName: FUSED_BN_KERNEL,
  inputsToSave: ['x', 'gamma'],
  // mean (for the statistics' own gradient) and the three reserve spaces the backward op reads
  outputsToSave: [false, true, false, true, true, true],
  gradFunc: (dys, saved, attrs) => {
    const [dy, dmean, dunbiased] = dys as tf.Tensor[];
    const [x, gamma, mean, r1, r2, r3] = saved as tf.Tensor[];
    const { epsilon, statsGradient } = attrs as unknown as { epsilon: number; statsGradient: boolean };
    const [dxNorm, dgamma, dbeta] = tf
      .engine()
      .runKernel(FUSED_BN_GRAD_KERNEL, { dy: dy!, x: x!, gamma: gamma!, reserve1: r1!, reserve2: r2!, reserve3: r3! }, { epsilon } as unknown as tf.NamedAttrMap) as tf.Tensor[];
    let dx = dxNorm!;
    if (statsGradient) {
      // ∂mean/∂x = 1/n, ∂var_u/∂x = 2(x − mean)/(n − 1): dx += x·a + b per channel
      const n = x!.size / x!.shape[3]!;
      const a = tf.mul(dunbiased!, 2 / (n - 1));
      const b = tf.sub(tf.div(dmean!, n), tf.mul(mean!, a));
      dx = tf.add(dx, tf.add(tf.mul(x!, a), b));
    }
    return { x: () => dx, gamma: () => dgamma!, beta: () => dbeta! };
  },
};

/** The part of tfjs-node's NodeJSKernelBackend used here (@tensorflow/tfjs-node/src/nodejs_kernel_backend.ts). */
interface TfjsNodeBackend {
  binding: { TF_ATTR_TYPE: number; TF_ATTR_FLOAT: number; TF_ATTR_STRING: number; TF_ATTR_BOOL: number; TF_FLOAT: number };
  executeMultipleOutputs(op: string, attrs: { name: string; type: number; value: unknown }[], inputs: tf.TensorInfo[], numOutputs: number): tf.Tensor[];
}

function opAttrs(b: TfjsNodeBackend, epsilon: number, extra: { name: string; type: number; value: unknown }[] = []) {
  const { TF_ATTR_TYPE, TF_ATTR_FLOAT, TF_ATTR_STRING, TF_ATTR_BOOL, TF_FLOAT } = b.binding;
  return [
    { name: 'T', type: TF_ATTR_TYPE, value: TF_FLOAT },
    { name: 'U', type: TF_ATTR_TYPE, value: TF_FLOAT },
    { name: 'epsilon', type: TF_ATTR_FLOAT, value: epsilon },
    { name: 'data_format', type: TF_ATTR_STRING, value: 'NHWC' },
    { name: 'is_training', type: TF_ATTR_BOOL, value: true },
    ...extra,
  ];
}

/** tfjs-node's forward: FusedBatchNormV3 in training mode (running-statistics inputs unused at factor 1). */
export const tensorflowFusedBatchNorm: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as TfjsNodeBackend;
  const x = inputs.x as tf.TensorInfo;
  const c = x.shape[3]!;
  const { epsilon } = attrs as unknown as { epsilon: number };
  const mean = tf.zeros([c]);
  const variance = tf.ones([c]);
  try {
    const factor = [{ name: 'exponential_avg_factor', type: b.binding.TF_ATTR_FLOAT, value: 1 }];
    return b.executeMultipleOutputs('FusedBatchNormV3', opAttrs(b, epsilon, factor), [x, inputs.gamma as tf.TensorInfo, inputs.beta as tf.TensorInfo, mean, variance], 6);
  } finally {
    tf.dispose([mean, variance]);
  }
};

/** tfjs-node's backward: FusedBatchNormGradV3 (dx, dγ, dβ; its two reserve outputs are dropped). */
export const tensorflowFusedBatchNormGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as TfjsNodeBackend;
  const { epsilon } = attrs as unknown as { epsilon: number };
  const names = ['dy', 'x', 'gamma', 'reserve1', 'reserve2', 'reserve3'];
  const outs = b.executeMultipleOutputs(
    'FusedBatchNormGradV3',
    opAttrs(b, epsilon),
    names.map((k) => inputs[k] as tf.TensorInfo),
    5,
  );
  tf.dispose(outs.slice(3));
  return outs.slice(0, 3);
};
