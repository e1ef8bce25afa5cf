/**
 * Filling one worker's batch: images as float32 [B, S, S, 3] (HWC, normalised
 * by the dataset) and labels as int32 [B], with optional random horizontal
 * flips (arcface_torch's only augmentation) and the augmentations of
 * augment.ts.
 *
 * A flip (and every augmentation draw) depends only on (seed, epoch, image
 * index), never on the rank or the batch layout, so n workers × B and
 * 1 worker × n·B flip the same images.
 *
 * `batch()` is asynchronous. Synthetic (synchronous) datasets are filled in
 * place on call. File datasets decode off the event loop, `decodeThreads`
 * images at a time, and the loader keeps the next `prefetch` batches in
 * flight, so the training step rarely waits for data.
 *
 * An unreadable image (corrupt or truncated record, undecodable payload,
 * index entry past the end…) is reported once through `onBadSample` and
 * replaced by another image drawn deterministically from (seed, index,
 * attempt); the replacement keeps its own label. With `strictData` it is a
 * DataError naming the file, the image and the reason instead.
 */
import { deriveSeed } from '../common/random.js';
import { BadSampleError, isAsyncDataset, type AnyDataset, type AsyncDataset, type Dataset } from './dataset.js';
import { augmentImage, augmentationActive, type AugmentOptions } from './augment.js';
import { drawOccluder, trainingOccluder, type Box as OccluderBox } from './occluders.js';
import type { DistributedSampler } from './sampler.js';
import { availableParallelism } from 'node:os';

export interface Batch {
  /** [B, S, S, 3] HWC float32. */
  images: Float32Array;
  labels: Int32Array;
  /** The dataset indices of the batch, in order (as the sampler drew them). */
  indices: Int32Array;
  /** 1 where the image was flipped horizontally. */
  flipped: Uint8Array;
  /** The index actually read for each slot: differs from `indices` where an unreadable image was replaced. */
  sources?: Int32Array;
  /** augment.occluders: the occluder box drawn on each image (fractions of the side, as handed out), or null. */
  occluders?: (OccluderBox | null)[];
}

/** An unusable image, as reported to `onBadSample`. */
export interface BadSampleEvent {
  file: string;
  index: number;
  /** RecordIO key, where there is one. */
  key: number | null;
  reason: string;
}

/** Data that cannot be used, under strictData (or when no usable replacement is found). */
export class DataError extends Error {
  override name = 'DataError';
}

export interface LoaderOptions {
  dataset: AnyDataset;
  sampler: DistributedSampler;
  /** Random horizontal flip with probability 1/2 (default false). */
  flip?: boolean;
  /** Seed of the flip and augmentation draws (default: the sampler's seed). */
  seed?: number;
  /** Crop, colour jitter, grey-scale (default: none). */
  augment?: AugmentOptions;
  /** File datasets: batches decoded ahead of the one asked for (default 2; 0 = decode on demand). */
  prefetch?: number;
  /** File datasets: images decoded at once (default 0 = 4 × cores). */
  decodeThreads?: number;
  /** An unreadable image is an error instead of being replaced (default false). */
  strictData?: boolean;
  /** Called once per unreadable image (default: a JSON line on stderr). */
  onBadSample?: (e: BadSampleEvent) => void;
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

/** Slots of `batch` whose image was unreadable and was replaced by another (the step metric skippedImages). */
export function skippedInBatch(batch: Batch): number {
  const src = batch.sources;
  if (!src) return 0;
  let n = 0;
  for (let k = 0; k < batch.indices.length; k++) if (src[k] !== batch.indices[k]) n++;
  return n;
}

/** Candidates tried for one unreadable image before giving up. */
const MAX_REPLACEMENTS = 64;

export class Loader {
  readonly dataset: AnyDataset;
  readonly sampler: DistributedSampler;
  readonly flip: boolean;
  readonly seed: number;
  readonly augment: AugmentOptions;
  readonly prefetch: number;
  readonly decodeThreads: number;
  readonly strictData: boolean;
  /** Unreadable images found so far (index → reason) and how many slots were filled by a replacement. */
  readonly badSamples = new Map<number, string>();
  replacements = 0;
  private readonly onBadSample: (e: BadSampleEvent) => void;
  private readonly inflight = new Map<string, Promise<Batch>>();
  private readonly pool: Batch[] = [];
  private handedOut: Batch | null = null;
  private readonly limiter: Limiter;
  private scratch: Float32Array | null = null;

  constructor(o: LoaderOptions) {
    if (o.sampler.size !== o.dataset.size) throw new RangeError(`loader: sampler covers ${o.sampler.size} images, dataset has ${o.dataset.size}`);
    this.dataset = o.dataset;
    this.sampler = o.sampler;
    this.flip = o.flip ?? false;
    this.seed = o.seed ?? o.sampler.seed;
    this.augment = o.augment ?? {};
    this.prefetch = Math.max(0, Math.floor(o.prefetch ?? 2));
    this.decodeThreads = o.decodeThreads && o.decodeThreads > 0 ? Math.floor(o.decodeThreads) : 4 * defaultCores();
    this.strictData = o.strictData ?? false;
    this.onBadSample = o.onBadSample ?? ((e) => process.stderr.write(`${JSON.stringify({ level: 'warn', msg: 'unreadable training image skipped', ...e })}\n`));
    this.limiter = new Limiter(this.decodeThreads);
  }

  /**
   * This rank's batch `batchIdx` of `epoch`. Synchronous datasets fill `out`
   * when given. File datasets hand out buffers of their own, valid until the
   * next call (they are reused for later batches then); `out` is ignored.
   */
  async batch(epoch: number, batchIdx: number, out?: Batch): Promise<Batch> {
    const ds = this.dataset;
    if (!isAsyncDataset(ds)) return this.fillSync(ds, epoch, batchIdx, out);
    if (this.handedOut) this.pool.push(this.handedOut);
    this.handedOut = null;
    const key = `${epoch}:${batchIdx}`;
    let p = this.inflight.get(key);
    if (p) this.inflight.delete(key);
    else {
      await this.drain(); // a jump (resume, another order): what was prefetched is not wanted
      p = this.start(ds, epoch, batchIdx);
    }
    let [e, b] = [epoch, batchIdx];
    for (let k = 0; k < this.prefetch; k++) {
      [e, b] = b + 1 < this.sampler.epochBatches(e) ? [e, b + 1] : [e + 1, 0];
      const next = `${e}:${b}`;
      if (!this.inflight.has(next)) this.inflight.set(next, this.start(ds, e, b));
    }
    const batch = await p;
    this.handedOut = batch;
    return batch;
  }

  /** Waits for prefetched batches and closes the dataset's files. */
  async close(): Promise<void> {
    await this.drain();
    if (isAsyncDataset(this.dataset)) await this.dataset.close();
  }

  private async drain(): Promise<void> {
    const pending = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of pending) {
      try {
        this.pool.push(await p);
      } catch {
        // an error of a batch nobody asked for is not reported
      }
    }
  }

  private indicesAndFlips(epoch: number, batchIdx: number, batch: Batch | undefined): Batch {
    const indices = this.sampler.batchIndices(epoch, batchIdx);
    const b = indices.length;
    const s = this.dataset.imageSize;
    const out: Batch = batch ?? { images: new Float32Array(b * s * s * 3), labels: new Int32Array(b), indices: new Int32Array(b), flipped: new Uint8Array(b) };
    out.indices.set(indices);
    for (let k = 0; k < b; k++) out.flipped[k] = this.flip && flipDecision(this.seed, epoch, indices[k]!) ? 1 : 0;
    return out;
  }

  private fillSync(ds: Dataset, epoch: number, batchIdx: number, out?: Batch): Batch {
    const batch = this.indicesAndFlips(epoch, batchIdx, out);
    const s = ds.imageSize;
    const px = s * s * 3;
    if (!augmentationActive(this.augment)) {
      fillBatch(ds, batch.indices, batch.images, batch.labels, batch.flipped);
      return batch;
    }
    fillBatch(ds, batch.indices, batch.images, batch.labels, null);
    for (let k = 0; k < batch.indices.length; k++) this.finishImage(batch, k, epoch, px, s);
    return batch;
  }

  private finishImage(batch: Batch, k: number, epoch: number, px: number, s: number): void {
    if (augmentationActive(this.augment)) {
      this.scratch ??= new Float32Array(px);
      augmentImage(batch.images, k * px, s, this.augment, this.seed, epoch, batch.indices[k]!, this.scratch);
    }
    if (batch.flipped[k]) flipHorizontal(batch.images, k * px, s);
    const share = this.augment.occluders ?? 0;
    if (share > 0) {
      const occluder = trainingOccluder(this.seed, epoch, batch.indices[k]!, share);
      if (occluder) drawOccluder(batch.images, k * px, s, occluder);
      (batch.occluders ??= [])[k] = occluder?.box ?? null;
    }
  }

  private start(ds: AsyncDataset, epoch: number, batchIdx: number): Promise<Batch> {
    const b = this.sampler.batchPerWorker;
    const s = ds.imageSize;
    const px = s * s * 3;
    const batch = this.indicesAndFlips(epoch, batchIdx, this.pool.pop());
    batch.sources ??= new Int32Array(b);
    // without augmentations the dataset can write the image mirrored while normalising (no second pass)
    const flipOnLoad = ds.flipsOnLoad === true && !augmentationActive(this.augment);
    const p = Promise.all(
      Array.from(batch.indices, async (index, k) => {
        const flip = flipOnLoad && batch.flipped[k] === 1;
        const { label, source } = await this.loadSlot(ds, index, batch.images, k * px, flip);
        batch.labels[k] = label;
        batch.sources![k] = source;
        if (!flipOnLoad) this.finishImage(batch, k, epoch, px, s);
      }),
    ).then(() => batch);
    p.catch(() => {}); // a prefetched batch's error surfaces when (if) it is asked for
    return p;
  }

  /** Reads image `index` into its slot, replacing it deterministically if it is unreadable. */
  private async loadSlot(ds: AsyncDataset, index: number, images: Float32Array, offset: number, flip = false): Promise<{ label: number; source: number }> {
    const opts = flip ? { flip: true } : undefined;
    let candidate = index;
    let lastReason = '';
    for (let attempt = 0; attempt <= MAX_REPLACEMENTS; attempt++) {
      if (attempt > 0) candidate = deriveSeed(this.seed, 'replace-bad-sample', index, attempt) % ds.size;
      const known = this.badSamples.get(candidate);
      if (known !== undefined) {
        lastReason = known;
        continue;
      }
      try {
        const label = await this.limiter.run(() => ds.load(candidate, images, offset, opts));
        if (candidate !== index) this.replacements++;
        return { label, source: candidate };
      } catch (e) {
        if (!(e instanceof BadSampleError)) throw e;
        lastReason = e.reason;
        if (this.strictData) throw new DataError(`${e.message} (strictData is on: fix or remove this image, or turn strictData off to skip unreadable images)`);
        if (!this.badSamples.has(candidate)) {
          this.badSamples.set(candidate, e.reason);
          this.onBadSample({ file: e.file, index: candidate, key: e.key, reason: e.reason });
        }
      }
    }
    throw new DataError(`${ds.source}: image ${index} is unreadable (${lastReason}) and so were ${MAX_REPLACEMENTS} replacement candidates; the data looks broken`);
  }
}

/** At most `n` tasks at once, started in call order. */
class Limiter {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private readonly n: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.n) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

function defaultCores(): number {
  return Math.max(1, availableParallelism());
}
