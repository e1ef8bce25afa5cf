/** BatchMatMul and _FusedMatMul over the addon's BLAS GEMM (with batch broadcasting). */
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { ACTIVATIONS, type KernelArgs, type NativeKernel, type TensorInfo, f32, lineUp, output, sizeOf, uninitialised } from './kernel-util.js';

/** a·b for float32 tensors of rank ≥ 2; null if the batch dims broadcast in a way we do not cover. */
function matMul(addon: NativeAddon, backend: MathBackendCPU, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): TensorInfo | null {
  const av = f32(backend, a),
    bv = f32(backend, b);
  if (!av || !bv || a.shape.length < 2 || b.shape.length < 2) return null;
  const ra = a.shape.length,
    rb = b.shape.length;
  const k = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const kb = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const m = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const n = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (k !== kb) return null; // the stock kernel throws the descriptive error
  const batchA = sizeOf(a.shape.slice(0, -2)),
    batchB = sizeOf(b.shape.slice(0, -2));
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) return null;
  let outer: number[];
  try {
    outer = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  } catch {
    return null;
  }
  const batch = Math.max(batchA, batchB);
  // sgemm with beta = 0 writes every element, so the output need not be zeroed first (k = 0 writes none)
  const out = k > 0 ? uninitialised(batch * m * n) : new Float32Array(batch * m * n);
  if (out.length > 0 && k > 0) addon.batchMatMul(av, bv, out, batch, batchA, batchB, m, n, k, transposeA, transposeB);
  return output(backend, [...outer, m, n], out);
}

export function batchMatMul(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }: KernelArgs, backend) => {
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    return matMul(addon, backend, inputs.a!, inputs.b!, transposeA, transposeB);
  };
}

export function fusedMatMul(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }: KernelArgs, backend) => {
    const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as {
      transposeA: boolean;
      transposeB: boolean;
      activation?: string;
      leakyreluAlpha?: number;
    };
    const act = ACTIVATIONS[activation ?? 'linear'];
    if (act === undefined || !f32(backend, inputs.a) || !f32(backend, inputs.b)) return null;
    const a = inputs.a!,
      b = inputs.b!;
    const ra = a.shape.length,
      rb = b.shape.length;
    const m = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const n = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
    let outShape: number[];
    try {
      outShape = [...tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2)), m, n];
    } catch {
      return null;
    }
    const bias = lineUp(backend, inputs.bias, outShape);
    const prelu = act === ACTIVATIONS.prelu ? lineUp(backend, inputs.preluActivationWeights, outShape) : { mode: 0, values: null };
    if (!bias || !prelu || (act === ACTIVATIONS.prelu && !prelu.values)) return null;
    const y = matMul(addon, backend, a, b, transposeA, transposeB);
    if (!y) return null;
    const yv = f32(backend, y)!;
    addon.epilogue(yv, yv.length / Math.max(n, 1), n, bias.values, bias.mode, act, leakyreluAlpha ?? 0.2, prelu.values, prelu.mode);
    return y;
  };
}
