/**
 * What `classifier: dcq` adds to a worker's training (docs/methods.md#dcq-step), in the
 * order of one step: the reference batch (a second loader over the same
 * data), the key encoder's EMA update, the keys, the sharded queue softmax
 * and enqueue, the last two and the EMA committed only when the step is applied. train.ts calls `step` where the fc path calls the sharded
 * classifier; the backbone backward, gradient all-reduce and optimizer step
 * are shared.
 *
 * Checkpoints (checkpoint/checkpoint.ts layout, manifest unchanged):
 *  - backbone.safetensors (rank 0) holds the network to run at inference
 *    under the plain tensor names, which for DCQ is the KEY encoder (docs/methods.md#dcq-step
 *    "Inference"), so `shardface eval`, `embed` and `export` use it as they
 *    are; the trained query encoder rides along under `query.<name>`
 *    (metadata `network: dcq-key-encoder`, `queryPrefix`), its optimizer's
 *    slots under `query.optimizer.<name>` (metadata `optimizer`, `optimizerStep`).
 *  - queue-shard-<rank>.safetensors: the worker's queue block (`keys`
 *    slots×D, `labels`) with metadata slotStart, slotCount, queueSize, ptr.
 *    The manifest lists it among `shards` (with the worker's class range, as
 *    for fc).
 */
import { tf } from '../ops/tf.js';
import { deriveSeed } from '../common/random.js';
import type { WorkerContext } from './job.js';
import type { TrainConfig } from '../config/schema.js';
import type { AnyDataset } from '../data/dataset.js';
import { Loader, type Batch } from '../data/loader.js';
import { IdentityIndex, ReferenceSampler, datasetLabels } from '../data/reference.js';
import type { Backbone } from '../models/index.js';
import { KeyEncoder, type KeyStep } from './key-encoder.js';
import { ShardedClassQueue, checkQueueSize } from './sharded-class-queue.js';
import type { ShardComm } from './sharded-classifier.js';

/** Prefix of the query encoder's tensors in a DCQ run's backbone.safetensors. */
export const DCQ_QUERY_PREFIX = 'query.';
/** Prefix of the query encoder's optimizer slots there (what a resume needs to continue it exactly). */
export const DCQ_QUERY_OPTIMIZER_PREFIX = `${DCQ_QUERY_PREFIX}optimizer.`;
/** Metadata `network` of a DCQ run's backbone.safetensors. */
export const DCQ_NETWORK = 'dcq-key-encoder';

export function queueShardFile(rank: number): string {
  return `queue-shard-${rank}.safetensors`;
}

/** Throws a config-style error when the DCQ settings cannot work with this batch layout. */
function checkDcqConfig(cfg: Pick<TrainConfig, 'workers' | 'batch' | 'dcq'>): void {
  const problem = checkQueueSize(cfg.dcq.queueSize, cfg.workers * cfg.batch);
  if (problem) throw new Error(`config key "dcq.queueSize": ${problem}`);
}

/** One DCQ step: the loss and ∂L/∂q, and the key encoder's and queue's changes, pending. */
export interface DcqStepResult {
  loss: number;
  gradEmbeddings: Float32Array;
  /** Commits the key encoder's EMA and statistics and the enqueue. */
  apply(): void;
  /** Puts the key encoder back; the queue was never written. */
  discard(): void;
}

export class DcqTraining {
  readonly keyEncoder: KeyEncoder;
  readonly queue: ShardedClassQueue;
  private readonly refLoader: Loader;
  private refBatch: Batch | undefined;

  constructor(
    ctx: WorkerContext,
    private readonly cfg: TrainConfig,
    query: Backbone,
    /** A fresh backbone of the query's architecture, to become the key encoder. */
    keyNetwork: Backbone,
    queryLoader: Loader,
  ) {
    checkDcqConfig(cfg);
    this.keyEncoder = new KeyEncoder(keyNetwork, query);
    this.queue = new ShardedClassQueue(ctx.world, ctx.rank, {
      dim: cfg.embeddingSize,
      queueSize: cfg.dcq.queueSize,
      head: { s: cfg.dcq.s, m: cfg.dcq.m },
      chunkRows: cfg.chunkRows || 256,
      seed: cfg.seed,
    });
    const dataset: AnyDataset = queryLoader.dataset;
    this.refLoader = new Loader({
      dataset,
      sampler: new ReferenceSampler(queryLoader.sampler, new IdentityIndex(datasetLabels(dataset))),
      flip: queryLoader.flip,
      seed: deriveSeed(queryLoader.seed, 'dcq-reference-image'), // flips and augmentations independent of the query's
      augment: queryLoader.augment,
      prefetch: queryLoader.prefetch,
      decodeThreads: queryLoader.decodeThreads,
      strictData: queryLoader.strictData,
      onBadSample: (e) => ctx.logger.log.warn(e, 'unreadable reference image skipped'),
    });
  }

  /**
   * Steps 1, 3–7 for batch `batchIdx` of `epoch`, after the query forward
   * (step 2) gave `queries` (raw, B×D): reference batch, EMA, keys, queue
   * softmax (loss, ∂L/∂q of this worker's rows). The EMA, the key encoder's
   * BatchNorm statistics and the enqueue wait for `apply`; `discard` leaves
   * key encoder and queue as they were before the step.
   */
  async step(step: number, epoch: number, batchIdx: number, queries: Float32Array, labels: Int32Array, comm: ShardComm): Promise<DcqStepResult> {
    this.refBatch = await this.refLoader.batch(epoch, batchIdx, this.refBatch);
    const s = this.cfg.imageSize;
    const x = tf.tensor4d(this.refBatch.images, [labels.length, s, s, 3]);
    let key: KeyStep;
    try {
      key = await this.keyEncoder.step(x, this.cfg.dcq.momentum);
    } finally {
      x.dispose();
    }
    try {
      // the key is the class weight of the QUERY's identity (the reference is drawn from it)
      const q = await this.queue.forwardBackward(step, queries, key.keys, labels, comm);
      return {
        loss: q.loss,
        gradEmbeddings: q.gradEmbeddings,
        apply: () => {
          key.commit();
          q.enqueue();
        },
        discard: () => key.discard(),
      };
    } catch (e) {
      key.discard();
      throw e;
    }
  }

  /** The network for verification and inference: the key encoder. */
  get inferenceNetwork(): Backbone {
    return this.keyEncoder.network;
  }

  /** Releases the key encoder (the reference loader shares the query loader's dataset, which the trainer owns). */
  close(): void {
    this.keyEncoder.dispose();
  }
}
