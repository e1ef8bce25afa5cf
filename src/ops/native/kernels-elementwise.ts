/**
 * Memory-bound float32 kernels: broadcasting binary ops, Relu, Sum and Mean.
 * Each covers the broadcast/axis patterns that shardface's models produce (see
 * elementwise.cc) and leaves everything else to the stock kernel.
 */
import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { type NativeKernel, type TensorInfo, f32, output, sizeOf, uninitialised } from './kernel-util.js';

/** addon.cc's BinaryOp codes. */
const BINARY_OPS = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3, Prelu: 4, Maximum: 5, Minimum: 6, SquaredDifference: 7 } as const;
export type BinaryKernelName = keyof typeof BINARY_OPS;

export interface BroadcastPlan {
  outShape: number[];
  /** The output viewed as [p, q, r]; the broadcast operand is [p, 1, r]. */
  p: number;
  q: number;
  r: number;
  /** 0: same shapes; 1: b broadcasts; 2: a broadcasts. */
  side: 0 | 1 | 2;
}

/** The [p,q,r] view of a broadcast, or null if it is not one operand full and the other constant along one block of axes. */
function broadcastPlan(aShape: number[], bShape: number[]): BroadcastPlan | null {
  let outShape: number[];
  try {
    outShape = tf.broadcast_util.assertAndGetBroadcastShape(aShape, bShape);
  } catch {
    return null;
  }
  const rank = outShape.length;
  const padded = (s: number[]): number[] => [...new Array<number>(rank - s.length).fill(1), ...s];
  const a = padded(aShape),
    b = padded(bShape);
  const aFull = a.every((d, i) => d === outShape[i]);
  const bFull = b.every((d, i) => d === outShape[i]);
  const total = sizeOf(outShape);
  if (aFull && bFull) return { outShape, p: 1, q: total, r: 1, side: 0 };
  if (!aFull && !bFull) return null;
  const small = aFull ? b : a;
  let first = -1,
    last = -1;
  for (let i = 0; i < rank; i++) {
    if (small[i] === 1 && outShape[i] !== 1) {
      if (first < 0) first = i;
      last = i;
    }
  }
  for (let i = first; i <= last; i++) if (small[i] !== 1 && outShape[i] !== 1) return null;
  return {
    outShape,
    p: sizeOf(outShape.slice(0, first)),
    q: sizeOf(outShape.slice(first, last + 1)),
    r: sizeOf(outShape.slice(last + 1)),
    side: aFull ? 1 : 2,
  };
}

export function binary(addon: NativeAddon, name: BinaryKernelName): NativeKernel {
  const op = BINARY_OPS[name];
  const [first, second] = name === 'Prelu' ? ['x', 'alpha'] : ['a', 'b'];
  return ({ inputs }, backend) => {
    const a = inputs[first!] as TensorInfo,
      b = inputs[second!] as TensorInfo;
    const av = f32(backend, a),
      bv = f32(backend, b);
    if (!av || !bv) return null;
    const plan = broadcastPlan(a.shape, b.shape);
    if (!plan) return null;
    const out = uninitialised(sizeOf(plan.outShape));
    if (out.length > 0) addon.binary(op, av, bv, out, plan.p, plan.q, plan.r, plan.side);
    return output(backend, plan.outShape, out);
  };
}

export function relu(addon: NativeAddon): NativeKernel {
  return ({ inputs }, backend) => {
    const x = inputs.x as TensorInfo;
    const xv = f32(backend, x);
    if (!xv) return null;
    const out = uninitialised(xv.length);
    if (out.length > 0) addon.relu(xv, out);
    return output(backend, x.shape, out);
  };
}

export interface ReducePlan {
  /** x viewed as [p, q, r], reduced over q. */
  p: number;
  q: number;
  r: number;
  outShape: number[];
}

/** The [p,q,r] view of a reduction, or null if the reduced axes (of size > 1) are not contiguous. */
function reducePlan(shape: number[], axis: number | number[] | undefined, keepDims: boolean): ReducePlan | null {
  const axes = tf.util.parseAxisParam(axis ?? (null as unknown as number[]), shape);
  const reduced = shape.map((_, i) => axes.includes(i));
  let first = -1,
    last = -1;
  for (let i = 0; i < shape.length; i++) {
    if (reduced[i] && shape[i] !== 1) {
      if (first < 0) first = i;
      last = i;
    }
  }
  if (first >= 0) for (let i = first; i <= last; i++) if (!reduced[i] && shape[i] !== 1) return null;
  const [outShape] = tf.backend_util.computeOutAndReduceShapes(shape, axes);
  const q = sizeOf(axes.map((i) => shape[i]!));
  const r = first < 0 ? 1 : sizeOf(shape.slice(last + 1));
  return {
    p: q > 0 && r > 0 ? sizeOf(shape) / (q * r) : 0,
    q,
    r,
    outShape: keepDims ? tf.backend_util.expandShapeToKeepDim(outShape!, axes) : outShape!,
  };
}

/** Sum (mean = false) or Mean (mean = true). */
export function reduce(addon: NativeAddon, mean: boolean): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const x = inputs.x as TensorInfo;
    const xv = f32(backend, x);
    if (!xv || xv.length === 0) return null;
    const { axis, keepDims } = attrs as { axis: number | number[]; keepDims: boolean };
    const plan = reducePlan(x.shape, axis, keepDims);
    if (!plan) return null;
    const out = uninitialised(sizeOf(plan.outShape));
    addon.reduceSum(xv, out, plan.p, plan.q, plan.r, mean ? 1 / plan.q : 1);
    return output(backend, plan.outShape, out);
  };
}
