/**
 * n shards of the loss-head step in one process: each "worker" runs
 * lossHeadStep with a ShardComm whose exchanges meet at a barrier and are
 * reduced with the coordinator's own arithmetic (reduceSoftmaxStats,
 * reduceTargetCosines, CurricularStage), so the math can be checked against
 * the reference vectors of docs/methods.md without processes or sockets.
 */
import { tf } from '../../src/ops/tf.js';
import { classRange, localiseLabels } from '../../src/ops/class-range.js';
import { createShardState } from '../../src/ops/row-optimizer.js';
import { reduceSoftmaxStats } from '../../src/ops/softmax-shard.js';
import { reduceTargetCosines, type HeadShardStats } from '../../src/ops/shard-heads.js';
import { CurricularStage } from '../../src/coordinator/target-reduction.js';
import { lossHeadStep, type LossHead } from '../../src/worker/loss-head-step.js';
import type { ShardComm } from '../../src/worker/sharded-classifier.js';

/** A meeting point for n parties: each gives a value, all get reduce(values in rank order). */
function barrier<T, R>(n: number, reduce: (parts: T[]) => R): (rank: number, v: T) => Promise<R> {
  let parts: T[] = [];
  let waiters: ((r: R) => void)[] = [];
  return (rank, v) =>
    new Promise<R>((resolve) => {
      parts[rank] = v;
      waiters.push(resolve);
      if (waiters.length === n) {
        const r = reduce(parts);
        const ws = waiters;
        parts = [];
        waiters = [];
        ws.forEach((w) => w(r));
      }
    });
}

export interface InProcessResult {
  loss: number;
  /** ∂L/∂E, N×D, rank order. */
  gradEmb: number[][];
  /** ∂L/∂W, C×D. */
  gradW: number[][];
  /** Each worker's lossState. */
  lossStates: Record<string, number>[];
}

export async function runShardsInProcess(
  workers: number,
  emb: number[][],
  labels: number[],
  weight: number[][],
  head: Exclude<LossHead, { kind: 'margin' }>,
  opts: { t?: number; chunk?: number } = {},
): Promise<InProcessResult> {
  const n = emb.length;
  const dim = emb[0]!.length;
  const classes = weight.length;
  const batch = n / workers;
  const stage = head.kind === 'curricular' ? new CurricularStage(opts.t ?? 0, head.spec.emaWeight) : null;
  const softmax = barrier<HeadShardStats, { logSumExp: Float32Array; loss: number }>(workers, (parts) => {
    const r = reduceSoftmaxStats(parts);
    let extra = 0;
    for (const p of parts) if (p.rowLossExtra) for (const v of p.rowLossExtra) extra += v;
    return { logSumExp: r.logSumExp, loss: r.loss + extra / n };
  });
  const targets = barrier<{ targetCos: Float32Array; owned: Uint8Array }, { targetCos: Float32Array; extras: Record<string, number> }>(workers, (parts) => {
    const r = reduceTargetCosines(parts);
    return { targetCos: r.targetCos, extras: { curricularT: stage!.advance(r.mean) } };
  });
  const scatter = barrier<Float32Array, Float32Array>(workers, (parts) => {
    const sum = new Float32Array(parts[0]!.length);
    for (const p of parts) p.forEach((v, i) => (sum[i] += v));
    return sum;
  });
  const allEmb = Float32Array.from(emb.flat());
  const allLabels = Int32Array.from(labels);
  const results = await Promise.all(
    Array.from({ length: workers }, async (_, rank) => {
      const range = classRange(classes, workers, rank);
      const values = Float32Array.from(weight.slice(range.start, range.start + range.count).flat());
      const state = createShardState(range.count, dim, 'sgd', values, undefined, 'adopt');
      const comm: ShardComm = {
        allGatherFloat: async () => allEmb,
        allGatherInt: async () => allLabels,
        exchangeSoftmax: (_s, _b, stats) => softmax(rank, stats),
        exchangeTargets: (_s, _b, stats) => targets(rank, stats),
        reduceScatter: async (a) => (await scatter(rank, a)).slice(rank * batch * dim, (rank + 1) * batch * dim),
      };
      const index = Int32Array.from({ length: range.count }, (_, j) => j);
      const r = await lossHeadStep({ step: 1, batch, rank, dim, allEmb, allLabels, sample: { index, labels: localiseLabels(allLabels, range) }, state, head, chunk: opts.chunk ?? 256, comm });
      const gw = Array.from(r.gradWeight.dataSync());
      r.gradWeight.dispose();
      state.weight.dispose();
      return { r, gw, range };
    }),
  );
  const gradEmb: number[][] = [];
  const gradW: number[][] = [];
  for (const { r, gw, range } of results) {
    for (let i = 0; i < batch; i++) gradEmb.push(Array.from(r.gradEmbeddings.subarray(i * dim, (i + 1) * dim)));
    for (let j = 0; j < range.count; j++) gradW.push(gw.slice(j * dim, (j + 1) * dim));
  }
  void tf;
  return { loss: results[0]!.r.loss, gradEmb, gradW, lossStates: results.map((x) => x.r.lossState) };
}
