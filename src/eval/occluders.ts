/**
 * Verification under occlusion (`shardface eval --occlude KIND`,
 * bench/occlusion.ts): one of the synthetic occluders of src/data/occluders.ts
 * drawn on every evaluated image. Each draw — the half, the colour, the block
 * — comes from Rng(seed, 'occluder', kind, image index), so an image is
 * occluded the same way in every run. Occluders are drawn before the
 * horizontal flip of the flip-fused embedding, so the flipped image is the
 * mirror of the occluded one.
 */
import { Rng } from '../common/random.js';
import type { Dataset } from '../data/dataset.js';
import { drawOccluder, occluderFor, type OccluderKind } from '../data/occluders.js';
import type { Backbone } from '../models/index.js';
import type { VerificationSet } from './verification-set.js';
import { embedImageSources, scorePairs, type SetVerificationOptions, type SetVerificationResult } from './verify-set.js';

export { OCCLUDERS, isOccluderKind, type OccluderKind } from '../data/occluders.js';

/** Draws the evaluation occluder `kind` of image `index` (its draws from Rng(seed, 'occluder', kind, index)) on one HWC image at `offset`. */
export function drawEvalOccluder(pixels: Float32Array, offset: number, size: number, kind: OccluderKind, seed: number, index: number): void {
  drawOccluder(pixels, offset, size, occluderFor(kind, Rng.derive(seed, 'occluder', kind, index)));
}

/** `ds` with occluder `kind` drawn on every image it reads (image i keyed by indexOffset + i). */
export function occludedDataset(ds: Dataset, kind: OccluderKind, seed: number, indexOffset = 0): Dataset {
  return {
    numClasses: ds.numClasses,
    size: ds.size,
    imageSize: ds.imageSize,
    label: (i) => ds.label(i),
    read(i, out, offset) {
      ds.read(i, out, offset);
      drawEvalOccluder(out, offset, ds.imageSize, kind, seed, indexOffset + i);
    },
  };
}

/**
 * `verifySet` (verify-set.ts) with occluder `kind` drawn on every decoded
 * image before it is embedded (image i of the set keyed by its index i).
 */
export async function verifySetOccluded(backbone: Backbone, set: VerificationSet, opts: SetVerificationOptions & { occlude: OccluderKind; seed?: number }): Promise<SetVerificationResult> {
  const { embeddings, flipped } = await embedImageSources(backbone, set.images, opts, (chunk, start) => occludedDataset(chunk, opts.occlude, opts.seed ?? 0, start));
  const d = backbone.embeddingSize;
  return { ...scorePairs(embeddings, flipped, d, set.pairs, opts.fars), images: set.images.length };
}
