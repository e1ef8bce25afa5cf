/**
 * Which images each worker trains on, step by step.
 *
 * Every epoch is one seeded permutation of all indices, the same on every
 * rank (it depends only on seed and epoch). The permutation is cut into global
 * batches of world·batchPerWorker; global batch k is perm[k·G, (k+1)·G) and
 * rank r takes the contiguous slice [r·B, (r+1)·B) of it. So the union over
 * ranks of global batch k, in rank order, is exactly what a single worker with
 * batch n·B gets at step k: "n workers × B" and "1 worker × n·B" see the same
 * samples in the same order.
 */
import { Rng } from '../common/random.js';

export interface SamplerOptions {
  /** Number of images in the dataset. */
  size: number;
  /** Number of workers (ranks). */
  world: number;
  rank: number;
  batchPerWorker: number;
  seed: number;
  /** Reshuffle every epoch (default true); false keeps index order. */
  shuffle?: boolean;
  /**
   * Drop the last incomplete global batch (default true). With false, the
   * last global batch is completed by wrapping around to the start of the
   * epoch's permutation, so every rank still gets exactly batchPerWorker.
   */
  dropLast?: boolean;
}

export class DistributedSampler {
  readonly size: number;
  readonly world: number;
  readonly rank: number;
  readonly batchPerWorker: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  private permEpoch = -1;
  private perm: Int32Array = new Int32Array(0);

  constructor(o: SamplerOptions) {
    const positive = (k: 'size' | 'world' | 'batchPerWorker') => {
      if (!Number.isInteger(o[k]) || o[k] < 1) throw new RangeError(`sampler: ${k} must be a positive integer, got ${o[k]}`);
    };
    positive('size');
    positive('world');
    positive('batchPerWorker');
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.world) throw new RangeError(`sampler: rank must be in [0, ${o.world}), got ${o.rank}`);
    this.size = o.size;
    this.world = o.world;
    this.rank = o.rank;
    this.batchPerWorker = o.batchPerWorker;
    this.seed = o.seed;
    this.shuffle = o.shuffle ?? true;
    this.dropLast = o.dropLast ?? true;
    if (this.dropLast && this.globalBatch > this.size) {
      throw new RangeError(`sampler: global batch ${this.world}×${this.batchPerWorker} = ${this.globalBatch} exceeds the dataset size ${this.size}`);
    }
  }

  /** Samples per step over all ranks (n·B). */
  get globalBatch(): number {
    return this.world * this.batchPerWorker;
  }

  /** Global batches (= steps) per epoch: floor(size / (world·batch)), or ceil without dropLast. */
  epochBatches(_epoch = 0): number {
    return this.dropLast ? Math.floor(this.size / this.globalBatch) : Math.ceil(this.size / this.globalBatch);
  }

  /** The epoch's order of all indices (identical on every rank). */
  permutation(epoch: number): Int32Array {
    if (epoch !== this.permEpoch) {
      if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`sampler: epoch must be a non-negative integer, got ${epoch}`);
      const p = new Int32Array(this.size);
      for (let i = 0; i < p.length; i++) p[i] = i;
      if (this.shuffle) Rng.derive(this.seed, 'sampler-epoch', epoch).shuffle(p);
      this.perm = p;
      this.permEpoch = epoch;
    }
    return this.perm;
  }

  /** This rank's batchPerWorker indices for global batch `batchIdx` of `epoch`. */
  batchIndices(epoch: number, batchIdx: number): Int32Array {
    return this.sliceOf(epoch, batchIdx, this.rank * this.batchPerWorker, this.batchPerWorker);
  }

  /** All n·B indices of global batch `batchIdx`, in rank order. */
  globalBatchIndices(epoch: number, batchIdx: number): Int32Array {
    return this.sliceOf(epoch, batchIdx, 0, this.globalBatch);
  }

  private sliceOf(epoch: number, batchIdx: number, from: number, count: number): Int32Array {
    const batches = this.epochBatches(epoch);
    if (!Number.isInteger(batchIdx) || batchIdx < 0 || batchIdx >= batches) {
      throw new RangeError(`sampler: batch ${batchIdx} out of range [0, ${batches}) for epoch ${epoch}`);
    }
    const perm = this.permutation(epoch);
    const start = batchIdx * this.globalBatch + from;
    if (start + count <= perm.length) return perm.slice(start, start + count);
    const out = new Int32Array(count);
    for (let i = 0; i < count; i++) out[i] = perm[(start + i) % perm.length]!;
    return out;
  }
}
