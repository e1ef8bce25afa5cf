/**
 * Scoring a backbone on a verification set (see verification-set.ts), as
 * insightface reports it (docs/methods.md#ten-fold-accuracy): every distinct image is decoded,
 * embedded with its horizontal flip, the two summed and L2-normalised; pair
 * distances are squared Euclidean; accuracy is the 10-fold mean ± std with the
 * threshold chosen on the other nine folds. On the same pairs we also give the
 * ROC (score = −distance) and TAR at FAR = 1e-3 and 1e-4, read at the ROC
 * point of nearest FPR (docs/methods.md#roc-and-tar-at-far), where there are enough negative pairs for
 * that FAR to mean something (at least 1/FAR of them), else null.
 */
import { readFile } from 'node:fs/promises';
import type { Backbone } from '../models/index.js';
import type { Dataset } from '../data/dataset.js';
import { decodeBatch, type DecodeOptions } from '../data/decode.js';
import { embedImages } from './evaluate.js';
import { flipFuseRows, pairDistances, tenFoldAccuracy, type TenFoldResult } from './verification.js';
import { rocCurve, tarAtFar, type RocCurve } from './roc.js';
import { ImageInputError, type ImageSource, type VerificationSet } from './verification-set.js';

export { ImageInputError };

/** The FARs reported next to the accuracy. */
export const VERIFICATION_FARS: readonly number[] = [1e-3, 1e-4];

export interface SetVerificationOptions {
  /** Images are decoded to imageSize × imageSize (the backbone's input). */
  imageSize: number;
  /** Geometry of the decode: 'centre' (short side resized, centre square kept; default) or a source box. */
  crop?: DecodeOptions['crop'];
  /** Images per forward pass (default 64). */
  batch?: number;
  /** FARs for TAR@FAR (default VERIFICATION_FARS). */
  fars?: readonly number[];
}

export interface SetVerificationResult extends TenFoldResult {
  pairs: number;
  images: number;
  /** TAR at each FAR, keyed like "1e-3"; null where there are fewer than 1/FAR negative pairs. */
  tarAtFar: Record<string, number | null>;
  /** ROC over the pairs (score = −squared distance); null when one class of pairs is missing. */
  roc: RocCurve | null;
}

/** "1e-3" for 0.001. */
export function farKey(far: number): string {
  return far.toExponential();
}

/** Decodes, embeds and scores every pair of `set`. */
export async function verifySet(backbone: Backbone, set: VerificationSet, opts: SetVerificationOptions): Promise<SetVerificationResult> {
  const { embeddings, flipped } = await embedImageSources(backbone, set.images, opts);
  return { ...scorePairs(embeddings, flipped, backbone.embeddingSize, set.pairs, opts.fars), images: set.images.length };
}

/** The docs/methods.md#ten-fold-accuracy protocol and the ROC from raw embeddings (rows = images) and their flipped twins. */
export function scorePairs(
  embeddings: Float32Array,
  flipped: Float32Array | null,
  dim: number,
  pairs: VerificationSet['pairs'],
  fars: readonly number[] = VERIFICATION_FARS,
): Omit<SetVerificationResult, 'images'> {
  const unit = flipFuseRows(embeddings, flipped, dim);
  const dist = pairDistances(unit, dim, pairs);
  const tenFold = tenFoldAccuracy(dist, pairs.issame);
  let positives = 0;
  for (const s of pairs.issame) positives += s;
  const negatives = pairs.issame.length - positives;
  const scores = Float64Array.from(dist, (d) => -d);
  const roc = positives > 0 && negatives > 0 ? rocCurve(scores, pairs.issame) : null;
  const tar: Record<string, number | null> = {};
  const usable = roc ? fars.filter((f) => negatives * f >= 1 - 1e-9) : [];
  const read = usable.length ? tarAtFar(scores, pairs.issame, usable) : [];
  for (const f of fars) tar[farKey(f)] = read.find((r) => r.far === f)?.tar ?? null;
  return { ...tenFold, pairs: pairs.issame.length, tarAtFar: tar, roc };
}

/**
 * Embeddings [n, D] of `images` and of their mirror images, decoding a chunk
 * at a time (a few batches) so memory stays bounded on 12,000-image packs.
 */
export async function embedImageSources(
  backbone: Backbone,
  images: readonly ImageSource[],
  opts: SetVerificationOptions,
  /** Wraps each decoded chunk (its first image is `start`), e.g. to draw occluders on it. */
  transform: (chunk: Dataset, start: number) => Dataset = (chunk) => chunk,
): Promise<{ embeddings: Float32Array; flipped: Float32Array }> {
  const size = opts.imageSize;
  const batch = opts.batch ?? 64;
  const chunk = Math.max(batch, 256);
  const px = size * size * 3;
  const d = backbone.embeddingSize;
  const embeddings = new Float32Array(images.length * d);
  const flipped = new Float32Array(images.length * d);
  const pixels = new Float32Array(Math.min(chunk, images.length) * px);
  for (let start = 0; start < images.length; start += chunk) {
    const part = images.slice(start, start + chunk);
    const bytes = await Promise.all(part.map(readImageBytes));
    const errors = await decodeBatch(bytes, { size, crop: opts.crop ?? 'centre' }, pixels);
    errors.forEach((e, k) => {
      if (e) throw new ImageInputError(`${imageName(part[k]!)}: ${e.message}`);
    });
    const ds = transform(
      {
        numClasses: 1,
        size: part.length,
        imageSize: size,
        label: () => 0,
        read: (i, out, offset) => out.set(pixels.subarray(i * px, (i + 1) * px), offset),
      },
      start,
    );
    const r = await embedImages(
      backbone,
      ds,
      Int32Array.from(part, (_, i) => i),
      { batch, flip: true },
    );
    embeddings.set(r.embeddings, start * d);
    flipped.set(r.flipped!, start * d);
  }
  return { embeddings, flipped };
}

function imageName(src: ImageSource): string {
  return src.kind === 'file' ? src.path : src.name;
}

async function readImageBytes(src: ImageSource): Promise<Uint8Array> {
  if (src.kind === 'bytes') return src.bytes;
  try {
    return await readFile(src.path);
  } catch (e) {
    throw new ImageInputError(`cannot read image ${src.path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}

/**
 * The ROC as CSV: one row per point, `fpr,tpr,distance_threshold,cosine_threshold`;
 * a pair is accepted at a row iff its squared distance ≤ distance_threshold,
 * i.e. its cosine ≥ cosine_threshold (= 1 − d/2 for unit embeddings).
 */
export function rocCsv(roc: RocCurve): string {
  const rows = ['fpr,tpr,distance_threshold,cosine_threshold'];
  for (let i = 0; i < roc.fpr.length; i++) {
    const d = -roc.thresholds[i]!;
    const fmt = (x: number) => (x === Infinity ? 'inf' : x === -Infinity ? '-inf' : String(x));
    rows.push(`${roc.fpr[i]},${roc.tpr[i]},${fmt(d)},${fmt(1 - d / 2)}`);
  }
  return rows.join('\n') + '\n';
}
