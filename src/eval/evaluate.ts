/**
 * Verification of a backbone on a labelled image set, as the field reports it:
 * embeddings of each image and its horizontal flip summed, L2-normalised,
 * squared distances of the pairs, 10-fold accuracy (docs/methods.md#ten-fold-accuracy).
 */
import { tf } from '../ops/tf.js';
import type { Backbone } from '../models/index.js';
import type { Dataset } from '../data/dataset.js';
import { flipHorizontal } from '../data/loader.js';
import { verifyEmbeddings, type TenFoldResult } from './verification.js';
import type { PairSet } from './pairs.js';

/** Embeddings [n, D] of dataset images `indices`, and of their mirror images when `flip`. */
export async function embedImages(
  backbone: Backbone,
  dataset: Dataset,
  indices: Int32Array,
  opts: { batch?: number; flip?: boolean } = {},
): Promise<{ embeddings: Float32Array; flipped: Float32Array | null }> {
  const batch = opts.batch ?? 64;
  const s = dataset.imageSize;
  const px = s * s * 3;
  const d = backbone.embeddingSize;
  const embeddings = new Float32Array(indices.length * d);
  const flipped = opts.flip === false ? null : new Float32Array(indices.length * d);
  const images = new Float32Array(batch * px);
  for (let start = 0; start < indices.length; start += batch) {
    const n = Math.min(batch, indices.length - start);
    for (let k = 0; k < n; k++) dataset.read(indices[start + k]!, images, k * px);
    const run = (target: Float32Array) => {
      const e = tf.tidy(() => backbone.apply(tf.tensor4d(images.subarray(0, n * px), [n, s, s, 3]), false));
      target.set(e.dataSync() as Float32Array, start * d);
      e.dispose();
    };
    run(embeddings);
    if (flipped) {
      for (let k = 0; k < n; k++) flipHorizontal(images, k * px, s);
      run(flipped);
    }
  }
  return { embeddings, flipped };
}

export interface VerificationSummary extends TenFoldResult {
  pairs: number;
}

/** 10-fold verification accuracy of `pairs` (indices into `dataset`). */
export async function verifyBackbone(backbone: Backbone, dataset: Dataset, pairs: PairSet, opts: { batch?: number } = {}): Promise<VerificationSummary> {
  // Embed each image used by a pair once.
  const used = Int32Array.from(new Set([...pairs.a, ...pairs.b])).sort();
  const slot = new Map<number, number>();
  used.forEach((img, i) => slot.set(img, i));
  const { embeddings, flipped } = await embedImages(backbone, dataset, used, { batch: opts.batch, flip: true });
  const a = Int32Array.from(pairs.a, (i) => slot.get(i)!);
  const b = Int32Array.from(pairs.b, (i) => slot.get(i)!);
  const r = verifyEmbeddings({ embeddings, flipped, dim: backbone.embeddingSize, pairs: { a, b, issame: pairs.issame } });
  return { ...r, pairs: pairs.issame.length };
}
