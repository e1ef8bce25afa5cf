/**
 * Synthetic occluders drawn on aligned face images: for verification under
 * occlusion (src/eval/occluders.ts, `shardface eval --occlude KIND`) and as a
 * training augmentation (`augment.occluders`, src/data/loader.ts).
 *
 *   eyes    sunglasses: a dark band over both eyes (rows 0.34–0.58, cols 0.14–0.86 of the side)
 *   mouth   a face mask: a light, flat-coloured patch from below the nose to the chin
 *           (rows 0.64–0.96, cols 0.18–0.82)
 *   half    a grey rectangle over one half of the image: left, right, upper or lower
 *   random  a block of random colour, 30–50% of the side, anywhere in the image
 *
 * The boxes follow the 112×112 insightface template (eyes at y ≈ 0.46, mouth
 * corners at y ≈ 0.82 of the side), which the synthetic faces share
 * (face-render.ts). Every draw comes from the Rng the caller passes, so the
 * callers decide what an occluder is a function of.
 */
import { Rng } from '../common/random.js';
import { normalisePixel } from './dataset.js';

export const OCCLUDERS = ['eyes', 'mouth', 'half', 'random'] as const;
export type OccluderKind = (typeof OCCLUDERS)[number];

export function isOccluderKind(s: string): s is OccluderKind {
  return (OCCLUDERS as readonly string[]).includes(s);
}

/** A box in fractions of the image side: [top, bottom) × [left, right). */
export interface Box {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

/** One occluder on one image: its box and its flat colour (0–255 RGB). */
export interface Occluder {
  box: Box;
  colour: [number, number, number];
}

/** The occluder of kind `kind`, its draws from `rng`. */
export function occluderFor(kind: OccluderKind, rng: Rng): Occluder {
  switch (kind) {
    case 'eyes': {
      const g = 10 + 30 * rng.next();
      return { box: { top: 0.34, bottom: 0.58, left: 0.14, right: 0.86 }, colour: [g, g, g + 10 * rng.next()] };
    }
    case 'mouth': {
      const pastel = (): number => 170 + 80 * rng.next();
      return { box: { top: 0.64, bottom: 0.96, left: 0.18, right: 0.82 }, colour: [pastel(), pastel(), pastel()] };
    }
    case 'half': {
      const g = 60 + 140 * rng.next();
      const boxes: Box[] = [
        { top: 0, bottom: 1, left: 0, right: 0.5 },
        { top: 0, bottom: 1, left: 0.5, right: 1 },
        { top: 0, bottom: 0.5, left: 0, right: 1 },
        { top: 0.5, bottom: 1, left: 0, right: 1 },
      ];
      return { box: boxes[rng.int(4)]!, colour: [g, g, g] };
    }
    case 'random': {
      const side = 0.3 + 0.2 * rng.next();
      const top = (1 - side) * rng.next();
      const left = (1 - side) * rng.next();
      return { box: { top, bottom: top + side, left, right: left + side }, colour: [255 * rng.next(), 255 * rng.next(), 255 * rng.next()] };
    }
  }
}

/** Draws an occluder (box and colour from occluderFor) on one HWC image (normalised pixels) at `offset`. */
export function drawOccluder(pixels: Float32Array, offset: number, size: number, occluder: Occluder): void {
  const { box, colour } = occluder;
  const value = colour.map(normalisePixel);
  const r0 = Math.round(box.top * size);
  const r1 = Math.round(box.bottom * size);
  const c0 = Math.round(box.left * size);
  const c1 = Math.round(box.right * size);
  for (let y = Math.max(0, r0); y < Math.min(size, r1); y++)
    for (let x = Math.max(0, c0); x < Math.min(size, c1); x++) {
      const o = offset + (y * size + x) * 3;
      pixels[o] = value[0]!;
      pixels[o + 1] = value[1]!;
      pixels[o + 2] = value[2]!;
    }
}

/**
 * The training occluder of image `index` in `epoch` (augment.occluders), or
 * null: drawn with probability `share`, its kind uniform over OCCLUDERS, from
 * (seed, epoch, index) only, like the flip.
 */
export function trainingOccluder(seed: number, epoch: number, index: number, share: number): Occluder | null {
  const r = Rng.derive(seed, 'train-occluder', epoch, index);
  if (r.next() >= share) return null;
  return occluderFor(OCCLUDERS[r.int(OCCLUDERS.length)]!, r);
}
