/**
 * One forward/backward of the sharded classifier on a case given by the
 * coordinator; the results go back as an event so the selftest can compare
 * them with the single-process computation.
 */
import type { JobFactory } from '../job.js';
import { ShardedClassifier } from '../sharded-classifier.js';
import { shardComm } from '../shard-comm.js';
import type { MarginGrad, MarginSpec } from '../../ops/margin.js';
import type { HeadCase } from '../../ops/reference-heads.js';
import type { LossHead } from '../loss-head-step.js';

export interface SelftestJobConfig {
  embeddings: number[][];
  labels: number[];
  weight: number[][];
  margin: MarginSpec;
  /** MagFace / CurricularFace instead of the margin family (the coordinator holds CurricularFace's incoming t). */
  head?: HeadCase;
  marginGrad: MarginGrad;
  sampleRate: number;
  chunkRows: number;
}

export const createJob: JobFactory = async (ctx) => {
  const c = ctx.config as unknown as SelftestJobConfig;
  const dim = c.weight[0]?.length ?? c.embeddings[0]!.length;
  const batch = c.embeddings.length / ctx.world;
  const { start, count } = ctx.classRange;
  const init = new Float32Array(count * dim);
  for (let j = 0; j < count; j++) init.set(c.weight[start + j]!, j * dim);
  const loss = lossHeadOf(c.head);
  const classifier = new ShardedClassifier(
    ctx.classRange,
    ctx.rank,
    { dim, margin: c.margin, marginGrad: c.marginGrad, sampleRate: c.sampleRate, chunkRows: c.chunkRows, optimizer: 'sgd', seed: ctx.seed, loss },
    init,
  );
  const mine = c.embeddings.slice(ctx.rank * batch, (ctx.rank + 1) * batch);
  const emb = new Float32Array(batch * dim);
  mine.forEach((row, i) => emb.set(row, i * dim));
  const labels = Int32Array.from(c.labels.slice(ctx.rank * batch, (ctx.rank + 1) * batch));

  return {
    async step(step) {
      const r = await classifier.forwardBackward(step, emb, labels, shardComm(ctx));
      const gw = (await r.gradWeight.data()) as Float32Array;
      r.gradWeight.dispose();
      await ctx.emit('selftest-result', {
        rank: ctx.rank,
        loss: r.loss,
        classStart: start,
        active: Array.from(r.active, (j) => start + j),
        gradWeight: Array.from(gw),
        gradEmbeddings: Array.from(r.gradEmbeddings),
        lossState: r.lossState ?? {},
      });
      return { loss: r.loss };
    },
  };
};

function lossHeadOf(head: HeadCase | undefined): LossHead {
  if (!head) return { kind: 'margin' };
  if (head.kind === 'magface')
    return {
      kind: 'magface',
      spec: { s: head.s, la: head.la, ua: head.ua, lm: head.lm, um: head.um, lambdaG: head.lambdaG, ...(head.easyMargin !== undefined ? { easyMargin: head.easyMargin } : {}) },
    };
  return { kind: 'curricular', spec: { s: head.s, m: head.m, emaWeight: head.emaWeight } };
}
