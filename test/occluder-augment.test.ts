/**
 * Drawn occluders as a training augmentation (augment.occluders,
 * src/data/loader.ts) and the cells of a feature map an occluder covers
 * (boxCells, src/ops/occlusion-masks.ts).
 */
import { describe, expect, it } from 'vitest';
import { DistributedSampler } from '../src/data/sampler.js';
import { Loader } from '../src/data/loader.js';
import { createSyntheticDataset } from '../src/data/synthetic.js';
import { boxCells, countCells, type FractionBox } from '../src/ops/occlusion-masks.js';
import { OCCLUDERS, occluderFor } from '../src/data/occluders.js';
import { Rng } from '../src/common/random.js';

/** Independent estimate: the share of a fine grid of points of each cell inside the box. */
function bruteCoverage(h: number, w: number, box: FractionBox, fine = 64): Float64Array {
  const m = new Float64Array(h * w);
  for (let r = 0; r < h; r++)
    for (let c = 0; c < w; c++) {
      let inside = 0;
      for (let i = 0; i < fine; i++)
        for (let j = 0; j < fine; j++) {
          const y = (r + (i + 0.5) / fine) / h;
          const x = (c + (j + 0.5) / fine) / w;
          if (y >= box.top && y < box.bottom && x >= box.left && x < box.right) inside++;
        }
      m[r * w + c] = inside / (fine * fine);
    }
  return m;
}

describe('boxCells: the feature-map cells an occluder covers (at least half of a cell)', () => {
  it('a left half of a 7×7 map is cols 0–3 (col 3 is covered exactly half); the eye band of a 10×10 map is rows 3–5 × cols 1–8 without the corners (covered 36% and 48%)', () => {
    const left = boxCells(7, 7, { top: 0, bottom: 1, left: 0, right: 0.5 });
    expect(countCells(left)).toBe(28);
    for (let r = 0; r < 7; r++) expect([...left.subarray(r * 7, r * 7 + 7)]).toEqual([1, 1, 1, 1, 0, 0, 0]);
    const eyes = boxCells(10, 10, { top: 0.34, bottom: 0.58, left: 0.14, right: 0.86 });
    expect(countCells(eyes)).toBe(20);
    const corner = (r: number, c: number) => (r === 3 || r === 5) && (c === 1 || c === 8);
    for (let r = 0; r < 10; r++) for (let c = 0; c < 10; c++) expect(eyes[r * 10 + c], `${r},${c}`).toBe(r >= 3 && r <= 5 && c >= 1 && c <= 8 && !corner(r, c) ? 1 : 0);
    expect(countCells(boxCells(5, 5, { top: 0.41, bottom: 0.49, left: 0, right: 1 }))).toBe(0); // a thin band covers no cell by half
  });

  it('agrees with a fine-grid estimate for every occluder kind on several map sizes', () => {
    let compared = 0;
    for (const kind of OCCLUDERS)
      for (let i = 0; i < 6; i++) {
        const { box } = occluderFor(kind, Rng.derive(3, 'test', kind, i));
        for (const [h, w] of [
          [5, 5],
          [7, 7],
          [10, 10],
          [14, 14],
        ] as const) {
          const cells = boxCells(h, w, box);
          bruteCoverage(h, w, box).forEach((cover, k) => {
            if (Math.abs(cover - 0.5) < 0.04) return; // within the grid estimate's error of the threshold
            expect(cells[k], `${kind} ${i} ${h}×${w} cell ${k} covered ${cover}`).toBe(cover >= 0.5 ? 1 : 0);
            compared++;
          });
        }
      }
    expect(compared).toBeGreaterThan(5000);
  });
});

describe('augment.occluders in the loader', () => {
  const S = 32;
  const px = S * S * 3;
  const ds = createSyntheticDataset({ identities: 20, imagesPerIdentity: 10, imageSize: S, seed: 5 });
  const sampler = () => new DistributedSampler({ size: ds.size, world: 1, rank: 0, batchPerWorker: 100, seed: 2 });

  it('draws one occluder on about the given share of the images, after the flip, and reports its box', async () => {
    const plain = await new Loader({ dataset: ds, sampler: sampler(), flip: true }).batch(1, 0);
    expect(plain.occluders).toBeUndefined();
    const clean = plain.images.slice();
    const b = await new Loader({ dataset: ds, sampler: sampler(), flip: true, augment: { occluders: 0.4 } }).batch(1, 0);
    expect(b.occluders).toHaveLength(100);
    expect([...b.indices]).toEqual([...plain.indices]);
    expect([...b.flipped]).toEqual([...plain.flipped]);
    const drawn = b.occluders!.filter((o) => o !== null).length;
    expect(drawn).toBeGreaterThan(25);
    expect(drawn).toBeLessThan(55);
    for (let k = 0; k < 100; k++) {
      const box = b.occluders![k];
      const img = b.images.subarray(k * px, (k + 1) * px);
      const ref = clean.subarray(k * px, (k + 1) * px);
      if (!box) {
        expect(img).toEqual(ref);
        continue;
      }
      // every changed pixel lies inside the reported box, in the coordinates of the (flipped) image handed out
      const [r0, r1, c0, c1] = [Math.round(box.top * S), Math.round(box.bottom * S), Math.round(box.left * S), Math.round(box.right * S)];
      let changedInside = 0;
      for (let y = 0; y < S; y++)
        for (let x = 0; x < S; x++) {
          const o = (y * S + x) * 3;
          const changed = img[o] !== ref[o] || img[o + 1] !== ref[o + 1] || img[o + 2] !== ref[o + 2];
          const inside = y >= r0 && y < r1 && x >= c0 && x < c1;
          if (changed) expect(inside, `image ${k} pixel ${y},${x}`).toBe(true);
          if (changed) changedInside++;
        }
      expect(changedInside).toBeGreaterThan(0.5 * (r1 - r0) * (c1 - c0));
    }
  });

  it('is a function of (seed, epoch, image) only: the same batch twice, other draws in another epoch', async () => {
    const load = () => new Loader({ dataset: ds, sampler: sampler(), flip: true, augment: { occluders: 0.5 } });
    const a = await load().batch(0, 1);
    const again = await load().batch(0, 1);
    expect(again.images).toEqual(a.images);
    expect(again.occluders).toEqual(a.occluders);
    const other = await load().batch(1, 1);
    expect(other.occluders).not.toEqual(a.occluders);
  });
});
