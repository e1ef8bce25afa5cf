/**
 * The sharded margin softmax: what one worker computes over its slice of the
 * classifier, and what the coordinator computes from every worker's summary
 * (docs/methods.md#shard-forward, docs/methods.md#shard-backward, docs/architecture.md#the-training-step, steps 3–6).
 *
 *   worker:       shardForward  → per row: local max, local Σexp, target logit
 *   coordinator:  reduceSoftmaxStats → per row: global log-sum-exp; the loss
 *   worker:       shardBackward → ∇W for its active rows, partial ∇E
 *
 * Conventions, named where they happen:
 *  - Logits: z = s·n(E)·n(W)ᵀ, target entry s·f(clamp(c, −1, 1)) (margin.ts).
 *    s is folded into n(E) before the matmul (bit-identical for s = 64). The
 *    clamp is applied to the target cosines only: for the other entries it
 *    would only change rounding overshoots |c| − 1 ~ 1e-7, so the dense clamp
 *    pass (and its backward mask) is skipped.
 *  - Loss: mean over the `rowsTotal` gathered rows of (lse_i − z_{i,y_i}), with
 *    the exact log-sum-exp. Unlike arcface_torch's −log(max(q, 1e-30)) it does
 *    not saturate at 69.08 per row; the backward is (p − onehot)/N either way.
 *  - Backward: ∂L/∂z = (p − onehot)/rowsTotal, p recomputed from the forward's
 *    log-sum-exp; target column times the margin derivative (straight-through:
 *    1); ∂L/∂c = s·∂L/∂z.
 *  - gradEmb is this shard's PARTIAL ∂L/∂E over its own columns, already taken
 *    through n(E). Summing gradEmb over all shards (the reduce-scatter) gives
 *    exactly ∂L/∂E of the global mean loss. Nothing here multiplies by the
 *    world size (arcface_torch's ×n only cancels DDP's averaging, which
 *    shardface does not do to these gradients).
 *
 * Memory and speed: rows are processed in chunks of `chunk` rows, so at most a
 * few chunk×K logit-sized tensors exist at a time. n(W) (K×D) is computed once
 * per call, or once per step if the caller passes `prepared` (prepareWeight)
 * to both shardForward and shardBackward. Dense chunk×K work is kept to the
 * minimum, and free of broadcasting (slow on stock CPU kernels):
 *   forward:  matmul, scatter (target), max, exp, sum
 *   backward: matmul, exp, scatter (target), 2 matmuls
 * The backward gets log(p/N) = z − lse − log N straight out of the matmul by
 * appending a column −(lse + log N) to s·n(E) and a column of ones to n(W).
 * The forward exponentiates z without a shift whenever the logits cannot
 * overflow or underflow float32 (|z| ≤ 87, e.g. s = 64) and rescales by
 * exp(−rowMax) per row afterwards; otherwise it subtracts the row max first.
 *
 * Fused native path: when the current backend has the kernels SfShardForward /
 * SfShardBackward / SfRowNorms (cpu-native, src/ops/native/classifier.cc), the
 * same functions run as one kernel call each, with the same inputs, outputs,
 * chunk bound and margin variants; the composite above stays the portable
 * (GPU) path and the reference the native kernels are tested against
 * (test/native-classifier.test.ts). The fused kernels never materialise n(W):
 * they multiply by the raw rows and scale logit column j by 1/max(‖W_j‖, eps),
 * so `prepareWeight` there computes only the norms.
 */
import { tf } from './tf.js';
import type { SoftmaxStats } from './softmax-reduce.js';
export { reduceSoftmaxStats, type ReducedSoftmax, type ShardStats, type SoftmaxStats } from './softmax-reduce.js';
import { l2NormalizeGrad, l2NormalizeGradFromRaw, l2NormalizeWithNorm, NORM_EPS } from './normalize.js';
import { MARGIN_VARIANTS, targetCos, targetCosGrad, validateMargin, type MarginSpec, type MarginVariant } from './margin.js';

const DEFAULT_CHUNK = 256;

/** Fused kernels (src/ops/native/classifier.cc), used when the current backend registers them. */
export const SHARD_FORWARD_KERNEL = 'SfShardForward';
export const SHARD_BACKWARD_KERNEL = 'SfShardBackward';
/** ‖x_j‖₂ of each row of a 2-D tensor, as [rows, 1]. */
export const ROW_NORMS_KERNEL = 'SfRowNorms';

/** Whether the current backend runs the fused classifier kernels. */
function fusedClassifierAvailable(): boolean {
  const backend = tf.getBackend();
  return [SHARD_FORWARD_KERNEL, SHARD_BACKWARD_KERNEL, ROW_NORMS_KERNEL].every((k) => tf.getKernel(k, backend) !== undefined);
}

/** n(W) of the active rows with a column of ones, and ‖W_j‖, shared by forward and backward. */
export interface PreparedWeight {
  /** [n(W), 1], K×(D+1); null when prepared for the fused kernels, which need only the norms. */
  unitAug: tf.Tensor2D | null;
  /** ‖W_j‖, K×1. */
  norm: tf.Tensor2D;
  dispose(): void;
}

export function prepareWeight(weight: tf.Tensor2D): PreparedWeight {
  if (fusedClassifierAvailable()) {
    const norm = tf.engine().runKernel(ROW_NORMS_KERNEL, { x: weight }) as tf.Tensor2D;
    return { unitAug: null, norm, dispose: () => norm.dispose() };
  }
  return prepareWeightComposite(weight);
}

function prepareWeightComposite(weight: tf.Tensor2D): PreparedWeight & { unitAug: tf.Tensor2D } {
  const [unitAug, norm] = tf.tidy(() => {
    const norm = tf.sqrt(tf.sum(tf.square(weight), 1, true)) as tf.Tensor2D;
    const m = tf.maximum(norm, NORM_EPS);
    // [W, m] / m = [n(W), 1] in one division
    return [tf.div(tf.concat([weight, m], 1), m) as tf.Tensor2D, norm];
  });
  return { unitAug, norm, dispose: () => tf.dispose([unitAug, norm]) };
}

export interface ShardOptions {
  /** Rows per chunk (default 256): bounds the logits held at once to chunk×K. */
  chunk?: number;
  /** prepareWeight(weight), computed once for the step; must belong to `weight`. */
  prepared?: PreparedWeight;
  /**
   * Margin variant, which decides the forward for the legacy heads only
   * (straight-through and exact share their forward). Default straight-through.
   */
  variant?: MarginVariant;
}

export interface ShardGrads {
  /** Partial ∂L/∂E (N×D) w.r.t. the raw embeddings; sum over shards = ∂L/∂E. */
  gradEmb: tf.Tensor2D;
  /** ∂L/∂W (K×D) w.r.t. the raw active weight rows. */
  gradWeight: tf.Tensor2D;
}

interface Checked {
  n: number;
  k: number;
  d: number;
  chunk: number;
}

function check(emb: tf.Tensor2D, weight: tf.Tensor2D, labels: Int32Array, margin: MarginSpec, variant: MarginVariant, opts: ShardOptions): Checked {
  validateMargin(margin, variant);
  if (emb.rank !== 2 || weight.rank !== 2) throw new Error('sharded softmax: emb and weight must be 2-D');
  const [n, d] = emb.shape;
  const [k, dw] = weight.shape;
  if (dw !== d) throw new Error(`sharded softmax: weight has ${dw} columns, embeddings ${d}`);
  if (labels.length !== n) throw new Error(`sharded softmax: ${labels.length} labels for ${n} rows`);
  for (let i = 0; i < n; i++) {
    const y = labels[i]!;
    if (y < -1 || y >= k) throw new Error(`sharded softmax: label ${y} at row ${i} outside [-1, ${k})`);
  }
  const chunk = opts.chunk ?? DEFAULT_CHUNK;
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new Error(`sharded softmax: chunk must be a positive integer, got ${chunk}`);
  const p = opts.prepared;
  if (p && (p.norm.shape[0] !== k || p.norm.shape[1] !== 1 || (p.unitAug && (p.unitAug.shape[0] !== k || p.unitAug.shape[1] !== d + 1))))
    throw new Error(`sharded softmax: prepared weight is for [${p.norm.shape[0]},${p.unitAug?.shape[1] ?? '?'}] rows, expected [${k},${d + 1}]`);
  return { n, k, d, chunk };
}

/** The composite's prepared weight: the caller's if it has n(W), else a fresh one (`owned`: dispose it). */
function compositePrepared(weight: tf.Tensor2D, given: PreparedWeight | undefined): { prepared: PreparedWeight & { unitAug: tf.Tensor2D }; owned: boolean } {
  if (given?.unitAug) return { prepared: given as PreparedWeight & { unitAug: tf.Tensor2D }, owned: false };
  return { prepared: prepareWeightComposite(weight), owned: true };
}

/** The fused kernels' margin attribute: [s, m1, m2, m3, variant code]. */
function marginArgs(margin: MarginSpec, variant: MarginVariant): number[] {
  return [margin.s, margin.m1, margin.m2, margin.m3, MARGIN_VARIANTS.indexOf(variant)];
}

function fusedInputs(emb: tf.Tensor2D, weight: tf.Tensor2D, labels: tf.Tensor1D, prepared: PreparedWeight | undefined): tf.NamedTensorMap {
  return prepared ? { emb, weight, labels, weightNorm: prepared.norm } : { emb, weight, labels };
}

/**
 * The row-chunked part of a shard's backward: `chunkGrads(r0, r1)` returns
 * ∂L/∂n(E) for rows [r0, r1) and that chunk's share of ∂L/∂n(W) (shape
 * `weightShape`), both owned by the caller; the result holds every row's
 * ∂L/∂n(E) and the summed ∂L/∂n(W). Nothing is left behind on a throw.
 */
export function chunkedUnitGrads(
  n: number,
  chunk: number,
  weightShape: [number, number],
  chunkGrads: (r0: number, r1: number) => [tf.Tensor2D, tf.Tensor2D],
): { unitE: tf.Tensor2D; unitW: tf.Tensor2D } {
  let unitW: tf.Tensor2D = tf.zeros(weightShape);
  const parts: tf.Tensor2D[] = [];
  try {
    for (let r0 = 0; r0 < n; r0 += chunk) {
      const [dE, dW] = chunkGrads(r0, Math.min(n, r0 + chunk));
      parts.push(dE);
      const sum = tf.add(unitW, dW) as tf.Tensor2D;
      tf.dispose([unitW, dW]);
      unitW = sum;
    }
    if (parts.length === 1) return { unitE: parts.pop()!, unitW };
    return { unitE: tf.concat(parts, 0) as tf.Tensor2D, unitW };
  } catch (e) {
    unitW.dispose();
    throw e;
  } finally {
    tf.dispose(parts);
  }
}

/** [row-in-chunk, label] pairs of the owned rows in [r0, r1). */
export function targetsIn(labels: Int32Array, r0: number, r1: number): { coords: Int32Array; rows: number[] } {
  const rows: number[] = [];
  for (let i = r0; i < r1; i++) if (labels[i]! >= 0) rows.push(i);
  const coords = new Int32Array(rows.length * 2);
  rows.forEach((i, j) => {
    coords[2 * j] = i - r0;
    coords[2 * j + 1] = labels[i]!;
  });
  return { coords, rows };
}

/** Reads the entries of `m` at `idx`, plus `offset[j]`, as float64. */
function readEntries(m: tf.Tensor2D, idx: tf.Tensor2D, offset?: ArrayLike<number>): Float64Array {
  const t = tf.gatherND(m, idx);
  const v = t.dataSync();
  t.dispose();
  const out = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i]! + (offset ? offset[i]! : 0);
  return out;
}

function clampCos(z: number, s: number): number {
  return Math.min(1, Math.max(-1, z / s));
}

/**
 * Whether exp(z) can be taken without a per-row shift: every row's max must
 * stay in [−87, 88] so exp neither overflows nor loses the row's largest term.
 * Non-target logits lie in [−s, s] (up to rounding); targets in s·[fmin, fmax].
 * A row always has a non-target entry unless the shard has a single class.
 */
function unshiftedExpIsSafe(margin: MarginSpec, variant: MarginVariant, k: number): boolean {
  const { s, m2, m3 } = margin;
  const legacyDrop = variant === 'legacy' ? m2 * Math.sin(m2) : 0;
  const fmax = 1 + Math.max(0, -m3);
  const fmin = -1 - Math.max(0, m3) - legacyDrop;
  const upper = s * fmax * (1 + 1e-6);
  const lowestRowMax = k >= 2 ? -s * (1 + 1e-6) : s * fmin * (1 + 1e-6);
  return upper <= 88 && lowestRowMax >= -87;
}

/**
 * Forward on one shard. `emb` are the N gathered raw embeddings, `weight` the
 * K raw active rows, `labels` the row labels as positions in these K rows
 * (−1 = not owned here).
 */
export function shardForward(emb: tf.Tensor2D, weight: tf.Tensor2D, labels: Int32Array, margin: MarginSpec, opts: ShardOptions = {}): SoftmaxStats {
  const variant = opts.variant ?? 'straight-through';
  const { n, k, chunk } = check(emb, weight, labels, margin, variant, opts);
  const rowMax = new Float32Array(n).fill(-Infinity);
  const sumExp = new Float32Array(n);
  const target = new Float32Array(n);
  const owned = new Uint8Array(n);
  for (let i = 0; i < n; i++) owned[i] = labels[i]! >= 0 ? 1 : 0;
  if (k === 0 || n === 0) return { rowMax, sumExp, target, owned };

  if (fusedClassifierAvailable()) {
    const y = tf.tensor1d(labels, 'int32');
    const outs = tf.engine().runKernel(SHARD_FORWARD_KERNEL, fusedInputs(emb, weight, y, opts.prepared), { margin: marginArgs(margin, variant), chunk }) as tf.Tensor[];
    rowMax.set(outs[0]!.dataSync());
    sumExp.set(outs[1]!.dataSync());
    target.set(outs[2]!.dataSync());
    tf.dispose([y, ...outs]);
    return { rowMax, sumExp, target, owned };
  }

  const s = margin.s;
  const unshifted = unshiftedExpIsSafe(margin, variant, k);
  const { prepared, owned: ownPrepared } = compositePrepared(weight, opts.prepared);
  // [s·n(E), 0] against [n(W), 1] gives z
  const embAug = tf.tidy(
    () =>
      tf.pad(tf.mul(l2NormalizeWithNorm(emb).unit, s), [
        [0, 0],
        [0, 1],
      ]) as tf.Tensor2D,
  );
  try {
    for (let r0 = 0; r0 < n; r0 += chunk) {
      const r1 = Math.min(n, r0 + chunk);
      const { coords, rows } = targetsIn(labels, r0, r1);
      const [mx, se] = tf.tidy(() => {
        let z = tf.matMul(tf.slice(embAug, [r0, 0], [r1 - r0, -1]), prepared.unitAug, false, true) as tf.Tensor2D;
        if (rows.length > 0) {
          const idx = tf.tensor2d(coords, [rows.length, 2], 'int32');
          const zRaw = readEntries(z, idx);
          const zt = new Float32Array(rows.length);
          rows.forEach((i, j) => {
            zt[j] = s * targetCos(clampCos(zRaw[j]!, s), margin, variant);
            target[i] = zt[j]!;
          });
          const replaced = tf.tensorScatterUpdate(z, idx, tf.tensor1d(zt)) as tf.Tensor2D;
          z.dispose();
          z = replaced;
        }
        const m = tf.max(z, 1);
        const e = unshifted ? tf.exp(z) : tf.exp(tf.sub(z, tf.expandDims(m, 1)));
        return [m.dataSync(), tf.sum(e, 1).dataSync()];
      });
      rowMax.set(mx, r0);
      // unshifted: Σ exp(z) → Σ exp(z − rowMax), in float64
      for (let i = 0; i < r1 - r0; i++) sumExp[r0 + i] = unshifted ? se[i]! * Math.exp(-mx[i]!) : se[i]!;
    }
  } finally {
    embAug.dispose();
    if (ownPrepared) prepared.dispose();
  }
  return { rowMax, sumExp, target, owned };
}

/**
 * Backward on one shard. Same inputs as shardForward plus the coordinator's
 * per-row `logSumExp`, the margin gradient mode and `rowsTotal`, the global
 * row count the loss is averaged over. Returns gradients of that mean loss.
 */
export function shardBackward(
  emb: tf.Tensor2D,
  weight: tf.Tensor2D,
  labels: Int32Array,
  logSumExp: Float32Array,
  margin: MarginSpec,
  marginGrad: MarginVariant,
  rowsTotal: number,
  opts: Omit<ShardOptions, 'variant'> = {},
): ShardGrads {
  const { n, k, d, chunk } = check(emb, weight, labels, margin, marginGrad, opts);
  if (logSumExp.length !== n) throw new Error(`shardBackward: ${logSumExp.length} log-sum-exp values for ${n} rows`);
  if (!Number.isFinite(rowsTotal) || rowsTotal <= 0) throw new Error(`shardBackward: rowsTotal must be > 0, got ${rowsTotal}`);
  if (k === 0 || n === 0) return { gradEmb: tf.zeros([n, d]), gradWeight: tf.zeros([k, d]) };

  if (fusedClassifierAvailable()) {
    const y = tf.tensor1d(labels, 'int32');
    const lse = tf.tensor1d(logSumExp, 'float32');
    try {
      const [gradEmb, gradWeight] = tf.engine().runKernel(
        SHARD_BACKWARD_KERNEL,
        { ...fusedInputs(emb, weight, y, opts.prepared), logSumExp: lse },
        {
          margin: marginArgs(margin, marginGrad),
          chunk,
          rowsTotal,
        },
      ) as tf.Tensor2D[];
      return { gradEmb: gradEmb!, gradWeight: gradWeight! };
    } finally {
      tf.dispose([y, lse]);
    }
  }

  const s = margin.s;
  const { prepared, owned: ownPrepared } = compositePrepared(weight, opts.prepared);
  // shift_i = lse_i + log N, so that exp(z − shift) = p/N, the whole ∂L/∂z off the target
  const shift = new Float32Array(n);
  for (let i = 0; i < n; i++) shift[i] = logSumExp[i]! + Math.log(rowsTotal);
  const embNorm = l2NormalizeWithNorm(emb);
  const embScaled = tf.mul(embNorm.unit, s) as tf.Tensor2D;
  // [s·n(E), −shift] against [n(W), 1] gives z − shift
  const embAug = tf.tidy(() => tf.concat([embScaled, tf.neg(tf.tensor2d(shift, [n, 1]))], 1) as tf.Tensor2D);
  let grads: { unitE: tf.Tensor2D; unitW: tf.Tensor2D } | null = null;
  try {
    grads = chunkedUnitGrads(n, chunk, [k, d], (r0, r1) => {
      const { coords, rows } = targetsIn(labels, r0, r1);
      return tf.tidy(() => {
        const u = tf.matMul(tf.slice(embAug, [r0, 0], [r1 - r0, -1]), prepared.unitAug, false, true) as tf.Tensor2D;
        let gz = tf.exp(u) as tf.Tensor2D; // p/N
        if (rows.length > 0) {
          const idx = tf.tensor2d(coords, [rows.length, 2], 'int32');
          const zRaw = readEntries(
            u,
            idx,
            rows.map((i) => shift[i]!),
          );
          const onTarget = new Float32Array(rows.length);
          rows.forEach((i, j) => {
            const c = clampCos(zRaw[j]!, s);
            const p = Math.exp(s * targetCos(c, margin, marginGrad) - logSumExp[i]!);
            onTarget[j] = ((p - 1) / rowsTotal) * targetCosGrad(c, margin, marginGrad);
          });
          const replaced = tf.tensorScatterUpdate(gz, idx, tf.tensor1d(onTarget)) as tf.Tensor2D;
          gz.dispose();
          gz = replaced;
        }
        u.dispose();
        // ∂L/∂n(E) = s·Gz·n(W)  (the extra column of unitAug is dropped);  ∂L/∂n(W) = Gzᵀ·(s·n(E))
        const dE = tf.mul(tf.slice(tf.matMul(gz, prepared.unitAug), [0, 0], [r1 - r0, d]), s) as tf.Tensor2D;
        return [dE, tf.matMul(gz, tf.slice(embScaled, [r0, 0], [r1 - r0, -1]), true, false) as tf.Tensor2D];
      });
    });
    const { unitE, unitW } = grads;
    return tf.tidy(() => ({
      gradEmb: l2NormalizeGrad(unitE, embNorm.unit, embNorm.norm),
      gradWeight: l2NormalizeGradFromRaw(unitW, weight, prepared.norm),
    }));
  } finally {
    tf.dispose([embNorm.unit, embNorm.norm, embScaled, embAug]);
    if (grads) tf.dispose([grads.unitE, grads.unitW]);
    if (ownPrepared) prepared.dispose();
  }
}
