/** Pixel-space occluders for verification under occlusion (src/eval/occluders.ts). */
import { describe, expect, it } from 'vitest';
import { createSyntheticDataset } from '../src/data/synthetic.js';
import { drawEvalOccluder, occludedDataset, OCCLUDERS } from '../src/eval/occluders.js';
import { normalisePixel } from '../src/data/dataset.js';

const S = 40;
const px = S * S * 3;

/** Rows and columns of the pixels an occluder changed. */
function changed(before: Float32Array, after: Float32Array): { rows: Set<number>; cols: Set<number>; n: number } {
  const rows = new Set<number>();
  const cols = new Set<number>();
  let n = 0;
  for (let p = 0; p < S * S; p++) {
    if (before[p * 3] !== after[p * 3] || before[p * 3 + 1] !== after[p * 3 + 1] || before[p * 3 + 2] !== after[p * 3 + 2]) {
      rows.add(Math.floor(p / S));
      cols.add(p % S);
      n++;
    }
  }
  return { rows, cols, n };
}

describe('synthetic occluders', () => {
  const ds = createSyntheticDataset({ identities: 3, imagesPerIdentity: 4, imageSize: S, seed: 2 });
  const clean = new Float32Array(px);
  ds.read(5, clean, 0);

  it('eyes: a dark band over the eye line; mouth: a light patch over the lower face', () => {
    const eyes = new Float32Array(clean);
    drawEvalOccluder(eyes, 0, S, 'eyes', 1, 5);
    const e = changed(clean, eyes);
    expect(Math.min(...e.rows)).toBeGreaterThanOrEqual(Math.round(0.34 * S));
    expect(Math.max(...e.rows)).toBeLessThan(Math.round(0.58 * S));
    expect(e.rows.has(Math.floor(0.46 * S))).toBe(true); // the template's eye line
    expect(eyes[(Math.floor(0.46 * S) * S + S / 2) * 3]).toBeLessThan(normalisePixel(60));
    const mouth = new Float32Array(clean);
    drawEvalOccluder(mouth, 0, S, 'mouth', 1, 5);
    const m = changed(clean, mouth);
    expect(Math.min(...m.rows)).toBeGreaterThanOrEqual(Math.round(0.64 * S));
    expect(m.rows.has(Math.floor(0.82 * S))).toBe(true); // the mouth corners' line
    expect(mouth[(Math.floor(0.82 * S) * S + S / 2) * 3]).toBeGreaterThan(normalisePixel(160));
  });

  it('half covers half of the image; random a 30–50% block', () => {
    const half = new Float32Array(clean);
    drawEvalOccluder(half, 0, S, 'half', 1, 5);
    expect(changed(clean, half).n).toBeGreaterThan(0.45 * S * S);
    const rnd = new Float32Array(clean);
    drawEvalOccluder(rnd, 0, S, 'random', 1, 5);
    const r = changed(clean, rnd);
    expect(r.rows.size).toBeGreaterThanOrEqual(Math.floor(0.3 * S) - 1);
    expect(r.rows.size).toBeLessThanOrEqual(Math.ceil(0.5 * S) + 1);
  });

  it('is deterministic per (seed, kind, image) and varies across images', () => {
    for (const kind of OCCLUDERS) {
      const a = new Float32Array(px);
      const b = new Float32Array(px);
      occludedDataset(ds, kind, 3).read(5, a, 0);
      occludedDataset(ds, kind, 3).read(5, b, 0);
      expect(Array.from(a)).toEqual(Array.from(b));
    }
    const colours = new Set<number>();
    for (let i = 0; i < ds.size; i++) {
      const a = new Float32Array(px);
      occludedDataset(ds, 'random', 3).read(i, a, 0);
      const diff = changed(
        (() => {
          const c = new Float32Array(px);
          ds.read(i, c, 0);
          return c;
        })(),
        a,
      );
      colours.add(diff.n);
    }
    expect(colours.size).toBeGreaterThan(3); // block sizes differ from image to image
  });
});
