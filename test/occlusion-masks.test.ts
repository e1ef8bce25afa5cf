/** The feature-map masks and the adversary's rules of docs/methods.md#feature-masks, docs/methods.md#adversarial-training, docs/methods.md#occlusion-test-vector (src/ops/occlusion-masks.ts). */
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/common/random.js';
import {
  adversaryGate,
  candidateMasks,
  countCells,
  defaultWindow,
  halfMask,
  hardestCandidate,
  landmarkCell,
  landmarkMask,
  randomHalfMask,
  sampleTopKMask,
  topKDropCounts,
  type CellMask,
} from '../src/ops/occlusion-masks.js';

/** The dropped cells as "row,col" strings. */
function cells(m: CellMask, w: number): string[] {
  const out: string[] = [];
  m.forEach((v, i) => {
    if (v) out.push(`${Math.floor(i / w)},${i % w}`);
  });
  return out;
}

function box(r0: number, r1: number, c0: number, c1: number): string[] {
  const out: string[] = [];
  for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) out.push(`${r},${c}`);
  return out;
}

describe('landmark windows (docs/methods.md#feature-masks, 7×7 reference values)', () => {
  it('maps the five template landmarks to their cells', () => {
    expect(landmarkCell('leftEye', 7, 7)).toEqual([3, 2]);
    expect(landmarkCell('rightEye', 7, 7)).toEqual([3, 4]);
    expect(landmarkCell('nose', 7, 7)).toEqual([4, 3]);
    expect(landmarkCell('leftMouth', 7, 7)).toEqual([5, 2]);
    expect(landmarkCell('rightMouth', 7, 7)).toEqual([5, 4]);
  });

  it('"left eye, k = 3" drops rows 2–4 × cols 1–3 (9 cells)', () => {
    const m = landmarkMask(7, 7, 'leftEye', 3);
    expect(cells(m, 7)).toEqual(box(2, 4, 1, 3));
    expect(countCells(m)).toBe(9);
  });

  it('groups are the union of their windows: eyes = rows 2–4 × cols 1–5, mouth = rows 4–6 × cols 1–5', () => {
    expect(cells(landmarkMask(7, 7, 'eyes', 3), 7)).toEqual(box(2, 4, 1, 5));
    expect(cells(landmarkMask(7, 7, 'mouth', 3), 7)).toEqual(box(4, 6, 1, 5));
  });

  it('clips windows at the border and takes k = 1 as the cell itself', () => {
    // 3×3: left eye at (1, 1); a 5×5 window covers the whole map
    expect(countCells(landmarkMask(3, 3, 'leftEye', 5))).toBe(9);
    expect(cells(landmarkMask(7, 7, 'nose', 1), 7)).toEqual(['4,3']);
    // mouth row 5 on 7×7 with k = 5: rows 3–6 (7 clipped)
    expect(cells(landmarkMask(7, 7, 'leftMouth', 5), 7)).toEqual(box(3, 6, 0, 4));
  });

  it('rejects unknown groups and even windows', () => {
    expect(() => landmarkMask(7, 7, 'ears', 3)).toThrow(/unknown landmark group/);
    expect(() => landmarkMask(7, 7, 'nose', 2)).toThrow(/odd/);
  });

  it('scales the default window with the map: 3 at 7×7, 1 at 3×3 and 4×4', () => {
    expect(defaultWindow(7, 7)).toBe(3);
    expect(defaultWindow(3, 3)).toBe(1);
    expect(defaultWindow(4, 4)).toBe(1);
  });
});

describe('halves (centre line in both halves for odd sizes)', () => {
  it('"left half" drops cols 0–3 of 7×7 (28 cells); right cols 3–6; upper rows 0–3; lower rows 3–6', () => {
    expect(cells(halfMask(7, 7, 'left'), 7)).toEqual(box(0, 6, 0, 3));
    expect(countCells(halfMask(7, 7, 'left'))).toBe(28);
    expect(cells(halfMask(7, 7, 'right'), 7)).toEqual(box(0, 6, 3, 6));
    expect(cells(halfMask(7, 7, 'upper'), 7)).toEqual(box(0, 3, 0, 6));
    expect(cells(halfMask(7, 7, 'lower'), 7)).toEqual(box(3, 6, 0, 6));
  });

  it('even sizes split exactly in two', () => {
    for (const h of ['left', 'right', 'upper', 'lower'] as const) expect(countCells(halfMask(4, 4, h))).toBe(8);
  });
});

describe('random half', () => {
  it('drops ⌊H·W/2⌋ = 24 of 49 cells, distinct, seeded', () => {
    const a = randomHalfMask(7, 7, new Rng(5));
    expect(countCells(a)).toBe(24);
    expect(Array.from(randomHalfMask(7, 7, new Rng(5)))).toEqual(Array.from(a));
    expect(Array.from(randomHalfMask(7, 7, new Rng(6)))).not.toEqual(Array.from(a));
    expect(countCells(randomHalfMask(3, 3, new Rng(1)))).toBe(4);
  });

  it('is uniform over the cells', () => {
    const rng = new Rng(9);
    const hits = new Float64Array(49);
    const n = 4000;
    for (let t = 0; t < n; t++) randomHalfMask(7, 7, rng).forEach((v, i) => (hits[i]! += v));
    for (const h of hits) expect(h / n).toBeCloseTo(24 / 49, 1);
  });
});

describe('the adversary (docs/methods.md#adversarial-training, docs/methods.md#occlusion-test-vector)', () => {
  it('pre-training target: the candidate with the lowest p_y — {eyes 0.31, lower half 0.12, random half 0.47} → lower half', () => {
    const names = ['eyes', 'lower half', 'random half'];
    expect(names[hardestCandidate([0.31, 0.12, 0.47])]).toBe('lower half');
    expect(hardestCandidate([0.2, 0.2])).toBe(0); // ties: the first
  });

  it('gate: p_before 0.90, p_after 0.85 → no update (0.05 < 0.1); p_after 0.70 → update', () => {
    expect(adversaryGate(0.9, 0.85)).toBe(false);
    expect(adversaryGate(0.9, 0.7)).toBe(true);
    expect(adversaryGate(0.9, 0.8, 0.1)).toBe(false); // strictly greater (0.1 is not > 0.1)
  });

  it('candidates: 7 landmark windows, 4 halves and the random halves', () => {
    const c = candidateMasks(7, 7, { randomHalves: 3, rng: new Rng(1) });
    expect(c).toHaveLength(14);
    expect(c.map((x) => x.name).slice(0, 11)).toEqual([
      'landmark:leftEye',
      'landmark:rightEye',
      'landmark:nose',
      'landmark:leftMouth',
      'landmark:rightMouth',
      'landmark:eyes',
      'landmark:mouth',
      'half:left',
      'half:right',
      'half:upper',
      'half:lower',
    ]);
    expect(countCells(c[0]!.mask)).toBe(9);
    expect(c.slice(11).map((x) => countCells(x.mask))).toEqual([24, 24, 24]);
  });

  it('sampled mask: P = 20, K = 15 of 49, scaled with the map; K cells dropped, all among the top P by π', () => {
    expect(topKDropCounts(7, 7)).toEqual({ top: 20, drop: 15 });
    expect(topKDropCounts(3, 3)).toEqual({ top: 4, drop: 3 });
    expect(topKDropCounts(1, 1)).toEqual({ top: 1, drop: 1 });
    const pi = Float32Array.from({ length: 49 }, (_, i) => ((i * 17) % 49) / 49);
    const top20 = new Set(
      Array.from({ length: 49 }, (_, i) => i)
        .sort((a, b) => pi[b]! - pi[a]!)
        .slice(0, 20),
    );
    const m = sampleTopKMask(pi, 20, 15, new Rng(3));
    expect(countCells(m)).toBe(15);
    m.forEach((v, i) => {
      if (v) expect(top20.has(i)).toBe(true);
    });
    expect(Array.from(sampleTopKMask(pi, 20, 15, new Rng(3)))).toEqual(Array.from(m));
    expect(() => sampleTopKMask(pi, 10, 15, new Rng(3))).toThrow();
  });
});
