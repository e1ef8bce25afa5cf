/**
 * Shared plumbing for the native kernel wrappers: reading a tensor's Float32Array
 * without copying, making outputs, and falling back to the stock kernel.
 */
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf } from '../tf.js';
import type { ConvGeometry } from './addon.js';

export type KernelArgs = Parameters<tf.KernelFunc>[0];
export type TensorInfo = tf.TensorInfo;

/**
 * A native kernel: returns its result, or null when this call is a case it does
 * not cover (dtype, layout, dilation, broadcast), in which case the stock kernel runs.
 */
export type NativeKernel = (args: KernelArgs, backend: MathBackendCPU) => TensorInfo | TensorInfo[] | null;

/** Per kernel name: calls that ran natively and calls that fell back to the stock kernel. */
export const kernelCounts = new Map<string, { native: number; stock: number }>();

/** Wraps a native kernel so uncovered calls go to the stock `cpu` kernel. */
export function withFallback(name: string, native: NativeKernel, stock: tf.KernelFunc | undefined): tf.KernelFunc {
  const counts = { native: 0, stock: 0 };
  kernelCounts.set(name, counts);
  return (args) => {
    const out = native(args, args.backend as MathBackendCPU);
    if (out !== null) {
      counts.native++;
      return out;
    }
    counts.stock++;
    if (!stock) throw new Error(`${name}: the native kernel does not cover this call and there is no stock kernel`);
    return stock(args);
  };
}

/** The tensor's own Float32Array (no copy), or null if it is not a float32 tensor on this backend. */
export function f32(backend: MathBackendCPU, t: TensorInfo | undefined): Float32Array | null {
  if (!t || t.dtype !== 'float32') return null;
  const values = backend.data.get(t.dataId)?.values;
  return values instanceof Float32Array ? values : null;
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Below this many floats zeroing costs less than the Buffer machinery skipping it. */
const UNINITIALISED_MIN = 1 << 14;

/**
 * A Float32Array of `n` floats with unspecified contents, for outputs a kernel
 * writes in full: a fresh Float32Array is zeroed, a pass over the whole block
 * that the kernel's own writes make useless. With freed memory kept for reuse
 * (threads.cc reuseFreedMemory) the block comes back without page faults and,
 * this way, without a memset. Its own ArrayBuffer (offset 0, exact length), as
 * a fresh Float32Array would have.
 */
export function uninitialised(n: number): Float32Array {
  if (n < UNINITIALISED_MIN) return new Float32Array(n);
  const b = Buffer.allocUnsafeSlow(n * 4);
  return new Float32Array(b.buffer, b.byteOffset, n);
}

export function output(backend: MathBackendCPU, shape: number[], values: Float32Array): TensorInfo {
  return backend.makeTensorInfo(shape, 'float32', values);
}

export function geometry(info: tf.backend_util.Conv2DInfo, groups: number): ConvGeometry {
  return [
    info.batchSize,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    info.filterHeight,
    info.filterWidth,
    info.outHeight,
    info.outWidth,
    info.outChannels,
    info.strideHeight,
    info.strideWidth,
    info.padInfo.top,
    info.padInfo.left,
    groups,
  ];
}

/** Bias/PReLU weights against a [rows, cols] output: how they broadcast, in addon.cc's codes. */
const Broadcast = { None: 0, Scalar: 1, PerColumn: 2, Full: 3 } as const;
export type Broadcast = (typeof Broadcast)[keyof typeof Broadcast];

/** How `t` broadcasts against `outShape` as seen by the epilogue, or null if it is none of its cases. */
export function lineUp(backend: MathBackendCPU, t: TensorInfo | undefined, outShape: number[]): { mode: Broadcast; values: Float32Array | null } | null {
  if (!t) return { mode: Broadcast.None, values: null };
  const values = f32(backend, t);
  if (!values || t.shape.length > outShape.length) return null;
  const size = sizeOf(t.shape);
  const cols = outShape[outShape.length - 1] ?? 1;
  if (size === 1) return { mode: Broadcast.Scalar, values };
  if (size === cols && t.shape[t.shape.length - 1] === cols) return { mode: Broadcast.PerColumn, values };
  const lead = outShape.length - t.shape.length;
  if (t.shape.every((d, i) => d === outShape[lead + i]) && size === sizeOf(outShape)) return { mode: Broadcast.Full, values };
  return null;
}

/** Activation names of the fused kernels, in addon.cc's codes. */
export const ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, relu6: 2, prelu: 3, leakyrelu: 4, elu: 5, sigmoid: 6 };
