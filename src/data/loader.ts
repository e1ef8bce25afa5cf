/**
 * Filling one worker's batch: images as float32 [B, S, S, 3] (HWC, normalised
 * by the dataset) and labels as int32 [B], with optional random horizontal
 * flips (arcface_torch's only augmentation).
 *
 * A flip depends only on (seed, epoch, image index), never on the rank or the
 * batch layout, so n workers × B and 1 worker × n·B flip the same images.
 */
import { deriveSeed } from '../common/random.js';
import type { Dataset } from './dataset.js';
import type { DistributedSampler } from './sampler.js';

export interface Batch {
  /** [B, S, S, 3] HWC float32. */
  images: Float32Array;
  labels: Int32Array;
  /** The dataset indices of the batch, in order. */
  indices: Int32Array;
  /** 1 where the image was flipped horizontally. */
  flipped: Uint8Array;
}

export interface LoaderOptions {
  dataset: Dataset;
  sampler: DistributedSampler;
  /** Random horizontal flip with probability 1/2 (default false). */
  flip?: boolean;
  /** Seed of the flip draws (default: the sampler's seed). */
  seed?: number;
}

/** Whether image `index` is flipped in `epoch`: a fair coin from (seed, epoch, index). */
export function flipDecision(seed: number, epoch: number, index: number): boolean {
  return deriveSeed(seed, 'hflip', epoch, index) < 0x80000000;
}

/** Mirrors one HWC RGB image of size × size in place (columns reversed). */
export function flipHorizontal(images: Float32Array, offset: number, size: number): void {
  for (let y = 0; y < size; y++) {
    const row = offset + y * size * 3;
    for (let a = 0, b = size - 1; a < b; a++, b--) {
      for (let c = 0; c < 3; c++) {
        const i = row + a * 3 + c;
        const j = row + b * 3 + c;
        const t = images[i]!;
        images[i] = images[j]!;
        images[j] = t;
      }
    }
  }
}

/**
 * Reads `indices` from `dataset` into `images` / `labels` (sized for at least
 * indices.length images), flipping image k when flips[k] is 1.
 */
export function fillBatch(dataset: Dataset, indices: Int32Array, images: Float32Array, labels: Int32Array, flips?: Uint8Array | null): void {
  const px = dataset.imageSize * dataset.imageSize * 3;
  if (images.length < indices.length * px) throw new RangeError(`loader: images buffer holds ${Math.floor(images.length / px)} images, batch has ${indices.length}`);
  if (labels.length < indices.length) throw new RangeError(`loader: labels buffer holds ${labels.length}, batch has ${indices.length}`);
  for (let k = 0; k < indices.length; k++) {
    const index = indices[k]!;
    dataset.read(index, images, k * px);
    labels[k] = dataset.label(index);
    if (flips?.[k]) flipHorizontal(images, k * px, dataset.imageSize);
  }
}

export class Loader {
  readonly dataset: Dataset;
  readonly sampler: DistributedSampler;
  readonly flip: boolean;
  readonly seed: number;

  constructor(o: LoaderOptions) {
    if (o.sampler.size !== o.dataset.size) throw new RangeError(`loader: sampler covers ${o.sampler.size} images, dataset has ${o.dataset.size}`);
    this.dataset = o.dataset;
    this.sampler = o.sampler;
    this.flip = o.flip ?? false;
    this.seed = o.seed ?? o.sampler.seed;
  }

  /** Fills (or allocates) this rank's batch `batchIdx` of `epoch`. */
  batch(epoch: number, batchIdx: number, out?: Batch): Batch {
    const indices = this.sampler.batchIndices(epoch, batchIdx);
    const b = indices.length;
    const s = this.dataset.imageSize;
    const batch: Batch = out ?? {
      images: new Float32Array(b * s * s * 3),
      labels: new Int32Array(b),
      indices: new Int32Array(b),
      flipped: new Uint8Array(b),
    };
    batch.indices.set(indices);
    for (let k = 0; k < b; k++) batch.flipped[k] = this.flip && flipDecision(this.seed, epoch, indices[k]!) ? 1 : 0;
    fillBatch(this.dataset, indices, batch.images, batch.labels, batch.flipped);
    return batch;
  }
}
