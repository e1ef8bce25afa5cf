/**
 * DCQ's reference images (docs/methods.md#dcq-step step 1): every query image gets a
 * reference image of the same identity, drawn uniformly among that identity's
 * images (it may be the query itself; a single-image identity always reuses
 * it). The draw depends only on (seed, epoch, query index), never on the rank
 * or the batch layout, so n workers × B and 1 worker × n·B read the same
 * references.
 *
 * The reference batch is read by a second, ordinary Loader whose sampler is a
 * ReferenceSampler: it hands out, for each query slot, the query's reference
 * index. Flips and augmentations are drawn with the reference loader's own
 * seed, so query and reference get independent flips.
 */
import { Rng } from '../common/random.js';
import type { AnyDataset } from './dataset.js';
import { DistributedSampler } from './sampler.js';

/** The images of each identity, grouped (CSR layout). */
export class IdentityIndex {
  /** Image indices sorted by label, then by index. */
  private readonly order: Int32Array;
  /** Images of label y are order[start[y], start[y + 1]). */
  private readonly start: Int32Array;
  readonly labels: Int32Array;

  constructor(labels: Int32Array) {
    let classes = 0;
    for (const y of labels) {
      if (!Number.isInteger(y) || y < 0) throw new Error(`identity index: label ${y} is not a non-negative integer`);
      classes = Math.max(classes, y + 1);
    }
    const start = new Int32Array(classes + 1);
    for (const y of labels) start[y + 1]!++;
    for (let c = 0; c < classes; c++) start[c + 1]! += start[c]!;
    const fill = start.slice(0, classes);
    const order = new Int32Array(labels.length);
    for (let i = 0; i < labels.length; i++) order[fill[labels[i]!]!++] = i;
    this.order = order;
    this.start = start;
    this.labels = labels;
  }

  /** The images of identity `label` (ascending indices). */
  imagesOf(label: number): Int32Array {
    if (label < 0 || label + 1 >= this.start.length) return new Int32Array(0);
    return this.order.subarray(this.start[label]!, this.start[label + 1]!);
  }
}

/**
 * Every image's identity, read up front. Synthetic data, image folders and
 * list files know their labels; RecordIO does when it has insightface's
 * identity records (an error otherwise: DCQ must know each identity's images).
 */
export function datasetLabels(ds: AnyDataset): Int32Array {
  const d = ds as AnyDataset & { label?: (i: number) => number; knownLabel?: (i: number) => number | null; source?: string };
  const out = new Int32Array(ds.size);
  if (typeof d.label === 'function') {
    for (let i = 0; i < ds.size; i++) out[i] = d.label(i);
    return out;
  }
  if (typeof d.knownLabel === 'function') {
    for (let i = 0; i < ds.size; i++) {
      const y = d.knownLabel(i);
      if (y === null)
        throw new Error(
          `${d.source ?? 'the training data'}: image ${i} has no identity known before reading it (a RecordIO without identity records); the dcq classifier draws a same-identity reference image and needs every image's identity up front`,
        );
      out[i] = y;
    }
    return out;
  }
  throw new Error('the training data does not tell image identities up front; the dcq classifier needs them');
}

/** The reference image of query image `index` in `epoch`: uniform over its identity's images, from (seed, epoch, index). */
export function referenceIndex(identities: IdentityIndex, seed: number, epoch: number, index: number): number {
  const images = identities.imagesOf(identities.labels[index]!);
  if (images.length <= 1) return index;
  return images[Rng.derive(seed, 'dcq-reference', epoch, index).int(images.length)]!;
}

/** A sampler that hands out, slot for slot, the reference images of another sampler's batches. */
export class ReferenceSampler extends DistributedSampler {
  constructor(
    private readonly queries: DistributedSampler,
    private readonly identities: IdentityIndex,
  ) {
    super({ size: queries.size, world: queries.world, rank: queries.rank, batchPerWorker: queries.batchPerWorker, seed: queries.seed, shuffle: queries.shuffle, dropLast: queries.dropLast });
    if (identities.labels.length !== queries.size) throw new Error(`reference sampler: ${identities.labels.length} labels for ${queries.size} images`);
  }

  override batchIndices(epoch: number, batchIdx: number): Int32Array {
    return this.references(epoch, this.queries.batchIndices(epoch, batchIdx));
  }

  override globalBatchIndices(epoch: number, batchIdx: number): Int32Array {
    return this.references(epoch, this.queries.globalBatchIndices(epoch, batchIdx));
  }

  /** The reference of each query index, in order. */
  references(epoch: number, indices: Int32Array): Int32Array {
    return indices.map((i) => referenceIndex(this.identities, this.seed, epoch, i));
  }
}
