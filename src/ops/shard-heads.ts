/**
 * The sharded softmax for loss heads that change more than one fixed margin
 * on the target: MagFace (a per-row margin, docs/methods.md#magface) and CurricularFace
 * (modulated hard negatives, docs/methods.md#curricularface). Same contract as softmax-shard.ts —
 * per-row max / Σexp / target logit to the coordinator, the global
 * log-sum-exp back, then this shard's partial ∂L/∂E and ∂L/∂W of the mean
 * loss over `rowsTotal` rows — with the head's math supplied per row:
 *
 *   z_ij = s·N_i(c_ij)   (non-target; N = identity unless the head modulates)
 *   z_iy = s·f_i(c_iy)   (target)
 *   ∂L/∂c_ij = s·(p_ij − [j = y_i])/rowsTotal · (N_i'(c_ij) or f_i'(c_iy))
 *
 * c = clamp(n(E)·n(W)ᵀ, −1, 1), with the clamp's backward (gradient only where
 * the raw cosine lies in [−1, 1]). The target cosine of a row is computed ONCE,
 * as a row dot product (ownedTargetCosines), and that value is used for the
 * target logit, its derivative and — for CurricularFace, after the
 * coordinator has collected it from the owning shard — for every shard's hard
 * mask of that row.
 *
 * Rows are processed in chunks of `chunk` rows (at most a few chunk×K tensors
 * at a time). Only the portable composite path exists (no fused kernels), and
 * exp is always taken after subtracting the row max: modulated logits reach
 * 2s, past float32's exp range for s = 64.
 */
import { tf } from './tf.js';
import { l2NormalizeGrad, l2NormalizeWithNorm } from './normalize.js';
import { chunkedUnitGrads, targetsIn, type ShardStats } from './softmax-shard.js';
export { reduceTargetCosines } from './softmax-reduce.js';

/** A head's per-row math over one shard's logits. */
export interface ShardHead {
  /** Logit scale s. */
  readonly s: number;
  /** f_i(c): the margined target cosine of row i. */
  target(row: number, c: number): number;
  /** ∂f_i/∂c. */
  targetGrad(row: number, c: number): number;
  /**
   * The non-target transform N_i(c) on the clamped cosines of rows [r0, r1)
   * and its derivative; absent = identity (derivative 1). Entries in the target
   * column are overwritten afterwards.
   */
  negatives?(c: tf.Tensor2D, r0: number, r1: number): { value: tf.Tensor2D; grad: tf.Tensor2D };
}

/** SoftmaxStats plus a per-row loss term the coordinator adds to the row's loss (MagFace: λ_g·g(a_i), sent by the owning shard). */
export type HeadShardStats = ShardStats & { rowLossExtra?: Float32Array };

/** n(E), n(W) and their norms, shared by the passes of one step. */
export interface PreparedHeadShard {
  unitE: tf.Tensor2D;
  normE: tf.Tensor2D;
  unitW: tf.Tensor2D;
  normW: tf.Tensor2D;
  rows: number;
  classes: number;
  dim: number;
  dispose(): void;
}

const DEFAULT_HEAD_CHUNK = 256;

export function prepareHeadShard(emb: tf.Tensor2D, weight: tf.Tensor2D): PreparedHeadShard {
  if (emb.rank !== 2 || weight.rank !== 2) throw new Error('head shard: emb and weight must be 2-D');
  const [rows, dim] = emb.shape;
  const [classes, dw] = weight.shape;
  if (dw !== dim) throw new Error(`head shard: weight has ${dw} columns, embeddings ${dim}`);
  const e = l2NormalizeWithNorm(emb);
  const w = l2NormalizeWithNorm(weight);
  return { unitE: e.unit, normE: e.norm, unitW: w.unit, normW: w.norm, rows, classes, dim, dispose: () => tf.dispose([e.unit, e.norm, w.unit, w.norm]) };
}

function checkLabels(labels: Int32Array, p: PreparedHeadShard): void {
  if (labels.length !== p.rows) throw new Error(`head shard: ${labels.length} labels for ${p.rows} rows`);
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i]!;
    if (!Number.isInteger(y) || y < -1 || y >= p.classes) throw new Error(`head shard: label ${y} at row ${i} outside [-1, ${p.classes})`);
  }
}

function checkChunk(chunk: number): void {
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new Error(`head shard: chunk must be a positive integer, got ${chunk}`);
}

/** clamp(n(e_i)·n(w_{y_i}), −1, 1) for every row whose label this shard owns, 0 elsewhere. */
export function ownedTargetCosines(p: PreparedHeadShard, labels: Int32Array): Float32Array {
  checkLabels(labels, p);
  const out = new Float32Array(p.rows);
  const { rows } = targetsIn(labels, 0, p.rows);
  if (rows.length === 0) return out;
  const dots = tf.tidy(() => {
    const e = tf.gather(p.unitE, tf.tensor1d(rows, 'int32'));
    const w = tf.gather(
      p.unitW,
      tf.tensor1d(
        rows.map((i) => labels[i]!),
        'int32',
      ),
    );
    return tf.clipByValue(tf.sum(tf.mul(e, w), 1), -1, 1).dataSync() as Float32Array;
  });
  rows.forEach((i, j) => (out[i] = dots[j]!));
  return out;
}

/** Clamped cosines of rows [r0, r1), the head's values v (target column = f_i), and the clamp's pass mask. */
function chunkLogits(p: PreparedHeadShard, labels: Int32Array, targetCos: Float32Array, head: ShardHead, r0: number, r1: number) {
  const raw = tf.matMul(tf.slice(p.unitE, [r0, 0], [r1 - r0, -1]), p.unitW, false, true) as tf.Tensor2D;
  const c = tf.clipByValue(raw, -1, 1) as tf.Tensor2D;
  const neg = head.negatives?.(c, r0, r1) ?? null;
  let v = neg ? neg.value : c;
  const { coords, rows } = targetsIn(labels, r0, r1);
  const idx = rows.length > 0 ? tf.tensor2d(coords, [rows.length, 2], 'int32') : null;
  const f = new Float32Array(rows.length);
  rows.forEach((i, j) => (f[j] = head.target(i, targetCos[i]!)));
  if (idx) v = tf.tensorScatterUpdate(v, idx, tf.tensor1d(f)) as tf.Tensor2D;
  return { raw, c, v, negGrad: neg?.grad ?? null, idx, rows, f };
}

/**
 * Forward on one shard: `labels` are positions in the K active rows (−1 = not
 * here), `targetCos` the rows' target cosines (at least where owned).
 */
export function headShardForward(p: PreparedHeadShard, labels: Int32Array, targetCos: Float32Array, head: ShardHead, chunk = DEFAULT_HEAD_CHUNK): ShardStats {
  checkLabels(labels, p);
  checkChunk(chunk);
  const n = p.rows;
  const rowMax = new Float32Array(n).fill(-Infinity);
  const sumExp = new Float32Array(n);
  const target = new Float32Array(n);
  const owned = new Uint8Array(n);
  for (let i = 0; i < n; i++) owned[i] = labels[i]! >= 0 ? 1 : 0;
  if (p.classes === 0 || n === 0) return { rowMax, sumExp, target, owned };
  const s = head.s;
  for (let r0 = 0; r0 < n; r0 += chunk) {
    const r1 = Math.min(n, r0 + chunk);
    let rows: number[] = [];
    let f = new Float32Array(0);
    const [mx, se] = tf.tidy(() => {
      const l = chunkLogits(p, labels, targetCos, head, r0, r1);
      rows = l.rows;
      f = l.f;
      const z = tf.mul(l.v, s);
      const m = tf.max(z, 1);
      const e = tf.exp(tf.sub(z, tf.expandDims(m, 1)));
      return [m.dataSync(), tf.sum(e, 1).dataSync()];
    });
    rowMax.set(mx, r0);
    sumExp.set(se, r0);
    rows.forEach((i, j) => (target[i] = s * f[j]!));
  }
  return { rowMax, sumExp, target, owned };
}

/**
 * Backward on one shard: the partial ∂L/∂E (N×D, raw embeddings; summed over
 * shards it is ∂L/∂E) and ∂L/∂W (K×D, raw active rows) of the mean loss over
 * `rowsTotal` rows, given the coordinator's per-row log-sum-exp.
 */
export function headShardBackward(
  p: PreparedHeadShard,
  labels: Int32Array,
  targetCos: Float32Array,
  logSumExp: Float32Array,
  head: ShardHead,
  rowsTotal: number,
  chunk = DEFAULT_HEAD_CHUNK,
): { gradEmb: tf.Tensor2D; gradWeight: tf.Tensor2D } {
  checkLabels(labels, p);
  checkChunk(chunk);
  const n = p.rows;
  if (logSumExp.length !== n) throw new Error(`head shard backward: ${logSumExp.length} log-sum-exp values for ${n} rows`);
  if (!Number.isFinite(rowsTotal) || rowsTotal <= 0) throw new Error(`head shard backward: rowsTotal must be > 0, got ${rowsTotal}`);
  if (p.classes === 0 || n === 0) return { gradEmb: tf.zeros([n, p.dim]), gradWeight: tf.zeros([p.classes, p.dim]) };
  const s = head.s;
  const shift = new Float32Array(n);
  for (let i = 0; i < n; i++) shift[i] = logSumExp[i]! + Math.log(rowsTotal);
  const { unitE, unitW } = chunkedUnitGrads(n, chunk, [p.classes, p.dim], (r0, r1) =>
    tf.tidy(() => {
      const { raw, v, negGrad, idx, rows, f } = chunkLogits(p, labels, targetCos, head, r0, r1);
      // p/N for every entry, then the head's derivative
      const pOverN = tf.exp(tf.sub(tf.mul(v, s), tf.tensor2d(shift.subarray(r0, r1), [r1 - r0, 1]))) as tf.Tensor2D;
      let g = negGrad ? (tf.mul(pOverN, negGrad) as tf.Tensor2D) : pOverN;
      if (idx) {
        const onTarget = new Float32Array(rows.length);
        rows.forEach((i, j) => {
          const py = Math.exp(s * f[j]! - logSumExp[i]!);
          onTarget[j] = ((py - 1) / rowsTotal) * head.targetGrad(i, targetCos[i]!);
        });
        g = tf.tensorScatterUpdate(g, idx, tf.tensor1d(onTarget)) as tf.Tensor2D;
      }
      // the clamp passes gradient only where −1 ≤ raw ≤ 1; then ∂z/∂c = s
      const pass = tf.cast(tf.lessEqual(tf.abs(raw), 1), 'float32');
      const dC = tf.mul(tf.mul(g, pass), s) as tf.Tensor2D;
      return [tf.matMul(dC, p.unitW) as tf.Tensor2D, tf.matMul(dC, tf.slice(p.unitE, [r0, 0], [r1 - r0, -1]), true, false) as tf.Tensor2D];
    }),
  );
  try {
    return tf.tidy(() => ({ gradEmb: l2NormalizeGrad(unitE, p.unitE, p.normE), gradWeight: l2NormalizeGrad(unitW, p.unitW, p.normW) }));
  } finally {
    tf.dispose([unitE, unitW]);
  }
}
