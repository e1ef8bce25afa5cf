/**
 * The classifier benchmark: random embeddings and labels every step through
 * the real sharded classifier (gather, exchange, reduce-scatter, row update).
 * Reports the step time it measured and the process's peak memory.
 */
import { performance } from 'node:perf_hooks';
import { Rng } from '../../common/random.js';
import { resolveMargin } from '../../ops/margin.js';
import type { JobFactory } from '../job.js';
import { ShardedClassifier } from '../sharded-classifier.js';
import { shardComm } from '../shard-comm.js';
import { ShardedClassQueue } from '../sharded-class-queue.js'; // --- DCQ
import { normalizeRowsInPlace } from '../../ops/dcq.js'; // --- DCQ

export interface BenchClassifierConfig {
  dim: number;
  batch: number;
  sampleRate: number;
  chunkRows: number;
  // --- DCQ: `classifier: 'dcq'` benches the sharded class queue (random queries and keys) instead
  classifier?: 'fc' | 'dcq';
  queueSize?: number;
  // --- end DCQ
}

export const createJob: JobFactory = async (ctx) => {
  const c = ctx.config as unknown as BenchClassifierConfig;
  if (c.classifier === 'dcq') return benchQueue(ctx); // --- DCQ
  const classifier = new ShardedClassifier(ctx.classRange, ctx.rank, {
    dim: c.dim,
    margin: resolveMargin({ type: 'arcface' }),
    marginGrad: 'straight-through',
    sampleRate: c.sampleRate,
    chunkRows: c.chunkRows,
    optimizer: 'sgd',
    seed: ctx.seed,
  });
  const comm = shardComm(ctx);
  const emb = new Float32Array(c.batch * c.dim);
  const labels = new Int32Array(c.batch);
  return {
    async step(step) {
      const rng = Rng.derive(ctx.seed, 'bench-batch', step, ctx.rank);
      rng.fillNormal(emb);
      for (let i = 0; i < labels.length; i++) labels[i] = rng.int(ctx.numClasses);
      const t0 = performance.now();
      const r = await classifier.forwardBackward(step, emb, labels, comm);
      const activeRows = r.active.length;
      classifier.update(r.active, r.gradWeight, { kind: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
      const seconds = (performance.now() - t0) / 1000;
      return { seconds, loss: r.loss, activeRows, rssMb: process.memoryUsage().rss / 2 ** 20, maxRssMb: process.resourceUsage().maxRSS / 1024 };
    },
  };
};

// --- DCQ: the class-queue benchmark. Nothing here is sized by the number of classes:
// random raw queries, random unit keys, random labels in [0, C), the real queue step (gather, exchange, reduce-scatter, enqueue).
const benchQueue: JobFactory = async (ctx) => {
  const c = ctx.config as unknown as BenchClassifierConfig;
  const queue = new ShardedClassQueue(ctx.world, ctx.rank, { dim: c.dim, queueSize: c.queueSize ?? 8192, head: { s: 50, m: 0.3 }, chunkRows: c.chunkRows || 256, seed: ctx.seed });
  const comm = shardComm(ctx);
  const queries = new Float32Array(c.batch * c.dim);
  const keys = new Float32Array(c.batch * c.dim);
  const labels = new Int32Array(c.batch);
  return {
    async step(step) {
      const rng = Rng.derive(ctx.seed, 'bench-batch', step, ctx.rank);
      rng.fillNormal(queries);
      normalizeRowsInPlace(rng.fillNormal(keys), c.dim);
      for (let i = 0; i < labels.length; i++) labels[i] = rng.int(ctx.numClasses);
      const t0 = performance.now();
      const r = await queue.forwardBackward(step, queries, keys, labels, comm);
      r.enqueue();
      const seconds = (performance.now() - t0) / 1000;
      return { seconds, loss: r.loss, activeRows: queue.slots.count, rssMb: process.memoryUsage().rss / 2 ** 20, maxRssMb: process.resourceUsage().maxRSS / 1024 };
    },
  };
};
// --- end DCQ
