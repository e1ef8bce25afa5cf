/**
 * DCQ, the Dynamic Class Queue (SPEC §5): the math of one worker's share of
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
 *  - Queue layout: slot-major K_r×D rows (SPEC stores Q as D×K columns; same
 *    numbers, transposed).
 *  - No clamp on the cosines (the official code has none: q·k of unit vectors).
 *  - Gradient of the GLOBAL-batch mean: ∂L/∂z_ij = (p_ij − [j = 0])/G. The
 *    official code takes the mean over each GPU's local batch B and lets DDP
 *    average the gradients over the n GPUs: (1/n)·Σ_gpus (1/B)Σ_local = (1/G)Σ_all,
 *    the same gradient. shardface sums the backbone gradients over workers
 *    (grad-buckets), so the 1/G here is the only scale factor.
 *  - k and Q are stop-gradient: only q gets a gradient (SPEC §5.4). The
 *    backward returns this shard's PARTIAL ∂L/∂q_raw for all G rows, already
 *    taken through n(·); the reduce-scatter sums the shards.
 *  - Unshifted exponentials: |z| ≤ s, so for s ≤ 87 exp(z) cannot overflow
 *    float32 and the row max is applied afterwards in float64 (as
 *    softmax-shard.ts); larger s subtracts the row max first.
 */
import { tf } from './tf.js';
import { Rng } from '../common/random.js';
import { l2NormalizeGrad, l2NormalizeWithNorm, NORM_EPS } from './normalize.js';
import type { ClassRange } from './class-range.js';
import type { SoftmaxStats } from './softmax-shard.js';

/** The DCQ head: logit scale s and CosFace margin m on the positive (SPEC §5.3: 50, 0.3). */
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
/** Largest s for which exp(z), |z| ≤ s, stays finite and normal in float32. */
const UNSHIFTED_MAX_S = 87;

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

/** [row-in-chunk, slot] of every masked entry (the slot holds the row's own identity) in rows [r0, r1). */
function maskedCoords(labels: Int32Array, r0: number, r1: number, bySlot: Map<number, number[]>): Int32Array {
  const out: number[] = [];
  for (let i = r0; i < r1; i++) for (const j of bySlot.get(labels[i]!) ?? []) out.push(i - r0, j);
  return Int32Array.from(out);
}

/** Replaces the masked entries of `z` by `value` (disposes `z`). */
function maskEntries(z: tf.Tensor2D, coords: Int32Array, value: number): tf.Tensor2D {
  if (coords.length === 0) return z;
  const n = coords.length / 2;
  const out = tf.tensorScatterUpdate(z, tf.tensor2d(coords, [n, 2], 'int32'), tf.fill([n], value)) as tf.Tensor2D;
  z.dispose();
  return out;
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
    const u = unit.unit.dataSync() as Float32Array;
    const pos = positiveCosines(u, rows.keys, g, d);
    const coords = maskedCoords(rows.labels, 0, g, slotsByLabel(block.labels));
    const z = k > 0 ? tf.tidy(() => maskEntries(tf.matMul(unit.unit, block.keys, false, true) as tf.Tensor2D, coords, -Infinity).dataSync()) : new Float32Array(0);
    const out = new Float32Array(g * (k + 1));
    for (let i = 0; i < g; i++) {
      out[i * (k + 1)] = rows.owned[i] ? pos[i]! - head.m : NaN;
      out.set(z.subarray(i * k, (i + 1) * k), i * (k + 1) + 1);
    }
    return out;
  } finally {
    tf.dispose([unit.unit, unit.norm]);
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
  const unshifted = s <= UNSHIFTED_MAX_S;
  const unit = l2NormalizeWithNorm(rows.queries);
  const scaled = tf.mul(unit.unit, s) as tf.Tensor2D;
  try {
    const pos = positiveCosines(unit.unit.dataSync() as Float32Array, rows.keys, g, d);
    const bySlot = slotsByLabel(block.labels);
    for (let r0 = 0; r0 < g; r0 += chunk) {
      const r1 = Math.min(g, r0 + chunk);
      let mx: Float32Array | null = null;
      let se: Float32Array | null = null;
      if (k > 0) {
        const coords = maskedCoords(rows.labels, r0, r1, bySlot);
        [mx, se] = tf.tidy(() => {
          const z = maskEntries(tf.matMul(tf.slice(scaled, [r0, 0], [r1 - r0, -1]), block.keys, false, true) as tf.Tensor2D, coords, -Infinity);
          const zMax = tf.max(z, 1);
          const e = unshifted ? tf.exp(z) : tf.exp(tf.sub(z, tf.expandDims(zMax, 1)));
          return [zMax.dataSync() as Float32Array, tf.sum(e, 1).dataSync() as Float32Array];
        });
      }
      for (let i = r0; i < r1; i++) {
        // this shard's terms: Σ_j exp(z_ij − M_i) over unmasked slots (+ the positive where owned), in float64
        const blockMax = se && se[i - r0]! > 0 ? mx![i - r0]! : -Infinity;
        const z0 = owned[i] ? s * (pos[i]! - m) : -Infinity;
        const M = Math.max(blockMax, z0);
        if (M === -Infinity) continue; // nothing here for this row: sumExp 0, skipped by the reduction
        let sum = 0;
        if (blockMax > -Infinity) sum += se![i - r0]! * Math.exp((unshifted ? 0 : blockMax) - M);
        if (owned[i]) {
          sum += Math.exp(z0 - M);
          target[i] = z0;
        }
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
 *   ∂L/∂q̂_i = (s/G)·[ Σ_{j unmasked} p_ij·Q_j + owned_i·(p_i0 − 1)·k_i ]
 * then through n(·) (SPEC §5.4, §0).
 */
export function dcqShardBackward(rows: DcqRows, block: QueueBlock, head: DcqHead, logSumExp: Float32Array, rowsTotal: number, opts: DcqOptions = {}): tf.Tensor2D {
  const { g, d, k, chunk } = check(rows, block, head, opts);
  if (logSumExp.length !== g) throw new Error(`dcq backward: ${logSumExp.length} log-sum-exp values for ${g} rows`);
  if (!Number.isFinite(rowsTotal) || rowsTotal <= 0) throw new Error(`dcq backward: rowsTotal must be > 0, got ${rowsTotal}`);
  const { s, m } = head;
  const unshifted = s <= UNSHIFTED_MAX_S;
  const unit = l2NormalizeWithNorm(rows.queries);
  const scaled = tf.mul(unit.unit, s) as tf.Tensor2D;
  const gradUnit = new Float32Array(g * d);
  try {
    const pos = positiveCosines(unit.unit.dataSync() as Float32Array, rows.keys, g, d);
    const bySlot = slotsByLabel(block.labels);
    for (let r0 = 0; r0 < g; r0 += chunk) {
      const r1 = Math.min(g, r0 + chunk);
      if (k > 0) {
        const coords = maskedCoords(rows.labels, r0, r1, bySlot);
        // A_i = Σ_j e_ij·Q_j with e_ij = exp(z_ij) (unshifted) or exp(z_ij − lse_i), masked entries 0
        const a = tf.tidy(() => {
          const z = tf.matMul(tf.slice(scaled, [r0, 0], [r1 - r0, -1]), block.keys, false, true) as tf.Tensor2D;
          const shifted = unshifted ? z : tf.sub(z, tf.tensor2d(logSumExp.subarray(r0, r1), [r1 - r0, 1]));
          const e = maskEntries(tf.exp(shifted) as tf.Tensor2D, coords, 0);
          return tf.matMul(e, block.keys).dataSync() as Float32Array;
        });
        for (let i = r0; i < r1; i++) {
          // p_ij/G·s = e_ij·scale: the row's exp(−lse) (unshifted only), 1/G and s in float64
          const scale = (s / rowsTotal) * (unshifted ? Math.exp(-logSumExp[i]!) : 1);
          for (let c = 0; c < d; c++) gradUnit[i * d + c] = a[(i - r0) * d + c]! * scale;
        }
      }
    }
    for (let i = 0; i < g; i++) {
      if (!rows.owned[i]) continue;
      const p0 = Math.exp(s * (pos[i]! - m) - logSumExp[i]!);
      const coef = (s / rowsTotal) * (p0 - 1);
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
export function enqueueBlock(
  block: { keys: Float32Array; labels: Int32Array },
  slots: ClassRange,
  queueSize: number,
  ptr: number,
  keys: Float32Array,
  labels: Int32Array,
  dim: number,
): number {
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
    k.assign(tf.tidy(() => tf.add(tf.mul(k, momentum), tf.mul(q, 1 - momentum))));
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
