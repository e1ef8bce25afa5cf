/**
 * The coordinator's half of the sharded softmax: per-row statistics from every
 * shard in, global log-sum-exp and loss out. Plain float64 arithmetic, no
 * TensorFlow.js, so the coordinator process never loads a compute backend.
 */

/** One shard's per-row summary, sent to the coordinator. All length N. */
export interface SoftmaxStats {
  /** max_j z_ij over this shard's columns; −Infinity for an empty shard. */
  rowMax: Float32Array;
  /** Σ_j exp(z_ij − rowMax_i) over this shard's columns; 0 for an empty shard. */
  sumExp: Float32Array;
  /** The margined target logit s·f(c) where the shard owns the row's label, else 0. */
  target: Float32Array;
  /** 1 where the shard owns the row's label. */
  owned: Uint8Array;
}

/** The name the worker and coordinator use for one shard's SoftmaxStats. */
export type ShardStats = SoftmaxStats;

export interface ReducedSoftmax {
  /** Global log Σ_j exp(z_ij) per row. */
  logSumExp: Float32Array;
  /** Mean over rows of rowLoss (each capped at MAX_ROW_LOSS). */
  loss: number;
  /** logSumExp − target logit per row, capped at MAX_ROW_LOSS. */
  rowLoss: Float32Array;
}

/**
 * The floor arcface_torch's distributed cross-entropy puts under each row's
 * target probability before the log: loss_i = −log(max(p_i, 1e-30)). The
 * reported loss follows it; the gradient does not (it stays p − onehot).
 */
const TARGET_PROBABILITY_FLOOR = 1e-30;
/** −ln(1e-30) ≈ 69.0776: the most one row can add to the reported loss. */
export const MAX_ROW_LOSS = -Math.log(TARGET_PROBABILITY_FLOOR);

/** One row's reported loss from its log-sum-exp and target logit: −log(max(exp(target − lse), 1e-30)). */
function cappedRowLoss(logSumExp: number, target: number): number {
  return Math.min(logSumExp - target, MAX_ROW_LOSS);
}

/**
 * The coordinator's reduction: global max M_i, S_i = Σ_r sumExp_r·exp(rowMax_r − M_i),
 * lse_i = M_i + log S_i, rowLoss_i = min(lse_i − target_i, −ln 1e-30) (arcface_torch's
 * clamp of the target probability), loss = mean_i rowLoss_i.
 * Every row must be owned by exactly one part. Computed in float64.
 */
export function reduceSoftmaxStats(parts: readonly SoftmaxStats[]): ReducedSoftmax {
  if (parts.length === 0) throw new Error('reduceSoftmaxStats: no shard statistics');
  const n = parts[0]!.rowMax.length;
  parts.forEach((p, r) => {
    for (const key of ['rowMax', 'sumExp', 'target', 'owned'] as const) if (p[key].length !== n) throw new Error(`reduceSoftmaxStats: shard ${r} ${key} has ${p[key].length} rows, expected ${n}`);
  });
  const logSumExp = new Float32Array(n);
  const rowLoss = new Float32Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    let owner = -1;
    for (let r = 0; r < parts.length; r++) {
      const p = parts[r]!;
      if (p.sumExp[i]! > 0 && p.rowMax[i]! > m) m = p.rowMax[i]!;
      if (p.owned[i]) {
        if (owner >= 0) throw new Error(`reduceSoftmaxStats: row ${i} is owned by shards ${owner} and ${r}; labels must have exactly one owner`);
        owner = r;
      }
    }
    if (owner < 0) throw new Error(`reduceSoftmaxStats: row ${i} is owned by no shard; its label is outside every class range`);
    if (!Number.isFinite(m)) throw new Error(`reduceSoftmaxStats: row ${i} has no finite logits`);
    let sum = 0;
    for (const p of parts) if (p.sumExp[i]! > 0) sum += p.sumExp[i]! * Math.exp(p.rowMax[i]! - m);
    const lse = m + Math.log(sum);
    const loss = cappedRowLoss(lse, parts[owner]!.target[i]!);
    logSumExp[i] = lse;
    rowLoss[i] = loss;
    total += loss;
  }
  return { logSumExp, loss: total / n, rowLoss };
}

/**
 * The coordinator's side of a target-cosine exchange: every row's target
 * cosine, taken from the one shard that owns its label, and their mean
 * (float64). Throws naming the row if a row has no owner or two.
 */
export function reduceTargetCosines(parts: readonly { targetCos: Float32Array; owned: Uint8Array }[]): { targetCos: Float32Array; mean: number } {
  if (parts.length === 0) throw new Error('reduceTargetCosines: no shard statistics');
  const n = parts[0]!.targetCos.length;
  parts.forEach((p, r) => {
    if (p.targetCos.length !== n || p.owned.length !== n) throw new Error(`reduceTargetCosines: shard ${r} sent ${p.targetCos.length}/${p.owned.length} rows, expected ${n}`);
  });
  const out = new Float32Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    let owner = -1;
    for (let r = 0; r < parts.length; r++) {
      if (!parts[r]!.owned[i]) continue;
      if (owner >= 0) throw new Error(`reduceTargetCosines: row ${i} is owned by shards ${owner} and ${r}; labels must have exactly one owner`);
      owner = r;
    }
    if (owner < 0) throw new Error(`reduceTargetCosines: row ${i} is owned by no shard; its label is outside every class range`);
    out[i] = parts[owner]!.targetCos[i]!;
    sum += out[i]!;
  }
  return { targetCos: out, mean: n > 0 ? sum / n : 0 };
}

/** The stage indicator after one batch: emaWeight·mean + (1 − emaWeight)·tPrev. */
export function curricularNextT(tPrev: number, meanTargetCos: number, emaWeight: number): number {
  return emaWeight * meanTargetCos + (1 - emaWeight) * tPrev;
}
