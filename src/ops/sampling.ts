/**
 * Partial FC class sampling on one shard (docs/methods.md#partial-fc-sampling).
 *
 * Every positive class (a local class that is the label of some row of the
 * gathered batch) is always kept, even when there are more positives than
 * `numSample`; the remaining `numSample − |P|` rows are negatives drawn
 * uniformly without replacement. The active rows come back sorted ascending,
 * and the localised labels are remapped to positions in that list
 * (`searchsorted`), −1 staying −1.
 *
 * The reference draws u_j ~ U(0,1) for every local class, sets u = 2 on the
 * positives and takes the top-k. Any uniformly random k-subset of the negatives
 * has the same distribution, so the seeded path (`sampleClasses`) draws the
 * negatives directly with Floyd's algorithm in O(numSample) random numbers:
 * no per-class draws and no sort of a million values. `sampleClassesFromUniforms`
 * is the literal top-k rule with caller-supplied u, for test vector B of docs/methods.md#partial-fc-test-vectors.
 */
import type { Rng } from '../common/random.js';

export interface ClassSample {
  /** Active local rows, strictly ascending. */
  index: Int32Array;
  /** The localised labels remapped to positions in `index`; −1 kept. */
  labels: Int32Array;
}

/** Sorted unique owned labels; validates every label against [−1, count). */
function positivesOf(localLabels: Int32Array, count: number): Int32Array {
  const owned: number[] = [];
  for (let i = 0; i < localLabels.length; i++) {
    const y = localLabels[i]!;
    if (y === -1) continue;
    if (!Number.isInteger(y) || y < -1 || y >= count) throw new Error(`sampleClasses: label ${y} at row ${i} outside [-1, ${count})`);
    owned.push(y);
  }
  const sorted = Int32Array.from(owned).sort();
  let n = 0;
  for (let i = 0; i < sorted.length; i++) if (i === 0 || sorted[i] !== sorted[i - 1]) sorted[n++] = sorted[i]!;
  return sorted.slice(0, n);
}

function identity(count: number): Int32Array {
  const index = new Int32Array(count);
  for (let i = 0; i < count; i++) index[i] = i;
  return index;
}

/** Position of each label in the sorted `index` (binary search); −1 stays −1. */
function remapLabels(localLabels: Int32Array, index: Int32Array): Int32Array {
  const out = new Int32Array(localLabels.length);
  for (let i = 0; i < localLabels.length; i++) {
    const y = localLabels[i]!;
    if (y < 0) {
      out[i] = -1;
      continue;
    }
    let lo = 0;
    let hi = index.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = index[mid]!;
      if (v === y) {
        found = mid;
        break;
      }
      if (v < y) lo = mid + 1;
      else hi = mid - 1;
    }
    if (found < 0) throw new Error(`remapLabels: label ${y} at row ${i} is not among the active rows`);
    out[i] = found;
  }
  return out;
}

function checkArgs(localLabels: Int32Array, count: number, numSample: number): void {
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`sampleClasses: count must be a non-negative integer, got ${count}`);
  if (!Number.isSafeInteger(numSample) || numSample < 0) throw new Error(`sampleClasses: numSample must be a non-negative integer, got ${numSample}`);
  if (!(localLabels instanceof Int32Array)) throw new Error('sampleClasses: localLabels must be an Int32Array');
}

/**
 * Draws `m` distinct integers uniformly from [0, n) (Floyd's algorithm) and
 * returns them ascending. Uses a Set when m is small relative to n, a byte map
 * (then a linear scan instead of a sort) when it is not.
 */
function drawSortedSubset(n: number, m: number, rng: Rng): Int32Array {
  const out = new Int32Array(m);
  if (m === 0) return out;
  if (m * 32 < n) {
    const seen = new Set<number>();
    let k = 0;
    for (let j = n - m; j < n; j++) {
      const t = rng.int(j + 1);
      const pick = seen.has(t) ? j : t;
      seen.add(pick);
      out[k++] = pick;
    }
    return out.sort();
  }
  const taken = new Uint8Array(n);
  for (let j = n - m; j < n; j++) {
    const t = rng.int(j + 1);
    taken[taken[t] ? j : t] = 1;
  }
  let k = 0;
  for (let i = 0; i < n; i++) if (taken[i]) out[k++] = i;
  return out;
}

/**
 * Samples the active rows of one shard. `localLabels` are the gathered labels
 * localised to this shard (−1 = not owned), `count` the shard's row count,
 * `numSample` the target number of rows (see numSampled). Deterministic given
 * the Rng state; each shard samples with its own Rng (no synchronisation).
 */
export function sampleClasses(localLabels: Int32Array, count: number, numSample: number, rng: Rng): ClassSample {
  checkArgs(localLabels, count, numSample);
  const positives = positivesOf(localLabels, count);
  if (numSample >= count) return { index: identity(count), labels: localLabels.slice() };
  if (positives.length >= numSample) return { index: positives, labels: remapLabels(localLabels, positives) };

  // Negatives are drawn as ranks in [0, count − |P|) and mapped to class ids by
  // skipping the positives: rank k is the k-th non-positive class.
  const ranks = drawSortedSubset(count - positives.length, numSample - positives.length, rng);
  const index = new Int32Array(numSample);
  let pi = 0; // positives consumed while mapping ranks
  let pw = 0; // positives already written to `index`
  let w = 0;
  for (let r = 0; r < ranks.length; r++) {
    let id = ranks[r]! + pi;
    while (pi < positives.length && positives[pi]! <= id) {
      pi++;
      id++;
    }
    while (pw < positives.length && positives[pw]! < id) index[w++] = positives[pw++]!;
    index[w++] = id;
  }
  while (pw < positives.length) index[w++] = positives[pw++]!;
  return { index, labels: remapLabels(localLabels, index) };
}

/**
 * The reference rule with explicit uniforms (docs/methods.md#partial-fc-sampling, test vector B of docs/methods.md#partial-fc-test-vectors): u_j for
 * every local class, u = 2 on positives, indices of the `numSample` largest u
 * (ties to the lower index), sorted ascending. With more positives than
 * `numSample`, all positives and nothing else.
 */
export function sampleClassesFromUniforms(localLabels: Int32Array, count: number, numSample: number, u: ArrayLike<number>): ClassSample {
  checkArgs(localLabels, count, numSample);
  if (u.length !== count) throw new Error(`sampleClassesFromUniforms: expected ${count} uniforms, got ${u.length}`);
  const positives = positivesOf(localLabels, count);
  if (numSample >= count) return { index: identity(count), labels: localLabels.slice() };
  if (positives.length >= numSample) return { index: positives, labels: remapLabels(localLabels, positives) };
  const score = Float64Array.from(u);
  for (const p of positives) score[p] = 2.0;
  const order = Array.from(identity(count)).sort((a, b) => score[b]! - score[a]! || a - b);
  const index = Int32Array.from(order.slice(0, numSample)).sort();
  return { index, labels: remapLabels(localLabels, index) };
}
