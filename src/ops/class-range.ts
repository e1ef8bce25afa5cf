/**
 * Which classifier rows a worker owns (docs/methods.md#class-ranges) and how many of them it
 * samples per step (docs/methods.md#partial-fc-sampling).
 *
 * Worker r of n owns a contiguous block of classes; the C mod n left-over
 * classes go one each to the lowest ranks:
 *   count(r) = floor(C/n) + (r < C mod n ? 1 : 0)
 *   start(r) = floor(C/n)·r + min(r, C mod n)
 * e.g. C = 7, n = 3 → (0,3), (3,2), (5,2). A worker may own zero classes when
 * C < n; everything downstream accepts an empty shard.
 */

export interface ClassRange {
  /** First global class id owned by the shard. */
  start: number;
  /** Number of classes (rows of W) owned by the shard; may be 0. */
  count: number;
}

function checkNonNegativeInt(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name} must be a non-negative integer, got ${v}`);
}

export function classRange(numClasses: number, world: number, rank: number): ClassRange {
  checkNonNegativeInt('numClasses', numClasses);
  if (!Number.isSafeInteger(world) || world < 1) throw new Error(`world must be a positive integer, got ${world}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= world) throw new Error(`rank must be an integer in [0, ${world}), got ${rank}`);
  const base = Math.floor(numClasses / world);
  const extra = numClasses % world;
  return { start: base * rank + Math.min(rank, extra), count: base + (rank < extra ? 1 : 0) };
}

/**
 * Global labels → positions inside the shard's block: `label − start` when the
 * shard owns the label, −1 otherwise (docs/methods.md#shard-forward step 2).
 */
export function localiseLabels(labels: Int32Array, range: ClassRange): Int32Array {
  const out = new Int32Array(labels.length);
  const { start, count } = range;
  for (let i = 0; i < labels.length; i++) {
    const local = labels[i]! - start;
    out[i] = local >= 0 && local < count ? local : -1;
  }
  return out;
}

/**
 * Number of rows a shard samples per step: `min(count, ceil(sampleRate · count))`.
 *
 * Difference from the reference: arcface_torch uses `int(sample_rate · num_local)`
 * (truncation, docs/methods.md#class-ranges). shardface's product requirement is the ceiling, so a
 * small shard never samples zero rows for a positive rate. The product is taken
 * in double precision and 1e-9 is subtracted before the ceiling so float noise
 * cannot add a row: 0.3·10 = 3.0000000000000004 gives 3 (not 4), 0.29·100 =
 * 28.999999999999996 gives 29. A rate ≥ 1 (or exactly 1, the default) samples
 * every row. Positives beyond this number are still always kept (sampling.ts).
 */
export function numSampled(sampleRate: number, count: number): number {
  checkNonNegativeInt('count', count);
  if (!Number.isFinite(sampleRate) || sampleRate <= 0) throw new Error(`sampleRate must be a finite number > 0, got ${sampleRate}`);
  if (sampleRate >= 1) return count;
  return Math.min(count, Math.max(0, Math.ceil(sampleRate * count - 1e-9)));
}
