/**
 * Verification pairs over a held-out set of labelled images: half "same
 * identity", half "different", alternating (same, different, same, …) so every
 * contiguous fold of the 10-fold protocol is balanced to within one pair.
 * Pairs are distinct (unordered) and drawn from a seeded Rng.
 */
import { Rng } from '../common/random.js';

export interface PairSet {
  a: Int32Array;
  b: Int32Array;
  /** 1 = same identity. */
  issame: Uint8Array;
}

export function makeVerificationPairs(o: { labels: Int32Array | number[]; pairs: number; seed: number }): PairSet {
  const { labels, pairs } = o;
  const n = labels.length;
  if (!Number.isInteger(pairs) || pairs < 2) throw new RangeError(`pairs: the number of pairs must be an integer ≥ 2, got ${pairs}`);
  const byLabel = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const l = labels[i]!;
    let list = byLabel.get(l);
    if (!list) byLabel.set(l, (list = []));
    list.push(i);
  }
  const multi = [...byLabel.values()].filter((l) => l.length >= 2);
  const nSame = Math.ceil(pairs / 2);
  const nDiff = pairs - nSame;
  let sameAvailable = 0;
  let sumSquares = 0;
  for (const l of byLabel.values()) {
    sameAvailable += (l.length * (l.length - 1)) / 2;
    sumSquares += l.length * l.length;
  }
  const diffAvailable = (n * n - sumSquares) / 2;
  if (nSame > sameAvailable) throw new RangeError(`pairs: ${nSame} same-identity pairs requested, the held-out set has only ${sameAvailable} distinct ones`);
  if (nDiff > diffAvailable) throw new RangeError(`pairs: ${nDiff} different-identity pairs requested, the held-out set has only ${diffAvailable} distinct ones`);

  const rng = Rng.derive(o.seed, 'verification-pairs');
  const seen = new Set<number>();
  const key = (i: number, j: number) => Math.min(i, j) * n + Math.max(i, j);
  const a = new Int32Array(pairs);
  const b = new Int32Array(pairs);
  const issame = new Uint8Array(pairs);
  const maxAttempts = 100 * pairs + 10_000;
  let attempts = 0;
  for (let p = 0; p < pairs; p++) {
    const wantSame = p % 2 === 0;
    for (;;) {
      if (++attempts > maxAttempts) {
        throw new RangeError(`pairs: could not draw ${pairs} distinct pairs (too many requested for ${n} images in ${byLabel.size} identities)`);
      }
      let i: number;
      let j: number;
      if (wantSame) {
        const list = multi[rng.int(multi.length)]!;
        i = list[rng.int(list.length)]!;
        j = list[rng.int(list.length)]!;
        if (i === j) continue;
      } else {
        i = rng.int(n);
        j = rng.int(n);
        if (labels[i] === labels[j]) continue;
      }
      const k = key(i, j);
      if (seen.has(k)) continue;
      seen.add(k);
      a[p] = i;
      b[p] = j;
      issame[p] = wantSame ? 1 : 0;
      break;
    }
  }
  return { a, b, issame };
}
