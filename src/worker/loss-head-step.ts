/**
 * The distributed step for the loss heads beyond the margin family —
 * MagFace (docs/methods.md#magface) and CurricularFace (docs/methods.md#curricularface) — once the batch is gathered
 * and this shard's classes are sampled. Same conventions as
 * sharded-classifier.ts: gradients of the loss averaged over the global batch
 * of N = n·B rows, partial ∂L/∂E summed by the reduce-scatter.
 *
 * MagFace. Every worker holds all N raw embeddings after the all-gather, so
 * the per-row magnitudes ‖x_i‖ (and a_i, m(a_i)) travel with it: each shard
 * reads them off the gathered rows in float64, identically everywhere.
 *   - target logit s·f(c_y; m(a_i)) on the shard owning the label;
 *   - the CE's radial part (∂L_CE/∂a_i · x̂_i) is added by that shard to its
 *     partial ∂L/∂E before the reduce-scatter;
 *   - the regulariser λ_g·g(a_i): its value travels to the coordinator as the
 *     row's `rowLossExtra` (sent by the label's shard, so counted once) and is
 *     part of the reported loss; its gradient λ_g·g'(a_i)/N · x̂_i is local to
 *     the row's own worker and added after the reduce-scatter.
 *
 * CurricularFace. t must be known before any logit is modulated, and the
 * batch mean of the target cosines needs every row's target, which only the
 * label's shard can compute. So the step has a preliminary exchange:
 *   shards → coordinator: target cosines of the rows they own (`target-stats`)
 *   coordinator → shards: every row's target cosine and the updated job-wide t
 * then the usual forward → softmax exchange → backward. t is the coordinator's
 * state, so it is one value, identical on every worker.
 */
import { tf } from '../ops/tf.js';
import { gatherRows, type ShardState } from '../ops/row-optimizer.js';
import { headShardBackward, headShardForward, ownedTargetCosines, prepareHeadShard, type HeadShardStats, type ShardHead } from '../ops/shard-heads.js';
import { magfaceMarginRadial, magfaceShardHead, magnitudeRows, magRegulariser, magRegulariserGrad, type MagFaceSpec } from '../ops/magface.js';
import { curricularShardHead, type CurricularSpec } from '../ops/curricular.js';
import type { ShardComm, ShardStepResult } from './sharded-classifier.js';
import { CURRICULAR_T } from '../ops/job-state.js';

/** Which loss the sharded classifier computes; absent (or 'margin') = the margin family of softmax-shard.ts. */
export type LossHead = { kind: 'margin' } | { kind: 'magface'; spec: MagFaceSpec } | { kind: 'curricular'; spec: CurricularSpec };

/** The job-wide value the coordinator keeps for CurricularFace, in `extras` and checkpoints (src/ops/job-state.ts). */
export { CURRICULAR_T };

export interface LossHeadStepInput {
  step: number;
  /** This worker's rows B (the gathered batch is rank-ordered). */
  batch: number;
  rank: number;
  dim: number;
  allEmb: Float32Array;
  allLabels: Int32Array;
  /** Active rows of this shard and the gathered labels as positions in them (−1 = not here). */
  sample: { index: Int32Array; labels: Int32Array };
  state: ShardState;
  head: Exclude<LossHead, { kind: 'margin' }>;
  chunk: number;
  comm: ShardComm;
}

export type LossHeadStepResult = ShardStepResult & { lossState: Record<string, number> };

export async function lossHeadStep(a: LossHeadStepInput): Promise<LossHeadStepResult> {
  const { step, batch, rank, dim, allEmb, allLabels, sample, head, chunk, comm } = a;
  const rows = allLabels.length;
  const emb = tf.tensor2d(allEmb, [rows, dim]);
  const weight = gatherRows(a.state, sample.index);
  const shard = prepareHeadShard(emb, weight);
  emb.dispose();
  weight.dispose();
  try {
    const own = ownedTargetCosines(shard, sample.labels);
    const owned = Uint8Array.from(sample.labels, (y) => (y >= 0 ? 1 : 0));
    let shardHead: ShardHead;
    let targetCos = own;
    const lossState: Record<string, number> = {};
    const magSpec = head.kind === 'magface' ? head.spec : null;
    const mags = magSpec ? magnitudeRows(allEmb, dim, magSpec) : null;
    if (head.kind === 'curricular') {
      // preliminary exchange: every row's target cosine and this step's t
      if (!comm.exchangeTargets) throw new Error('CurricularFace needs the target-cosine exchange with the coordinator (ShardComm.exchangeTargets)');
      const r = await comm.exchangeTargets(step, batch, { targetCos: own, owned });
      const t = r.extras[CURRICULAR_T];
      // a non-finite t (from non-finite cosines) flows on into non-finite gradients, and the numerical guard skips the step
      if (typeof t !== 'number') throw new Error(`coordinator sent no ${CURRICULAR_T} (is the job configured for CurricularFace?)`);
      targetCos = r.targetCos;
      lossState[CURRICULAR_T] = t;
      shardHead = curricularShardHead(head.spec, t, targetCos);
    } else {
      shardHead = magfaceShardHead(magSpec!, mags!);
    }

    const stats: HeadShardStats = headShardForward(shard, sample.labels, targetCos, shardHead, chunk);
    if (magSpec && mags) {
      // λ_g·g(a_i), counted once: by the shard that owns the row's label
      stats.rowLossExtra = new Float32Array(rows);
      for (let i = 0; i < rows; i++) if (owned[i]) stats.rowLossExtra[i] = magSpec.lambdaG * magRegulariser(mags.a[i]!, magSpec);
    }
    const { logSumExp, loss } = await comm.exchangeSoftmax(step, batch, stats);

    const grads = headShardBackward(shard, sample.labels, targetCos, logSumExp, shardHead, rows, chunk);
    let gradEmb = grads.gradEmb;
    if (magSpec && mags) {
      // the CE's radial part through a_i, on the label's shard
      const radial = magfaceMarginRadial(magSpec, mags, targetCos, owned, stats.target, logSumExp, rows);
      const withRadial = tf.tidy(() => tf.add(gradEmb, tf.mul(tf.tensor2d(radial, [rows, 1]), shard.unitE)) as tf.Tensor2D);
      gradEmb.dispose();
      gradEmb = withRadial;
    }
    const partial = (await gradEmb.data()) as Float32Array;
    gradEmb.dispose();
    const mine = await comm.reduceScatter(partial);
    if (magSpec && mags) {
      // the regulariser's gradient, local to the row's own worker: λ_g·g'(a_i)/N · x_i/‖x_i‖
      const spec = magSpec;
      for (let r = 0; r < batch; r++) {
        const i = rank * batch + r;
        if (!mags.inside[i]) continue;
        const coef = (spec.lambdaG * magRegulariserGrad(mags.a[i]!, spec)) / rows / mags.norm[i]!;
        for (let d = 0; d < dim; d++) mine[r * dim + d] += coef * allEmb[i * dim + d]!;
      }
    }
    const ownedTargetProbability = new Float32Array(rows);
    for (let i = 0; i < rows; i++) if (owned[i]) ownedTargetProbability[i] = Math.exp(stats.target[i]! - logSumExp[i]!);
    return { loss, gradEmbeddings: mine, active: sample.index, gradWeight: grads.gradWeight, ownedTargetProbability, lossState };
  } finally {
    shard.dispose();
  }
}

/** The classifier's loss head from the training config (margin.s is every head's scale; CurricularFace's m is margin.m2). */
export function lossHeadFromConfig(cfg: {
  loss: 'margin' | 'magface' | 'curricular';
  margin: { s: number; m2: number };
  magface: { la: number; ua: number; lm: number; um: number; lambdaG: number; easyMargin?: boolean };
  curricular: { emaWeight: number };
}): LossHead {
  if (cfg.loss === 'magface') return { kind: 'magface', spec: { s: cfg.margin.s, ...cfg.magface } };
  if (cfg.loss === 'curricular') return { kind: 'curricular', spec: { s: cfg.margin.s, m: cfg.margin.m2, emaWeight: cfg.curricular.emaWeight } };
  return { kind: 'margin' };
}
