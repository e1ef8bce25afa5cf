/**
 * Face verification on pairs, exactly as insightface `eval/verification.py`
 * (docs/methods.md#ten-fold-accuracy): flip-fused unit embeddings, squared Euclidean distances, and
 * 10-fold accuracy with the threshold chosen on the other nine folds.
 *
 * ROC and TAR@FAR (docs/methods.md#roc-and-tar-at-far) live in ./roc.ts and are re-exported here.
 */
export { rocCurve, tarAtFar, type RocCurve, type TarAtFar } from './roc.js';

export interface VerificationPairs {
  a: Int32Array | number[];
  b: Int32Array | number[];
}

export interface TenFoldResult {
  /** Mean of the held-out fold accuracies. */
  accuracy: number;
  /** Population standard deviation (ddof = 0) of the fold accuracies. */
  std: number;
  /** Mean of the per-fold best thresholds. */
  threshold: number;
  /** Best threshold t* of each fold, chosen on the other folds. */
  thresholds: number[];
  foldAccuracies: number[];
}

export interface TenFoldOptions {
  /** Number of folds (default 10). */
  folds?: number;
  /** Candidate thresholds, ascending (default 0, 0.01, …, 3.99 as np.arange(0, 4, 0.01)). */
  thresholds?: number[];
}

/** np.arange(0, 4, 0.01): value i is i·0.01 in float64. */
export const DEFAULT_THRESHOLDS: readonly number[] = Array.from({ length: 400 }, (_, i) => i * 0.01);

/** Contiguous, unshuffled folds sized like sklearn KFold: the first n mod k folds get one extra. */
export function foldBounds(n: number, folds: number): [number, number][] {
  const out: [number, number][] = [];
  let start = 0;
  for (let f = 0; f < folds; f++) {
    const size = Math.floor(n / folds) + (f < n % folds ? 1 : 0);
    out.push([start, start + size]);
    start += size;
  }
  return out;
}

/**
 * k-fold verification accuracy. A pair is predicted "same" iff dist < t
 * (strict); on each fold t* is the first arg-max of the accuracy on the other
 * folds over the candidate thresholds, then applied to the fold itself.
 */
export function tenFoldAccuracy(dist: Float64Array | Float32Array | number[], issame: boolean[] | Uint8Array | number[], opts: TenFoldOptions = {}): TenFoldResult {
  const folds = opts.folds ?? 10;
  const thresholds = opts.thresholds ?? DEFAULT_THRESHOLDS;
  const n = dist.length;
  if (issame.length !== n) throw new RangeError(`verification: ${n} distances but ${issame.length} labels`);
  if (!Number.isInteger(folds) || folds < 2) throw new RangeError(`verification: folds must be an integer ≥ 2, got ${folds}`);
  if (n < folds) throw new RangeError(`verification: ${n} pairs cannot be split into ${folds} folds`);
  if (thresholds.length === 0) throw new RangeError('verification: no thresholds');
  for (let i = 1; i < thresholds.length; i++) {
    if (!(thresholds[i]! > thresholds[i - 1]!)) throw new RangeError('verification: thresholds must be strictly ascending');
  }
  const T = thresholds.length;
  const same = (i: number) => Boolean(issame[i]);
  // k(i) = number of thresholds ≤ dist_i; pair i is predicted "same" exactly at threshold indices ≥ k(i)
  const k = new Int32Array(n);
  for (let i = 0; i < n; i++) k[i] = countAtMost(thresholds, dist[i]!);
  const histSame = new Float64Array(T + 1);
  const histDiff = new Float64Array(T + 1);
  for (let i = 0; i < n; i++) (same(i) ? histSame : histDiff)[k[i]!]++;

  const bestThresholds: number[] = [];
  const foldAccuracies: number[] = [];
  for (const [lo, hi] of foldBounds(n, folds)) {
    // histograms of the training folds = all minus the held-out fold
    const hs = histSame.slice();
    const hd = histDiff.slice();
    for (let i = lo; i < hi; i++) (same(i) ? hs : hd)[k[i]!]--;
    let diffTotal = 0;
    for (let j = 0; j <= T; j++) diffTotal += hd[j]!;
    // correct(t_i) = #same with k ≤ i + #different with k > i
    let sameBelow = 0;
    let diffBelow = 0;
    let best = -1;
    let bestIdx = 0;
    for (let i = 0; i < T; i++) {
      sameBelow += hs[i]!;
      diffBelow += hd[i]!;
      const correct = sameBelow + (diffTotal - diffBelow);
      if (correct > best) {
        best = correct;
        bestIdx = i;
      }
    }
    const t = thresholds[bestIdx]!;
    let correct = 0;
    for (let i = lo; i < hi; i++) if (dist[i]! < t === same(i)) correct++;
    bestThresholds.push(t);
    foldAccuracies.push(correct / (hi - lo));
  }
  const accuracy = mean(foldAccuracies);
  const std = Math.sqrt(mean(foldAccuracies.map((a) => (a - accuracy) ** 2)));
  return { accuracy, std, threshold: mean(bestThresholds), thresholds: bestThresholds, foldAccuracies };
}

/** Number of ascending thresholds t with t ≤ x (NaN: all of them, i.e. never "same"). */
function countAtMost(thresholds: readonly number[], x: number): number {
  if (Number.isNaN(x)) return thresholds.length;
  let lo = 0;
  let hi = thresholds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (thresholds[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function mean(a: number[]): number {
  let s = 0;
  for (const x of a) s += x;
  return s / a.length;
}

/** n(v) = v / max(‖v‖₂, 1e-12), computed in float64, returned as float32. */
function l2Normalize(v: Float32Array | number[]): Float32Array {
  let ss = 0;
  for (let i = 0; i < v.length; i++) ss += v[i]! * v[i]!;
  const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i]! * inv;
  return out;
}

/** The flip-fused embedding n(e + e_flip) of one image (docs/methods.md#ten-fold-accuracy step 1). */
export function flipFusedEmbedding(e: Float32Array | number[], eFlip: Float32Array | number[]): Float32Array {
  if (e.length !== eFlip.length) throw new RangeError(`verification: embedding lengths differ (${e.length} vs ${eFlip.length})`);
  const sum = new Float32Array(e.length);
  for (let i = 0; i < e.length; i++) sum[i] = e[i]! + eFlip[i]!;
  return l2Normalize(sum);
}

/** Row-wise n(e + e_flip) of [N, dim] embeddings (eFlip null: just n(e)). */
export function flipFuseRows(e: Float32Array, eFlip: Float32Array | null, dim: number): Float32Array {
  if (e.length % dim !== 0) throw new RangeError(`verification: ${e.length} values are not rows of ${dim}`);
  if (eFlip && eFlip.length !== e.length) throw new RangeError(`verification: flipped embeddings have ${eFlip.length} values, expected ${e.length}`);
  const out = new Float32Array(e.length);
  for (let r = 0; r < e.length / dim; r++) {
    const row = e.subarray(r * dim, (r + 1) * dim);
    out.set(eFlip ? flipFusedEmbedding(row, eFlip.subarray(r * dim, (r + 1) * dim)) : l2Normalize(row), r * dim);
  }
  return out;
}

/** dist_i = ‖emb[a_i] − emb[b_i]‖² (float64), rows of `dim`; pass unit vectors for docs/methods.md#ten-fold-accuracy distances in [0, 4]. */
export function pairDistances(emb: Float32Array, dim: number, pairs: VerificationPairs): Float64Array {
  if (pairs.a.length !== pairs.b.length) throw new RangeError(`verification: pair lists differ in length (${pairs.a.length} vs ${pairs.b.length})`);
  const rows = emb.length / dim;
  const out = new Float64Array(pairs.a.length);
  for (let p = 0; p < out.length; p++) {
    const a = pairs.a[p]!;
    const b = pairs.b[p]!;
    if (a < 0 || a >= rows || b < 0 || b >= rows) throw new RangeError(`verification: pair ${p} (${a}, ${b}) outside [0, ${rows})`);
    let s = 0;
    for (let j = 0; j < dim; j++) {
      const d = emb[a * dim + j]! - emb[b * dim + j]!;
      s += d * d;
    }
    out[p] = s;
  }
  return out;
}

/**
 * The whole docs/methods.md#ten-fold-accuracy protocol from raw embeddings: flip-fuse and normalise each
 * row, take pair distances, 10-fold accuracy.
 */
export function verifyEmbeddings(
  o: { embeddings: Float32Array; flipped?: Float32Array | null; dim: number; pairs: VerificationPairs & { issame: Uint8Array | boolean[] } },
  opts: TenFoldOptions = {},
): TenFoldResult {
  const unit = flipFuseRows(o.embeddings, o.flipped ?? null, o.dim);
  return tenFoldAccuracy(pairDistances(unit, o.dim, o.pairs), o.pairs.issame, opts);
}
