import { describe, expect, it } from 'vitest';
import { Rng } from '../src/common/random.js';
import { makeVerificationPairs } from '../src/eval/pairs.js';
import { DEFAULT_THRESHOLDS, flipFuseRows, flipFusedEmbedding, foldBounds, pairDistances, rocCurve, tarAtFar, tenFoldAccuracy, verifyEmbeddings } from '../src/eval/verification.js';

// docs/methods.md#ten-fold-accuracy test vector
const DIST = [
  1.492, 0.737, 1.7205, 1.324, 0.624, 0.901, 1.665, 2.224, 1.256, 1.1105, 2.124, 1.621, 1.077, 0.809, 1.5105, 1.457, 1.094, 0.943, 1.522, 1.908, 1.478, 0.954, 1.5205, 2.0605, 0.884, 0.392, 1.192,
  1.235, 1.267, 0.754, 1.999, 1.465, 0.322, 1.087, 2.001, 1.486, 0.479, 1.412, 1.492, 1.017,
];
const ISSAME = Array.from({ length: 40 }, (_, i) => i % 4 < 2);

describe('10-fold accuracy (docs/methods.md#ten-fold-accuracy)', () => {
  it('reproduces the 40-pair test vector exactly', () => {
    const r = tenFoldAccuracy(DIST, ISSAME);
    expect(r.thresholds).toEqual([1.42, 1.12, 1.1, 1.12, 1.12, 1.12, 1.27, 1.12, 1.12, 1.12].map((t) => DEFAULT_THRESHOLDS[Math.round(t * 100)]));
    r.thresholds.forEach((t, i) => expect(t).toBeCloseTo([1.42, 1.12, 1.1, 1.12, 1.12, 1.12, 1.27, 1.12, 1.12, 1.12][i]!, 12));
    expect(r.foldAccuracies).toEqual([0.5, 1.0, 0.5, 1.0, 1.0, 0.75, 0.5, 0.75, 1.0, 0.5]);
    expect(r.accuracy).toBeCloseTo(0.75, 12);
    expect(r.std).toBeCloseTo(0.223607, 6);
    expect(r.threshold).toBeCloseTo(r.thresholds.reduce((a, b) => a + b) / 10, 12);
  });

  it('takes the same labels as booleans, numbers or a Uint8Array', () => {
    const a = tenFoldAccuracy(DIST, ISSAME);
    expect(tenFoldAccuracy(Float64Array.from(DIST), Uint8Array.from(ISSAME, Number))).toEqual(a);
    expect(tenFoldAccuracy(DIST, ISSAME.map(Number))).toEqual(a);
  });

  it('thresholds are np.arange(0, 4, 0.01): 400 values i·0.01', () => {
    expect(DEFAULT_THRESHOLDS.length).toBe(400);
    expect(DEFAULT_THRESHOLDS[7]).toBe(0.07); // 7 * 0.01 = 0.07 in float64
    expect(DEFAULT_THRESHOLDS[399]).toBe(3.99);
  });

  it('splits like sklearn KFold(shuffle=False): the first n mod k folds get one extra', () => {
    expect(foldBounds(13, 10)).toEqual([
      [0, 2],
      [2, 4],
      [4, 6],
      [6, 7],
      [7, 8],
      [8, 9],
      [9, 10],
      [10, 11],
      [11, 12],
      [12, 13],
    ]);
    expect(() => tenFoldAccuracy([0.1, 0.2], [true, false])).toThrow(/cannot be split/);
  });

  it('matches a brute-force reading of verification.py on random data (strict <, first arg-max, grid ties)', () => {
    const rng = new Rng(3);
    for (const n of [57, 100, 333]) {
      // include distances sitting exactly on grid values
      const dist = Array.from({ length: n }, (_, i) => (i % 7 === 0 ? DEFAULT_THRESHOLDS[rng.int(400)]! : 4 * rng.next()));
      const same = Array.from({ length: n }, (_, i) => (dist[i]! < 2 ? rng.next() < 0.8 : rng.next() < 0.2));
      const brute = bruteForce(dist, same);
      const fast = tenFoldAccuracy(dist, same);
      expect(fast.thresholds).toEqual(brute.thresholds);
      expect(fast.foldAccuracies).toEqual(brute.accs);
    }
  });

  function bruteForce(dist: number[], same: boolean[]) {
    const thresholds: number[] = [];
    const accs: number[] = [];
    for (const [lo, hi] of foldBounds(dist.length, 10)) {
      const train = dist.map((_, i) => i).filter((i) => i < lo || i >= hi);
      const accOf = (t: number, idx: number[]) => idx.filter((i) => dist[i]! < t === same[i]).length / idx.length;
      let best = 0;
      DEFAULT_THRESHOLDS.forEach((t, i) => {
        if (accOf(t, train) > accOf(DEFAULT_THRESHOLDS[best]!, train)) best = i;
      });
      thresholds.push(DEFAULT_THRESHOLDS[best]!);
      accs.push(
        accOf(
          DEFAULT_THRESHOLDS[best]!,
          Array.from({ length: hi - lo }, (_, k) => lo + k),
        ),
      );
    }
    return { thresholds, accs };
  }
});

describe('embeddings and distances', () => {
  it('flip fusion is n(e + e_flip)', () => {
    const e = flipFusedEmbedding([3, 4], [4, 3]);
    expect(e[0]).toBeCloseTo(0.70710678, 7);
    expect(e[1]).toBeCloseTo(0.70710678, 7);
    expect([...flipFusedEmbedding([0, 0], [0, 0])]).toEqual([0, 0]); // eps 1e-12
    const rows = flipFuseRows(Float32Array.of(3, 4, 1, 0), Float32Array.of(4, 3, 1, 0), 2);
    expect(rows[2]).toBe(1);
    expect(rows[0]).toBeCloseTo(0.70710678, 7);
    expect([...flipFuseRows(Float32Array.of(3, 4), null, 2)].map((x) => +x.toFixed(6))).toEqual([0.6, 0.8]);
  });

  it('pair distance of unit vectors is squared Euclidean = 2 − 2cos', () => {
    const emb = Float32Array.of(1, 0, 0.6, 0.8, -1, 0);
    const d = pairDistances(emb, 2, { a: [0, 0, 1], b: [1, 2, 1] });
    expect(d[0]).toBeCloseTo(2 - 2 * 0.6, 6);
    expect(d[1]).toBeCloseTo(4, 12);
    expect(d[2]).toBe(0);
    expect(() => pairDistances(emb, 2, { a: [0], b: [3] })).toThrow(/outside/);
  });

  it('verifyEmbeddings: identity-pure embeddings verify perfectly', () => {
    const labels = Int32Array.from({ length: 60 }, (_, i) => i % 12);
    const pairs = makeVerificationPairs({ labels, pairs: 100, seed: 2 });
    const dim = 12;
    const emb = new Float32Array(60 * dim);
    labels.forEach((l, i) => (emb[i * dim + l] = 5));
    const r = verifyEmbeddings({ embeddings: emb, flipped: emb, dim, pairs });
    expect(r.accuracy).toBe(1);
    expect(r.std).toBe(0);
  });
});

// docs/methods.md#roc-and-tar-at-far test vector
const SCORES = [0.91, 0.85, 0.8, 0.78, 0.74, 0.7, 0.66, 0.62, 0.6, 0.55, 0.52, 0.5, 0.45, 0.4, 0.38, 0.35, 0.3, 0.2, 0.15, 0.1];
const LABELS = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0];

describe('ROC and TAR@FAR (docs/methods.md#roc-and-tar-at-far)', () => {
  it('reproduces the drop-intermediate ROC points', () => {
    const roc = rocCurve(SCORES, LABELS, { dropIntermediate: true });
    expect([...roc.fpr]).toEqual([0, 0, 0, 1, 1, 2, 2, 3, 3, 5, 5, 7, 7, 12].map((k) => k / 12));
    expect([...roc.tpr]).toEqual([0, 0.125, 0.25, 0.25, 0.5, 0.5, 0.625, 0.625, 0.75, 0.75, 0.875, 0.875, 1, 1]);
    expect(roc.thresholds[0]).toBe(Infinity);
    expect(roc.thresholds[1]).toBe(0.91);
  });

  it('keeps all 21 points without drop_intermediate', () => {
    const roc = rocCurve(SCORES, LABELS, { dropIntermediate: false });
    expect(roc.fpr.length).toBe(21);
    const pts = [...roc.fpr].map((f, i) => [f, roc.tpr[i]]);
    expect(pts).toContainEqual([1 / 12, 0.375]);
    expect(pts).toContainEqual([4 / 12, 0.75]);
  });

  it('reads TAR at the nearest FPR, ties to the larger TPR', () => {
    const r = tarAtFar(SCORES, LABELS, [0.05, 0.1, 0.2, 0.3]);
    expect(r.map((x) => x.tar)).toEqual([0.5, 0.5, 0.625, 0.75]);
    expect(r[0]!.fpr).toBe(1 / 12);
    expect(r[2]!.fpr).toBe(2 / 12);
    expect(r[3]!.fpr).toBe(3 / 12);
    expect(r[0]!.threshold).toBe(0.74);
  });

  it('groups tied scores into one point', () => {
    const roc = rocCurve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0], { dropIntermediate: false });
    expect([...roc.tpr]).toEqual([0, 0.5, 1, 1]);
    expect([...roc.fpr]).toEqual([0, 0, 0.5, 1]);
  });

  it('refuses a curve without positives or negatives', () => {
    expect(() => rocCurve([0.1, 0.2], [0, 0])).toThrow(/no positive/);
    expect(() => rocCurve([0.1, 0.2], [1, 1])).toThrow(/no negative/);
  });
});

describe('makeVerificationPairs', () => {
  const labels = Int32Array.from({ length: 200 }, (_, i) => Math.floor(i / 10)); // 20 ids × 10

  it('alternates same/different so every 10-fold fold is balanced', () => {
    const p = makeVerificationPairs({ labels, pairs: 300, seed: 1 });
    expect(p.a.length).toBe(300);
    for (let i = 0; i < 300; i++) {
      expect(p.issame[i]).toBe(i % 2 === 0 ? 1 : 0);
      expect(labels[p.a[i]!] === labels[p.b[i]!]).toBe(p.issame[i] === 1);
      expect(p.a[i]).not.toBe(p.b[i]);
    }
    for (const [lo, hi] of foldBounds(300, 10)) {
      const same = p.issame.subarray(lo, hi).reduce((s, x) => s + x, 0);
      expect(same).toBe((hi - lo) / 2);
    }
  });

  it('draws distinct pairs deterministically from the seed', () => {
    const p = makeVerificationPairs({ labels, pairs: 300, seed: 1 });
    const keys = new Set(Array.from(p.a, (a, i) => `${Math.min(a, p.b[i]!)}-${Math.max(a, p.b[i]!)}`));
    expect(keys.size).toBe(300);
    expect(makeVerificationPairs({ labels, pairs: 300, seed: 1 })).toEqual(p);
    expect(makeVerificationPairs({ labels, pairs: 300, seed: 2 }).a).not.toEqual(p.a);
  });

  it('says when the set cannot supply the pairs', () => {
    expect(() => makeVerificationPairs({ labels: Int32Array.of(0, 1, 2), pairs: 4, seed: 0 })).toThrow(/same-identity/);
    expect(() => makeVerificationPairs({ labels: Int32Array.of(0, 0, 0), pairs: 4, seed: 0 })).toThrow(/different-identity/);
    expect(() => makeVerificationPairs({ labels, pairs: 1, seed: 0 })).toThrow(/≥ 2/);
  });
});
