/** Deterministic test arrays for the reduction kernels' bit-for-bit checks. */

/** n values from an LCG seeded with `seed`: int32 over the whole range, or float32 of both signs spread over 2^±15. */
export function random(n: number, seed: number, int: boolean): Float32Array | Int32Array {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  if (int) return Int32Array.from({ length: n }, () => next() | 0);
  return Float32Array.from({ length: n }, () => ((next() / 2 ** 32) * 2 - 1) * 2 ** ((next() % 30) - 15));
}

/** The array's own bytes, for exact comparison. */
export const bytes = (a: Float32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
