/**
 * This worker's block of the DCQ class queue and the distributed step through
 * it (docs/methods.md#dcq-step steps 5–7), the DCQ counterpart of sharded-classifier.ts:
 *
 *   all-gather [q | k] and labels → per-row stats over this block (+ the
 *   positives of this worker's own rows) → coordinator exchangeSoftmax →
 *   partial ∂q for all rows → reduce-scatter → ∂q of this worker's rows;
 *   then the enqueue of the whole global batch (after the logits), which the
 *   step hands back as `enqueue` for the training method's apply, so a step
 *   the numerical guard skips leaves the queue as it was.
 *
 * The queue holds K = queueSize slots in total; worker r of n holds the
 * contiguous block of slots classRange(K, n, r) (same split rule as classes),
 * so the queue grows with the worker count like the classifier does. Memory
 * is O(K_r·D + G·K_r/chunk·chunk), independent of the number of classes C.
 *
 * Gradient convention as sharded-classifier.ts: ∂L/∂q of the global-batch
 * mean; backbone gradients are SUMMED across workers.
 */
import { tf } from '../ops/tf.js';
import { classRange, type ClassRange } from '../ops/class-range.js';
import { dcqShardBackward, dcqShardForward, enqueueBlock, initialQueueBlock, type DcqHead } from '../ops/dcq.js';
import type { ShardComm } from './sharded-classifier.js';

export interface ClassQueueSettings {
  dim: number;
  /** K, the total number of slots over all workers; a multiple of the global batch. */
  queueSize: number;
  head: DcqHead;
  /** Rows of logits computed at once (bounds memory to chunk×K_r). */
  chunkRows: number;
  seed: number;
}

/** The queue state of one worker: its slots, their keys and labels, and the (global) pointer. */
export interface QueueState {
  keys: Float32Array;
  labels: Int32Array;
  ptr: number;
}

export interface QueueStepResult {
  loss: number;
  /** ∂L/∂q_raw for this worker's own B rows (B×D), L = mean over the global batch. */
  gradEmbeddings: Float32Array;
  /** Writes this step's keys into the queue and moves the pointer (once; the queue is unchanged until then). */
  enqueue: () => void;
}

/** Checks that K is a positive multiple of the global batch (docs/methods.md#dcq-step: "K must be divisible by the global batch"). */
export function checkQueueSize(queueSize: number, globalBatch: number): string | null {
  if (!Number.isSafeInteger(queueSize) || queueSize < 1) return `dcq.queueSize must be a positive integer, got ${queueSize}`;
  if (queueSize % globalBatch !== 0)
    return `dcq.queueSize ${queueSize} is not a multiple of the global batch workers × batch = ${globalBatch}; the FIFO enqueue writes whole global batches (e.g. use ${Math.max(1, Math.round(queueSize / globalBatch)) * globalBatch})`;
  return null;
}

export class ShardedClassQueue {
  /** This worker's global slots [start, start + count). */
  readonly slots: ClassRange;
  readonly state: QueueState;

  constructor(
    readonly world: number,
    readonly rank: number,
    private readonly cfg: ClassQueueSettings,
    init?: QueueState,
  ) {
    this.slots = classRange(cfg.queueSize, world, rank);
    const fresh = init ?? { ...initialQueueBlock(this.slots, cfg.dim, cfg.seed), ptr: 0 };
    if (fresh.keys.length !== this.slots.count * cfg.dim || fresh.labels.length !== this.slots.count)
      throw new Error(`class queue: initial state holds ${fresh.labels.length} slots, rank ${rank} of ${world} holds ${this.slots.count}`);
    this.state = fresh;
  }

  /**
   * One forward + backward through the sharded queue for this worker's batch;
   * the enqueue is returned, not done. `queries`: raw embeddings (B×D); `keys`: unit keys of
   * the reference images (B×D), no gradient; `labels`: the rows' identities.
   */
  async forwardBackward(step: number, queries: Float32Array, keys: Float32Array, labels: Int32Array, comm: ShardComm): Promise<QueueStepResult> {
    const { dim, queueSize } = this.cfg;
    const batch = labels.length;
    if (queries.length !== batch * dim || keys.length !== batch * dim) throw new Error(`class queue: ${queries.length} query and ${keys.length} key values, expected ${batch}×${dim}`);

    // every worker gets all G queries, keys and labels (one gather for q and k)
    const both = new Float32Array(2 * batch * dim);
    both.set(queries, 0);
    both.set(keys, batch * dim);
    const gathered = await comm.allGatherFloat(both);
    const allLabels = await comm.allGatherInt(labels);
    const rows = allLabels.length;
    const world = rows / batch;
    if (rows > queueSize || queueSize % rows !== 0) throw new Error(checkQueueSize(queueSize, rows) ?? `queue of ${queueSize} slots, global batch ${rows}`);
    const allQ = new Float32Array(rows * dim);
    const allK = new Float32Array(rows * dim);
    for (let r = 0; r < world; r++) {
      const from = r * 2 * batch * dim;
      allQ.set(gathered.subarray(from, from + batch * dim), r * batch * dim);
      allK.set(gathered.subarray(from + batch * dim, from + 2 * batch * dim), r * batch * dim);
    }
    // the positive of row i is owned by the worker whose batch the row is
    const owned = new Uint8Array(rows);
    owned.fill(1, this.rank * batch, (this.rank + 1) * batch);

    const q = tf.tensor2d(allQ, [rows, dim]);
    // The block's keys as a tensor for this step (no copy on the CPU backends); disposed before the enqueue writes them.
    const blockKeys = tf.tensor2d(this.state.keys, [this.slots.count, dim]);
    try {
      const dcqRows = { queries: q, keys: allK, labels: allLabels, owned };
      const block = { keys: blockKeys, labels: this.state.labels };
      const opts = { chunk: this.cfg.chunkRows };
      const stats = dcqShardForward(dcqRows, block, this.cfg.head, opts);
      const { logSumExp, loss } = await comm.exchangeSoftmax(step, batch, stats);
      const grad = dcqShardBackward(dcqRows, block, this.cfg.head, logSumExp, rows, opts);
      const partial = (await grad.data()) as Float32Array;
      grad.dispose();
      blockKeys.dispose();
      const own = await comm.reduceScatter(partial);
      // 7. enqueue the whole global batch after the logits (each worker writes the slots it holds), when the step is applied
      let done = false;
      const enqueue = () => {
        if (done) throw new Error('class queue: a step enqueued twice');
        done = true;
        this.state.ptr = enqueueBlock(this.state, this.slots, queueSize, this.state.ptr, allK, allLabels, dim);
      };
      return { loss, gradEmbeddings: own, enqueue };
    } finally {
      if (!blockKeys.isDisposed) blockKeys.dispose();
      q.dispose();
    }
  }
}
