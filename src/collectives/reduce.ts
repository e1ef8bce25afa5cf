/**
 * The arithmetic of the ring: tight element-wise loops, one copy per element
 * type so every loop stays monomorphic. Float sums round to float32 after every
 * addition (a JavaScript add of two float32 values is exact in double, so the
 * store rounds it exactly as a float32 add would); int32 sums wrap.
 *
 * `acc` is always a chunk just received (ours to overwrite), `own` the same
 * elements of this rank's array.
 */
import { CollectiveError } from './errors.js';

export type RingArray = Float32Array | Int32Array;
export type ReduceOp = 'sum' | 'mean' | 'max';

export interface Kernels {
  /** acc[i] = acc[i] ∘ own[i] (∘ = + for sum and mean, max for max). */
  combine(acc: RingArray, own: RingArray): void;
  /** acc[i] = own[i] = (acc[i] ∘ own[i]) / divisor — the last reduction of a block, stored twice. */
  finishInPlace(acc: RingArray, own: RingArray, divisor: number): void;
  /** out[i] = (acc[i] ∘ own[i]) / divisor. */
  finishInto(out: RingArray, acc: RingArray, own: RingArray, divisor: number): void;
}

// Unrolled by 8: V8 does not vectorise, but independent adds overlap in the pipeline.
function sumF32(acc: Float32Array, own: Float32Array): void {
  const n = acc.length;
  const n8 = n - (n % 8);
  let i = 0;
  for (; i < n8; i += 8) {
    acc[i] += own[i]!;
    acc[i + 1] += own[i + 1]!;
    acc[i + 2] += own[i + 2]!;
    acc[i + 3] += own[i + 3]!;
    acc[i + 4] += own[i + 4]!;
    acc[i + 5] += own[i + 5]!;
    acc[i + 6] += own[i + 6]!;
    acc[i + 7] += own[i + 7]!;
  }
  for (; i < n; i++) acc[i] += own[i]!;
}
function sumI32(acc: Int32Array, own: Int32Array): void {
  const n = acc.length;
  const n8 = n - (n % 8);
  let i = 0;
  for (; i < n8; i += 8) {
    acc[i] = (acc[i]! + own[i]!) | 0;
    acc[i + 1] = (acc[i + 1]! + own[i + 1]!) | 0;
    acc[i + 2] = (acc[i + 2]! + own[i + 2]!) | 0;
    acc[i + 3] = (acc[i + 3]! + own[i + 3]!) | 0;
    acc[i + 4] = (acc[i + 4]! + own[i + 4]!) | 0;
    acc[i + 5] = (acc[i + 5]! + own[i + 5]!) | 0;
    acc[i + 6] = (acc[i + 6]! + own[i + 6]!) | 0;
    acc[i + 7] = (acc[i + 7]! + own[i + 7]!) | 0;
  }
  for (; i < n; i++) acc[i] = (acc[i]! + own[i]!) | 0;
}
/** NaN-propagating max (a NaN on either side wins). */
function maxF32(acc: Float32Array, own: Float32Array): void {
  for (let i = 0, n = acc.length; i < n; i++) {
    const q = own[i]!;
    if (q > acc[i]! || q !== q) acc[i] = q;
  }
}
function maxI32(acc: Int32Array, own: Int32Array): void {
  for (let i = 0, n = acc.length; i < n; i++) {
    const q = own[i]!;
    if (q > acc[i]!) acc[i] = q;
  }
}

/** Divides once, after the float32 sum is complete: v = float32(float32(Σ) / divisor). */
function divideF32(a: Float32Array, divisor: number): void {
  for (let i = 0, n = a.length; i < n; i++) a[i] = a[i]! / divisor;
}

// The last reduction of a block: combine, divide once for 'mean', then copy
// (a memcpy, far faster than a second store in the JavaScript loop).
function finishF32(combine: (acc: Float32Array, own: Float32Array) => void): Kernels {
  return {
    combine: combine as Kernels['combine'],
    finishInPlace(acc, own, divisor) {
      combine(acc as Float32Array, own as Float32Array);
      if (divisor !== 1) divideF32(acc as Float32Array, divisor);
      own.set(acc);
    },
    finishInto(out, acc, own, divisor) {
      combine(acc as Float32Array, own as Float32Array);
      if (divisor !== 1) divideF32(acc as Float32Array, divisor);
      out.set(acc);
    },
  };
}

function finishI32(combine: (acc: Int32Array, own: Int32Array) => void): Kernels {
  return {
    combine: combine as Kernels['combine'],
    finishInPlace(acc, own) {
      combine(acc as Int32Array, own as Int32Array);
      own.set(acc);
    },
    finishInto(out, acc, own) {
      combine(acc as Int32Array, own as Int32Array);
      out.set(acc);
    },
  };
}

const KERNELS = {
  float32: { sum: finishF32(sumF32), mean: finishF32(sumF32), max: finishF32(maxF32) },
  int32: { sum: finishI32(sumI32), max: finishI32(maxI32) },
} as const;

export function kernelsFor(a: RingArray, op: ReduceOp): Kernels {
  if (a instanceof Float32Array) return KERNELS.float32[op];
  if (op === 'mean') throw new CollectiveError('usage', "'mean' is defined for float32 arrays only (an int32 mean would round)");
  return KERNELS.int32[op];
}
