/**
 * DCQ, the Dynamic Class Queue (docs/methods.md#dynamic-class-queue): the math of one worker's share of
 * the queue softmax, the FIFO enqueue and the key encoder's EMA.
 *
 * There is no stored C×D classifier. Each row i of the global batch (G rows)
 * has its own freshly generated class weight k_i = n(f_k(x_ref,i)) and is
 * classified against it plus a queue of K unit keys Q (one per slot, with the
 * label of the image it came from):
 *
 *   z_i0 = s·(q̂_i·k_i − m)                    positive (CosFace margin)
 *   z_ij = s·q̂_i·Q_j                          negatives, j = 1..K,
 *          excluded where Lq_j = y_i          (the official −1e9 mask: exp → 0)
 *   L    = (1/G) Σ_i [ logsumexp_j z_ij − z_i0 ]   (target column 0)
 *
 * Sharding: worker r holds the contiguous queue slots `slots` (like a class
 * range), so the queue grows with the worker count. Per row it sends the
 * coordinator the usual {rowMax, sumExp, target, owned} over ITS slots, plus
 * the positive column for the rows it owns (the rows of its own batch); the
 * coordinator's reduceSoftmaxStats is used unchanged (exactly one owner per
 * row). A row whose slots on this shard are all masked, and which the shard
 * does not own, reports sumExp 0 and is skipped by the reduction.
 *
 * Conventions, named where they happen:
 *  - Queue layout: slot-major K_r×D rows (the official code stores Q as D×K columns; same
 *    numbers, transposed).
 *  - No clamp on the cosines (the official code has none: q·k of unit vectors).
 *  - Gradient of the GLOBAL-batch mean: ∂L/∂z_ij = (p_ij − [j = 0])/G. The
 *    official code takes the mean over each GPU's local batch B and lets DDP
 *    average the gradients over the n GPUs: (1/n)·Σ_gpus (1/B)Σ_local = (1/G)Σ_all,
 *    the same gradient. shardface sums the backbone gradients over workers
 *    (grad-buckets), so the 1/G here is the only scale factor.
 *  - k and Q are stop-gradient: only q gets a gradient (docs/methods.md#dcq-gradient). The
 *    backward returns this shard's PARTIAL ∂L/∂q_raw for all G rows, already
 *    taken through n(·); the reduce-scatter sums the shards.
 *  - Per chunk of rows, only the logits GEMM (and, backward, ∂q̂ = P·Q) run as
 *    tensor ops; max, masking and exp run in one plain pass over the chunk on
 *    the host (no scatter, no broadcasting; exact row-max shift, float64 sums),
 *    which on the CPU backends is several times faster than the stock
 *    elementwise kernels. On a GPU backend the chunk's logits are read back.
 */
import { tf } from './tf.js';
import { Rng } from '../common/random.js';
import { l2NormalizeGrad, l2NormalizeWithNorm, NORM_EPS } from './normalize.js';
import type { ClassRange } from './class-range.js';
import type { SoftmaxStats } from './softmax-shard.js';

/** The DCQ head: logit scale s and CosFace margin m on the positive (docs/methods.md#dcq-defaults: 50, 0.3). */
export interface DcqHead {
  s: number;
  m: number;
}

/** One worker's block of the queue. */
export interface QueueBlock {
  /** Unit keys of the block's slots, K_r×D, slot-major. */
  keys: tf.Tensor2D;
  /** Label of each slot; −1 = never filled (matches no identity, like the official randn labels). */
  labels: Int32Array;
}

/** The gathered rows of one step, as every worker sees them. */
export interface DcqRows {
  /** Raw query embeddings q_raw, G×D (the only input with a gradient). */
  queries: tf.Tensor2D;
  /** Unit keys k_i = n(f_k(x_ref,i)), G×D, row-major. */
  keys: Float32Array;
  /** Identity of each row, G. */
  labels: Int32Array;
  /** 1 where this shard holds row i's positive column (exactly one shard per row). */
  owned: Uint8Array;
}

export interface DcqOptions {
  /** Rows per chunk (default 256): bounds the logits held at once to chunk×K_r. */
  chunk?: number;
}

const DEFAULT_CHUNK = 256;

function check(rows: DcqRows, block: QueueBlock, head: DcqHead, opts: DcqOptions): { g: number; d: number; k: number; chunk: number } {
  if (!(head.s > 0) || !Number.isFinite(head.s)) throw new Error(`dcq: s must be a finite number > 0, got ${head.s}`);
  if (!Number.isFinite(head.m)) throw new Error(`dcq: m must be finite, got ${head.m}`);
  const [g, d] = rows.queries.shape;
  const [k, dk] = block.keys.shape;
  if (rows.queries.rank !== 2 || block.keys.rank !== 2) throw new Error('dcq: queries and queue keys must be 2-D');
  if (dk !== d) throw new Error(`dcq: queue keys have ${dk} columns, queries ${d}`);
  if (rows.keys.length !== g * d) throw new Error(`dcq: ${rows.keys.length} key values for ${g}×${d}`);
  if (rows.labels.length !== g || rows.owned.length !== g) throw new Error(`dcq: ${rows.labels.length} labels and ${rows.owned.length} owner flags for ${g} rows`);
  if (block.labels.length !== k) throw new Error(`dcq: ${block.labels.length} slot labels for ${k} slots`);
  const chunk = opts.chunk ?? DEFAULT_CHUNK;
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new Error(`dcq: chunk must be a positive integer, got ${chunk}`);
  return { g, d, k, chunk };
}

/** Slots of the block by label (labels < 0 are never matched). */
function slotsByLabel(labels: Int32Array): Map<number, number[]> {
  const m = new Map<number, number[]>();
  for (let j = 0; j < labels.length; j++) {
    const y = labels[j]!;
    if (y < 0) continue;
    const list = m.get(y);
    if (list) list.push(j);
    else m.set(y, [j]);
  }
  return m;
}

/** q̂_i·k_i for every row, in float64. */
function positiveCosines(unit: Float32Array, keys: Float32Array, g: number, d: number): Float64Array {
  const out = new Float64Array(g);
  for (let i = 0; i < g; i++) {
    let dot = 0;
    for (let c = 0; c < d; c++) dot += unit[i * d + c]! * keys[i * d + c]!;
    out[i] = dot;
  }
  return out;
}

/**
 * The dense logits of rows [0, G) against this block, z/s with masked
 * entries −Infinity (for tests and debugging; the training path never
 * materialises more than one chunk). Column 0 is the positive where owned
 * (NaN where not), columns 1..K_r the block's slots.
 */
export function dcqLogits(rows: DcqRows, block: QueueBlock, head: DcqHead): Float32Array {
  const { g, d, k } = check(rows, block, head, {});
  const unit = l2NormalizeWithNorm(rows.queries);
  try {
    const pos = positiveCosines(unit.unit.dataSync() as Float32Array, rows.keys, g, d);
    const bySlot = slotsByLabel(block.labels);
    const z = k > 0 ? chunkLogits(unit.unit, block.keys, 0, g) : new Float32Array(0);
    const out = new Float32Array(g * (k + 1));
    for (let i = 0; i < g; i++) {
      out[i * (k + 1)] = rows.owned[i] ? pos[i]! - head.m : NaN;
      out.set(z.subarray(i * k, (i + 1) * k), i * (k + 1) + 1);
      for (const j of maskedSlots(bySlot, rows.labels[i]!)) out[i * (k + 1) + 1 + j] = -Infinity;
    }
    return out;
  } finally {
    tf.dispose([unit.unit, unit.norm]);
  }
}

/** The slots of this block masked for row i (its own identity), or an empty list. */
function maskedSlots(bySlot: Map<number, number[]>, label: number): readonly number[] {
  return bySlot.get(label) ?? NO_SLOTS;
}
const NO_SLOTS: readonly number[] = [];

/** s·q̂ of rows [r0, r1) against the block: the chunk's logits z (rows×K_r), on the host. */
function chunkLogits(scaled: tf.Tensor2D, keys: tf.Tensor2D, r0: number, r1: number): Float32Array {
  // (tidy must not return the array: it would walk its millions of entries looking for tensors)
  const z = tf.tidy(() => tf.matMul(r0 === 0 && r1 === scaled.shape[0] ? scaled : tf.slice(scaled, [r0, 0], [r1 - r0, -1]), keys, false, true));
  return readAndDispose(z);
}

/** The values of `t` on the host (a private array), disposing `t`. */
function readAndDispose(t: tf.Tensor): Float32Array {
  try {
    return t.dataSync() as Float32Array;
  } finally {
    t.dispose();
  }
}

/** Forward on one shard: per-row softmax statistics over this block's slots plus the owned positives. */
export function dcqShardForward(rows: DcqRows, block: QueueBlock, head: DcqHead, opts: DcqOptions = {}): SoftmaxStats {
  const { g, d, k, chunk } = check(rows, block, head, opts);
  const { s, m } = head;
  const rowMax = new Float32Array(g).fill(-Infinity);
  const sumExp = new Float32Array(g);
  const target = new Float32Array(g);
  const owned = Uint8Array.from(rows.owned);
  const unit = l2NormalizeWithNorm(rows.queries);
  const scaled = tf.mul(unit.unit, s) as tf.Tensor2D;
  try {
    const pos = positiveCosines(unit.unit.dataSync() as Float32Array, rows.keys, g, d);
    const bySlot = slotsByLabel(block.labels);
    for (let r0 = 0; r0 < g; r0 += chunk) {
      const r1 = Math.min(g, r0 + chunk);
      const z = k > 0 ? chunkLogits(scaled, block.keys, r0, r1) : null;
      for (let i = r0; i < r1; i++) {
        // masked entries are excluded (exp(−1e9 − M) = 0 in the official code)
        const row = z ? z.subarray((i - r0) * k, (i - r0 + 1) * k) : null;
        if (row) for (const j of maskedSlots(bySlot, rows.labels[i]!)) row[j] = -Infinity;
        const z0 = owned[i] ? s * (pos[i]! - m) : -Infinity;
        let M = z0;
        if (row) for (let j = 0; j < k; j++) if (row[j]! > M) M = row[j]!;
        if (M === -Infinity) continue; // nothing here for this row: sumExp 0, skipped by the reduction
        // this shard's Σ exp(z_ij − M_i) over unmasked slots (+ the positive where owned), in float64
        let sum = owned[i] ? Math.exp(z0 - M) : 0;
        if (row) for (let j = 0; j < k; j++) sum += Math.exp(row[j]! - M);
        if (owned[i]) target[i] = z0;
        rowMax[i] = M;
        sumExp[i] = sum;
      }
    }
  } finally {
    tf.dispose([unit.unit, unit.norm, scaled]);
  }
  return { rowMax, sumExp, target, owned };
}

/**
 * Backward on one shard: this shard's partial ∂L/∂q_raw (G×D) of the mean
 * loss over `rowsTotal` rows, given the coordinator's per-row log-sum-exp.
 *   ∂L/∂q̂_i = (s/G)·[ Σ_{j unmasked} p_ij·Q_j + owned_i·(p_i0 − 1)·k_i ],  p_ij = exp(z_ij − lse_i)
 * then through n(·) (docs/methods.md#dcq-gradient, docs/methods.md#normalisation).
 */
export function dcqShardBackward(rows: DcqRows, block: QueueBlock, head: DcqHead, logSumExp: Float32Array, rowsTotal: number, opts: DcqOptions = {}): tf.Tensor2D {
  const { g, d, k, chunk } = check(rows, block, head, opts);
  if (logSumExp.length !== g) throw new Error(`dcq backward: ${logSumExp.length} log-sum-exp values for ${g} rows`);
  if (!Number.isFinite(rowsTotal) || rowsTotal <= 0) throw new Error(`dcq backward: rowsTotal must be > 0, got ${rowsTotal}`);
  const { s, m } = head;
  const unit = l2NormalizeWithNorm(rows.queries);
  const scaled = tf.mul(unit.unit, s) as tf.Tensor2D;
  const gradUnit = new Float32Array(g * d);
  try {
    const pos = positiveCosines(unit.unit.dataSync() as Float32Array, rows.keys, g, d);
    const bySlot = slotsByLabel(block.labels);
    const scale = s / rowsTotal;
    for (let r0 = 0; r0 < g && k > 0; r0 += chunk) {
      const r1 = Math.min(g, r0 + chunk);
      // the chunk's logits become p·(s/G) in place, masked entries 0; then ∂L/∂q̂ = that · Q
      const p = chunkLogits(scaled, block.keys, r0, r1);
      for (let i = r0; i < r1; i++) {
        const lse = logSumExp[i]!;
        const off = (i - r0) * k;
        for (let j = 0; j < k; j++) p[off + j] = Math.exp(p[off + j]! - lse) * scale;
        for (const j of maskedSlots(bySlot, rows.labels[i]!)) p[off + j] = 0;
      }
      const a = readAndDispose(tf.tidy(() => tf.matMul(tf.tensor2d(p, [r1 - r0, k]), block.keys)));
      gradUnit.set(a, r0 * d);
    }
    for (let i = 0; i < g; i++) {
      if (!rows.owned[i]) continue;
      const p0 = Math.exp(s * (pos[i]! - m) - logSumExp[i]!);
      const coef = scale * (p0 - 1);
      for (let c = 0; c < d; c++) gradUnit[i * d + c] = gradUnit[i * d + c]! + coef * rows.keys[i * d + c]!;
    }
    return tf.tidy(() => l2NormalizeGrad(tf.tensor2d(gradUnit, [g, d]), unit.unit, unit.norm));
  } finally {
    tf.dispose([unit.unit, unit.norm, scaled]);
  }
}

/**
 * Step 7, the FIFO enqueue into one worker's block: global slots
 * [ptr, ptr + G) mod K receive the gathered unit keys and labels, each worker
 * writing the slots it holds. Returns the new pointer (ptr + G) mod K, the
 * same on every worker.
 */
export function enqueueBlock(block: { keys: Float32Array; labels: Int32Array }, slots: ClassRange, queueSize: number, ptr: number, keys: Float32Array, labels: Int32Array, dim: number): number {
  const g = labels.length;
  if (keys.length !== g * dim) throw new Error(`dcq enqueue: ${keys.length} key values for ${g}×${dim}`);
  if (g > queueSize) throw new Error(`dcq enqueue: a global batch of ${g} does not fit a queue of ${queueSize}`);
  for (let r = 0; r < g; r++) {
    const local = ((ptr + r) % queueSize) - slots.start;
    if (local < 0 || local >= slots.count) continue;
    block.keys.set(keys.subarray(r * dim, (r + 1) * dim), local * dim);
    block.labels[local] = labels[r]!;
  }
  return (ptr + g) % queueSize;
}

/**
 * The initial keys of a block: slot j (global) is n(N(0, I)) from its own
 * stream Rng(seed, 'dcq-queue', j), so the queue is the same whatever the
 * number of workers. Labels start at −1 (no identity).
 */
export function initialQueueBlock(slots: ClassRange, dim: number, seed: number): { keys: Float32Array; labels: Int32Array } {
  const keys = new Float32Array(slots.count * dim);
  const row = new Float64Array(dim);
  for (let j = 0; j < slots.count; j++) {
    const rng = Rng.derive(seed, 'dcq-queue', slots.start + j);
    let sq = 0;
    for (let c = 0; c < dim; c++) {
      row[c] = rng.normal();
      sq += row[c]! * row[c]!;
    }
    const inv = 1 / Math.max(Math.sqrt(sq), NORM_EPS);
    for (let c = 0; c < dim; c++) keys[j * dim + c] = row[c]! * inv;
  }
  return { keys, labels: new Int32Array(slots.count).fill(-1) };
}

/**
 * Step 3, the key encoder's EMA (parameters only; BN running statistics are
 * the key encoder's own): θ_k ← μ·θ_k + (1 − μ)·θ_q, in float32.
 */
export function momentumUpdate(keyParams: readonly tf.Variable[], queryParams: readonly tf.Variable[], momentum: number): void {
  if (keyParams.length !== queryParams.length) throw new Error(`dcq EMA: ${keyParams.length} key-encoder parameters, ${queryParams.length} query parameters`);
  if (!(momentum >= 0 && momentum <= 1)) throw new Error(`dcq EMA: momentum must be in [0, 1], got ${momentum}`);
  keyParams.forEach((k, i) => {
    const q = queryParams[i]!;
    if (k.shape.join() !== q.shape.join()) throw new Error(`dcq EMA: parameter ${i} has shape [${k.shape}] in the key encoder, [${q.shape}] in the query encoder`);
    // assign() shares the new tensor's buffer; the tensor itself must still go, or every step leaks one per parameter
    const next = tf.tidy(() => tf.add(tf.mul(k, momentum), tf.mul(q, 1 - momentum)));
    k.assign(next);
    next.dispose();
  });
}

/** Row-wise n(v) of a row-major rows×dim array, in place (float64 sums). */
export function normalizeRowsInPlace(a: Float32Array, dim: number): Float32Array {
  for (let r = 0; r < a.length / dim; r++) {
    let sq = 0;
    for (let c = 0; c < dim; c++) sq += a[r * dim + c]! * a[r * dim + c]!;
    const inv = 1 / Math.max(Math.sqrt(sq), NORM_EPS);
    for (let c = 0; c < dim; c++) a[r * dim + c] = a[r * dim + c]! * inv;
  }
  return a;
}
