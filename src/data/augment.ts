/**
 * Augmentations beyond the horizontal flip, applied to one decoded image
 * (HWC float32 in [−1, 1], size × size × 3) in place. Every draw comes from
 * (seed, epoch, dataset index) only, like the flip, so n workers × B and one
 * worker × n·B augment the same image the same way.
 *
 * Order: random resized crop → colour jitter → grey-scale (here), then the
 * flip and a synthetic occluder (loader.ts).
 */
import { Rng } from '../common/random.js';

export interface AugmentOptions {
  /** Random resized crop: the kept box covers a fraction in [cropScale, 1] of the area (aspect 3/4..4/3), resized back; 1 = off. */
  cropScale?: number;
  /** Colour jitter strength j: brightness, contrast and saturation factors drawn in [1 − j, 1 + j]; 0 = off. */
  colourJitter?: number;
  /** Probability of turning the image grey (luma replicated to R, G, B); 0 = off. */
  grey?: number;
  /**
   * Share of the images that get one synthetic occluder (occluders.ts: eyes,
   * mouth, half or random, uniformly) drawn last, after the flip, so its box
   * is in the coordinates of the image as trained on; 0 = off. The Loader
   * draws it and reports the box (Batch.occluders).
   */
  occluders?: number;
}

export function augmentationActive(o: AugmentOptions): boolean {
  return (o.cropScale ?? 1) < 1 || (o.colourJitter ?? 0) > 0 || (o.grey ?? 0) > 0 || (o.occluders ?? 0) > 0;
}

/** Applies `o` to image `index` of `epoch` at `offset` of `images`; `scratch` (≥ size²·3 floats) avoids an allocation. */
export function augmentImage(images: Float32Array, offset: number, size: number, o: AugmentOptions, seed: number, epoch: number, index: number, scratch?: Float32Array): void {
  const r = Rng.derive(seed, 'augment', epoch, index);
  const n = size * size * 3;
  const cropScale = o.cropScale ?? 1;
  if (cropScale < 1) {
    const area = cropScale + (1 - cropScale) * r.next();
    const aspect = Math.exp(Math.log(3 / 4) + (Math.log(4 / 3) - Math.log(3 / 4)) * r.next());
    const w = Math.min(1, Math.sqrt(area * aspect));
    const h = Math.min(1, Math.sqrt(area / aspect));
    const left = (1 - w) * r.next();
    const top = (1 - h) * r.next();
    const src = scratch && scratch.length >= n ? scratch : new Float32Array(n);
    src.set(images.subarray(offset, offset + n));
    resizeBox(src, size, left * size, top * size, w * size, h * size, images, offset);
  }
  const j = o.colourJitter ?? 0;
  if (j > 0) {
    const b = 1 + j * (2 * r.next() - 1);
    const c = 1 + j * (2 * r.next() - 1);
    const s = 1 + j * (2 * r.next() - 1);
    let mean = 0;
    for (let i = offset; i < offset + n; i += 3) mean += luma(images[i]!, images[i + 1]!, images[i + 2]!);
    mean = ((mean / (n / 3) + 1) / 2) * b;
    for (let i = offset; i < offset + n; i += 3) {
      let R = ((images[i]! + 1) / 2) * b;
      let G = ((images[i + 1]! + 1) / 2) * b;
      let B = ((images[i + 2]! + 1) / 2) * b;
      R = (R - mean) * c + mean;
      G = (G - mean) * c + mean;
      B = (B - mean) * c + mean;
      const g = luma(R, G, B);
      images[i] = clamp01((R - g) * s + g) * 2 - 1;
      images[i + 1] = clamp01((G - g) * s + g) * 2 - 1;
      images[i + 2] = clamp01((B - g) * s + g) * 2 - 1;
    }
  }
  const grey = o.grey ?? 0;
  if (grey > 0 && r.next() < grey) {
    for (let i = offset; i < offset + n; i += 3) {
      const g = luma(images[i]!, images[i + 1]!, images[i + 2]!);
      images[i] = g;
      images[i + 1] = g;
      images[i + 2] = g;
    }
  }
}

function luma(r: number, g: number, b: number): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

function clamp01(x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}

/** Bilinear resize of the box (x0, y0, w, h) (pixels) of `src` (size × size × 3) to the whole of `dst` at `offset`. */
function resizeBox(src: Float32Array, size: number, x0: number, y0: number, w: number, h: number, dst: Float32Array, offset: number): void {
  const sx = w / size;
  const sy = h / size;
  for (let y = 0; y < size; y++) {
    const fy = Math.min(size - 1, Math.max(0, y0 + (y + 0.5) * sy - 0.5));
    const ya = Math.floor(fy);
    const yb = Math.min(size - 1, ya + 1);
    const ty = fy - ya;
    for (let x = 0; x < size; x++) {
      const fx = Math.min(size - 1, Math.max(0, x0 + (x + 0.5) * sx - 0.5));
      const xa = Math.floor(fx);
      const xb = Math.min(size - 1, xa + 1);
      const tx = fx - xa;
      for (let c = 0; c < 3; c++) {
        const p00 = src[(ya * size + xa) * 3 + c]!;
        const p01 = src[(ya * size + xb) * 3 + c]!;
        const p10 = src[(yb * size + xa) * 3 + c]!;
        const p11 = src[(yb * size + xb) * 3 + c]!;
        dst[offset + (y * size + x) * 3 + c] = (p00 * (1 - tx) + p01 * tx) * (1 - ty) + (p10 * (1 - tx) + p11 * tx) * ty;
      }
    }
  }
}
