/**
 * The `cpu-native` backend: a fresh TensorFlow.js CPU backend carrying every stock
 * `cpu` kernel, except that the kernels below run in shardface's C++ addon
 * (OpenBLAS + OpenMP). Calls a native kernel does not cover (NCHW, dilation > 1,
 * int32, unusual broadcasts) run the stock kernel. `cpu` itself is left untouched,
 * so `--backend cpu` keeps stock kernels and tests can compare both in one process.
 */
import { availableParallelism } from 'node:os';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf } from '../tf.js';
import { type NativeAddon, loadAddon } from './addon.js';
import { type NativeKernel, kernelCounts, withFallback } from './kernel-util.js';
import * as conv from './kernels-conv.js';
import * as grouped from './kernels-grouped-small.js';
import { binary, reduce, relu } from './kernels-elementwise.js';
import { batchMatMul, fusedMatMul } from './kernels-matmul.js';
import * as classifier from './kernels-classifier.js';
import { ROW_NORMS_KERNEL, SHARD_BACKWARD_KERNEL, SHARD_FORWARD_KERNEL } from '../softmax-shard.js';
import { GATHER_ROWS_KERNEL, ROW_ADAMW_KERNEL, ROW_SGD_KERNEL } from '../row-optimizer.js';
import * as normAct from './kernels-norm-act.js';
import { BN_BACKPROP_KERNEL, BN_PRELU_KERNEL, BN_TRAIN_KERNEL, PRELU_BACKPROP_KERNEL, PRELU_KERNEL, normActGradients } from '../norm-act.js';

const NATIVE_BACKEND = 'cpu-native';

export type NativeResult = { ok: true; threads: number } | { ok: false; reason: string };

/** Kernels replaced in `cpu-native`, by tfjs kernel name. */
function nativeKernels(addon: NativeAddon): Record<string, NativeKernel> {
  return {
    BatchMatMul: batchMatMul(addon),
    _FusedMatMul: fusedMatMul(addon),
    Conv2D: conv.conv2D(addon),
    FusedConv2D: conv.fusedConv2D(addon),
    Conv2DBackpropInput: conv.conv2DBackpropInput(addon),
    Conv2DBackpropFilter: conv.conv2DBackpropFilter(addon),
    DepthwiseConv2dNative: conv.depthwiseConv2d(addon),
    FusedDepthwiseConv2D: conv.fusedDepthwiseConv2d(addon),
    DepthwiseConv2dNativeBackpropInput: conv.depthwiseBackpropInput(addon),
    DepthwiseConv2dNativeBackpropFilter: conv.depthwiseBackpropFilter(addon),
    Add: binary(addon, 'Add'),
    Sub: binary(addon, 'Sub'),
    Multiply: binary(addon, 'Multiply'),
    RealDiv: binary(addon, 'RealDiv'),
    Maximum: binary(addon, 'Maximum'),
    Minimum: binary(addon, 'Minimum'),
    SquaredDifference: binary(addon, 'SquaredDifference'),
    Prelu: binary(addon, 'Prelu'),
    Relu: relu(addon),
    Sum: reduce(addon, false),
    Mean: reduce(addon, true),
  };
}

/**
 * Kernels with no stock counterpart: grouped-conv.ts dispatches to the first,
 * softmax-shard.ts and row-optimizer.ts to the classifier's (kernels-classifier.ts),
 * norm-act.ts to BatchNorm/PReLU's (kernels-norm-act.ts).
 */
function shardfaceKernels(addon: NativeAddon): Record<string, NativeKernel> {
  return {
    // few channels per group: direct loops (kernels-grouped-small.ts), else im2col + GEMM
    [conv.GROUPED_CONV]: grouped.groupedSmall(addon, conv.groupedConv2d(addon)),
    [conv.GROUPED_CONV_BACKPROP_INPUT]: grouped.groupedSmallBackpropInput(addon, conv.groupedConv2dBackpropInput(addon)),
    [conv.GROUPED_CONV_BACKPROP_FILTER]: grouped.groupedSmallBackpropFilter(addon, conv.groupedConv2dBackpropFilter(addon)),
    [ROW_NORMS_KERNEL]: classifier.rowNorms(addon),
    [SHARD_FORWARD_KERNEL]: classifier.shardForward(addon),
    [SHARD_BACKWARD_KERNEL]: classifier.shardBackward(addon),
    [GATHER_ROWS_KERNEL]: classifier.gatherRows(addon),
    [ROW_SGD_KERNEL]: classifier.rowSgdUpdate(addon),
    [ROW_ADAMW_KERNEL]: classifier.rowAdamWUpdate(addon),
    [BN_TRAIN_KERNEL]: normAct.batchNormTrain(addon, false),
    [BN_PRELU_KERNEL]: normAct.batchNormTrain(addon, true),
    [BN_BACKPROP_KERNEL]: normAct.batchNormTrainBackprop(addon),
    [PRELU_KERNEL]: normAct.prelu(addon),
    [PRELU_BACKPROP_KERNEL]: normAct.preluBackprop(addon),
  };
}

function defaultThreads(): number {
  const fromEnv = Number(process.env.SHARDFACE_THREADS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : availableParallelism();
}

let result: NativeResult | null = null;
let addonRef: NativeAddon | null = null;

/**
 * Loads the addon, sets its thread count (default SHARDFACE_THREADS, else all
 * cores) and registers the `cpu-native` backend. Does not switch backends.
 * Idempotent; a later call with an explicit `threads` only changes the thread count.
 */
export function registerNativeKernels(opts: { threads?: number } = {}): NativeResult {
  if (result) {
    if (result.ok && addonRef && opts.threads !== undefined) result = { ok: true, threads: addonRef.setThreads(opts.threads) };
    return result;
  }
  let addon: NativeAddon;
  try {
    addon = loadAddon();
  } catch (e) {
    result = { ok: false, reason: `native addon not loaded: ${(e as Error).message.split('\n')[0]}` };
    return result;
  }
  addonRef = addon;
  // SHARDFACE_REUSE_MEMORY=0 leaves glibc's defaults (A/B benches); see threads.cc.
  if (process.env.SHARDFACE_REUSE_MEMORY !== '0') addon.reuseFreedMemory(true);
  const threads = addon.setThreads(opts.threads ?? defaultThreads());
  registerBackend(addon);
  result = { ok: true, threads };
  return result;
}

/** How often each native kernel ran natively vs fell back to stock (tests check the native path really ran). */
export function nativeKernelCounts(): Record<string, { native: number; stock: number }> {
  return Object.fromEntries([...kernelCounts].map(([k, v]) => [k, { ...v }]));
}

/** The loaded addon (for benches: direct GEMM, info); null before a successful registration. */
export function nativeAddon(): NativeAddon | null {
  return addonRef;
}

function registerBackend(addon: NativeAddon): void {
  // Another copy of this module (dist and src in one process) may have got here first.
  if (tf.findBackendFactory(NATIVE_BACKEND) !== null) return;
  tf.registerBackend(
    NATIVE_BACKEND,
    () => {
      const backend = new MathBackendCPU();
      // The stock backend advertises tfjs-node on first use; shardface logs its own line.
      (backend as unknown as { firstUse: boolean }).firstUse = false;
      return backend;
    },
    0, // below `cpu`, so tfjs never picks it on its own
  );
  const native = nativeKernels(addon);
  for (const config of tf.getKernelsForBackend('cpu')) {
    const mine = native[config.kernelName];
    tf.registerKernel({
      ...config,
      backendName: NATIVE_BACKEND,
      kernelFunc: mine ? withFallback(config.kernelName, mine, config.kernelFunc) : config.kernelFunc,
    });
  }
  for (const [kernelName, kernel] of Object.entries(shardfaceKernels(addon))) tf.registerKernel({ kernelName, backendName: NATIVE_BACKEND, kernelFunc: withFallback(kernelName, kernel, undefined) });
  tf.registerGradient(conv.groupedConvGradient);
  for (const g of normActGradients) tf.registerGradient(g);
}
