/**
 * Embeddings of single images for `shardface embed`, as verification computes
 * them (docs/methods.md#ten-fold-accuracy, eval/evaluate.ts): the raw embeddings e of the image and
 * e_f of its horizontal mirror, summed and L2-normalised, n(e + e_f). Beside
 * it, the magnitude ‖e‖ of the raw embedding of the image itself: MagFace
 * (docs/methods.md#magnitude-as-quality) trains this norm to grow with face quality, so for a MagFace
 * model it is a quality score (for other losses it is reported but carries
 * little meaning).
 */
import { tf } from '../ops/tf.js';
import type { Backbone } from '../models/index.js';
import { flipHorizontal } from '../data/loader.js';

export interface ImageEmbeddings {
  /** [n·D], each row unit-length: n(e + e_f), or n(e) without flip. */
  embeddings: Float32Array;
  /** ‖e‖ per image, of the un-normalised, un-flipped embedding. */
  magnitudes: Float64Array;
}

/** `images`: n square size×size×3 HWC images, normalised (x/255 − 0.5)/0.5. */
export async function embedImages(backbone: Backbone, images: Float32Array, n: number, size: number, opts: { flip?: boolean } = {}): Promise<ImageEmbeddings> {
  const px = size * size * 3;
  if (images.length < n * px) throw new RangeError(`embed: ${images.length} values cannot hold ${n} images of ${size}×${size}×3`);
  const d = backbone.embeddingSize;
  const run = async (data: Float32Array): Promise<Float32Array> => {
    const x = tf.tensor4d(data, [n, size, size, 3]);
    const y = backbone.apply(x, false);
    const out = (await y.data()) as Float32Array;
    x.dispose();
    y.dispose();
    return out;
  };
  const raw = await run(images.subarray(0, n * px));
  const magnitudes = new Float64Array(n);
  for (let i = 0; i < n; i++) magnitudes[i] = norm(raw, i * d, d);

  const embeddings = new Float32Array(raw);
  if (opts.flip !== false) {
    const mirrored = images.slice(0, n * px);
    for (let i = 0; i < n; i++) flipHorizontal(mirrored, i * px, size);
    const f = await run(mirrored);
    for (let k = 0; k < embeddings.length; k++) embeddings[k] = embeddings[k]! + f[k]!;
  }
  for (let i = 0; i < n; i++) {
    const s = norm(embeddings, i * d, d);
    const inv = s > 0 ? 1 / s : 0;
    for (let k = i * d; k < (i + 1) * d; k++) embeddings[k] = embeddings[k]! * inv;
  }
  return { embeddings, magnitudes };
}

function norm(a: Float32Array, offset: number, d: number): number {
  let s = 0;
  for (let k = offset; k < offset + d; k++) s += a[k]! * a[k]!;
  return Math.sqrt(s);
}
