/**
 * This worker's slice of the classifier and the distributed step through it
 * (docs/architecture.md#the-training-step steps 2–6). Communication hides behind three named
 * operations — all-gather, softmax exchange, reduce-scatter — so the step reads
 * like single-process code.
 *
 * Gradient convention: gradients are those of the loss averaged over the
 * global batch N = n·B. The reduce-scatter SUMS the shards' partial embedding
 * gradients, so each worker gets exactly ∂L/∂e for its own rows; backbone
 * gradients must therefore be SUMMED across workers (not averaged) to be the
 * gradient of that same mean loss. (arcface_torch reaches the same place by
 * multiplying by the world size and letting DDP average.)
 */
import { tf } from '../ops/tf.js';
import { Rng } from '../common/random.js';
import type { ClassRange } from '../ops/class-range.js';
import { localiseLabels, numSampled } from '../ops/class-range.js';
import { sampleClasses } from '../ops/sampling.js';
import type { MarginGrad, MarginSpec } from '../ops/margin.js';
import { prepareWeight, shardBackward, shardForward, type ShardStats } from '../ops/softmax-shard.js';
import { initialShardWeights } from '../ops/classifier-init.js';
import { createShardState, gatherRows, updateRows, type RowHyperParams, type ShardState } from '../ops/row-optimizer.js';
import type { HeadShardStats } from '../ops/shard-heads.js';
import { lossHeadStep, type LossHead } from './loss-head-step.js';

export interface ClassifierSettings {
  dim: number;
  margin: MarginSpec;
  marginGrad: MarginGrad;
  sampleRate: number;
  chunkRows: number;
  optimizer: 'sgd' | 'adamw';
  seed: number;
  /** MagFace / CurricularFace (loss-head-step.ts) instead of the margin family; default the margin family (`margin`, `marginGrad`). */
  loss?: LossHead;
  /** The margin head of each step (a margin warm-up, ops/margin-schedule.ts); default `margin` at every step. */
  marginAt?: (step: number) => MarginSpec;
}

export interface ShardComm {
  allGatherFloat(a: Float32Array): Promise<Float32Array>;
  allGatherInt(a: Int32Array): Promise<Int32Array>;
  exchangeSoftmax(step: number, batch: number, stats: ShardStats | HeadShardStats): Promise<{ logSumExp: Float32Array; loss: number }>;
  reduceScatter(a: Float32Array): Promise<Float32Array>;
  /**
   * CurricularFace's preliminary exchange (loss-head-step.ts): the target cosines of the rows this
   * shard owns → every row's target cosine and the coordinator's job-wide values (`extras`, e.g. t).
   */
  exchangeTargets?(step: number, batch: number, stats: { targetCos: Float32Array; owned: Uint8Array }): Promise<{ targetCos: Float32Array; extras: Record<string, number> }>;
}

export interface ShardStepResult {
  loss: number;
  /** ∂L/∂e for this worker's own B rows (B×D), L = mean over the global batch. */
  gradEmbeddings: Float32Array;
  /** Local rows that took part in this step (ascending). */
  active: Int32Array;
  /** ∂L/∂W for the active rows (|active|×D). Caller disposes (or passes to `update`). */
  gradWeight: tf.Tensor2D;
  /**
   * Per gathered row (all N rows, in all-gather order): the target probability
   * p_y = exp(targetLogit − logSumExp), margin included, where this shard owns
   * the row's label, else 0. A reduce-scatter (sum) of it gives every worker
   * p_y of its own rows (occlusion training, docs/methods.md#adversarial-training).
   */
  ownedTargetProbability: Float32Array;
  /** Job-wide loss state after this step (CurricularFace: { curricularT }); absent for the margin family. */
  lossState?: Record<string, number>;
}

export class ShardedClassifier {
  readonly state: ShardState;
  readonly numSample: number;

  /**
   * `init`: this shard's initial rows (count×dim), taken over without a copy:
   * the caller must not use the array afterwards (the row update writes into
   * it in place). Default: initialShardWeights(range, dim, seed), which is the
   * same matrix whatever the number of workers.
   */
  constructor(
    readonly range: ClassRange,
    readonly rank: number,
    private readonly cfg: ClassifierSettings,
    init?: Float32Array,
  ) {
    this.numSample = numSampled(cfg.sampleRate, range.count);
    const values = init ?? initialShardWeights(range, cfg.dim, cfg.seed);
    this.state = createShardState(range.count, cfg.dim, cfg.optimizer, values, undefined, 'adopt');
  }

  /** One forward + backward through the sharded classifier for this worker's batch. */
  async forwardBackward(step: number, embeddings: Float32Array, labels: Int32Array, comm: ShardComm): Promise<ShardStepResult> {
    const { dim } = this.cfg;
    const batch = labels.length;
    if (embeddings.length !== batch * dim) throw new Error(`embeddings hold ${embeddings.length} values, expected ${batch}×${dim}`);

    // 2. every worker gets all N embeddings and labels
    const allEmb = await comm.allGatherFloat(embeddings);
    const allLabels = await comm.allGatherInt(labels);
    const rows = allLabels.length;

    // 3. this shard's classes: every positive it owns + sampled negatives
    const local = localiseLabels(allLabels, this.range);
    const sample = sampleClasses(local, this.range.count, this.numSample, Rng.derive(this.cfg.seed, 'sample', step, this.rank));
    // MagFace / CurricularFace: their own per-shard math (src/ops/shard-heads.ts)
    const head = this.cfg.loss;
    if (head && head.kind !== 'margin') return lossHeadStep({ step, batch, rank: this.rank, dim, allEmb, allLabels, sample, state: this.state, head, chunk: this.cfg.chunkRows, comm });

    const margin = this.cfg.marginAt?.(step) ?? this.cfg.margin;
    const emb = tf.tensor2d(allEmb, [rows, dim]);
    const weight = gatherRows(this.state, sample.index);
    // normalise the active rows once for both passes
    const prepared = prepareWeight(weight);
    try {
      // 4. per-row partial softmax statistics → coordinator; 5. global log-sum-exp back
      const stats = shardForward(emb, weight, sample.labels, margin, { chunk: this.cfg.chunkRows, prepared });
      const { logSumExp, loss } = await comm.exchangeSoftmax(step, batch, stats);

      // 6. local gradients; partial ∇E summed across shards by reduce-scatter
      const { gradEmb, gradWeight } = shardBackward(emb, weight, sample.labels, logSumExp, margin, this.cfg.marginGrad, rows, { chunk: this.cfg.chunkRows, prepared });
      const partial = (await gradEmb.data()) as Float32Array;
      gradEmb.dispose();
      const own = await comm.reduceScatter(partial);
      return { loss, gradEmbeddings: own, active: sample.index, gradWeight, ownedTargetProbability: ownedTargetProbability(stats, logSumExp) };
    } finally {
      // before update(): `weight` may share the variable's buffer (sample rate 1), which would cost the in-place update a copy
      prepared.dispose();
      emb.dispose();
      weight.dispose();
    }
  }

  /** Optimizer step on the active rows only (their optimizer state too); disposes the gradient. */
  update(active: Int32Array, gradWeight: tf.Tensor2D, hp: RowHyperParams): void {
    try {
      updateRows(this.state, active, gradWeight, hp);
    } finally {
      gradWeight.dispose();
    }
  }
}

/** exp(target − lse) on the rows whose label this shard owns, 0 elsewhere. */
function ownedTargetProbability(stats: ShardStats, logSumExp: Float32Array): Float32Array {
  const p = new Float32Array(logSumExp.length);
  for (let i = 0; i < p.length; i++) if (stats.owned[i]) p[i] = Math.exp(stats.target[i]! - logSumExp[i]!);
  return p;
}
