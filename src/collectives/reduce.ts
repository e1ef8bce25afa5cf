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
import { SLICE, simdLoops, type SimdLoops } from './simd.js';

export type RingArray = Float32Array | Int32Array;
export type ReduceOp = 'sum' | 'mean' | 'max';

export interface Kernels {
  /** acc[i] = acc[i] ∘ own[i] (∘ = + for sum and mean, max for max). */
  combine(acc: RingArray, own: RingArray): void;
  /** out[i] = (acc[i] ∘ own[i]) / divisor — the last reduction of a block; `out` may be `own`, `acc` is left undefined. */
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
function scalarKernels(combine: (acc: Float32Array, own: Float32Array) => void, combineInt: (acc: Int32Array, own: Int32Array) => void): { f32: Kernels; i32: Kernels } {
  return {
    f32: {
      combine: combine as Kernels['combine'],
      finishInto(out, acc, own, divisor) {
        combine(acc as Float32Array, own as Float32Array);
        if (divisor !== 1) divideF32(acc as Float32Array, divisor);
        out.set(acc);
      },
    },
    i32: {
      combine: combineInt as Kernels['combine'],
      finishInto(out, acc, own) {
        combineInt(acc as Int32Array, own as Int32Array);
        out.set(acc);
      },
    },
  };
}

/** Below this many elements the scalar loop beats three copies into WebAssembly memory. */
const SIMD_MIN = 256;

/** Sums through WebAssembly SIMD, slice by slice, into `out`. */
function simdSum(loops: SimdLoops, int: boolean): Kernels {
  const scratch = int ? loops.i32 : loops.f32;
  const scalar = int ? (sumI32 as Kernels['combine']) : (sumF32 as Kernels['combine']);
  const run = (out: RingArray, acc: RingArray, own: RingArray, divisor: number): void => {
    const n = acc.length;
    for (let at = 0; at < n; at += SLICE) {
      const end = Math.min(n, at + SLICE);
      const k = end - at;
      scratch.set(acc.subarray(at, end), 0);
      scratch.set(own.subarray(at, end), SLICE);
      if (int) loops.addI32(k);
      else loops.addF32(k);
      if (divisor !== 1) loops.divF32(k, divisor);
      out.set(scratch.subarray(0, k), at);
    }
  };
  return {
    combine(acc, own) {
      if (acc.length < SIMD_MIN) scalar(acc, own);
      else run(acc, acc, own, 1);
    },
    finishInto(out, acc, own, divisor) {
      if (acc.length < SIMD_MIN) {
        scalar(acc, own);
        if (divisor !== 1) divideF32(acc as Float32Array, divisor);
        out.set(acc);
      } else run(out, acc, own, divisor);
    },
  };
}

const scalarSum = scalarKernels(sumF32, sumI32);
const scalarMax = scalarKernels(maxF32, maxI32);
const sumF = simdLoops ? simdSum(simdLoops, false) : scalarSum.f32;
const sumI = simdLoops ? simdSum(simdLoops, true) : scalarSum.i32;

const KERNELS = {
  float32: { sum: sumF, mean: sumF, max: scalarMax.f32 },
  int32: { sum: sumI, max: scalarMax.i32 },
} as const;

export function kernelsFor(a: RingArray, op: ReduceOp): Kernels {
  if (a instanceof Float32Array) return KERNELS.float32[op];
  if (op === 'mean') throw new CollectiveError('usage', "'mean' is defined for float32 arrays only (an int32 mean would round)");
  return KERNELS.int32[op];
}
