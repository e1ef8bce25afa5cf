/** The classifier's communication, built from the worker's ring and control channel. */
import type { WorkerContext } from './job.js';
import type { ShardComm } from './sharded-classifier.js';

export function shardComm(ctx: WorkerContext): ShardComm {
  return {
    allGatherFloat: (a) => ctx.ring.allGather(a),
    allGatherInt: (a) => ctx.ring.allGather(a),
    exchangeSoftmax: (step, batch, stats) => ctx.exchangeSoftmax(step, batch, stats),
    exchangeTargets: (step, batch, stats) => ctx.exchangeTargets(step, batch, stats),
    reduceScatter: (a) => ctx.ring.reduceScatter(a, 'sum'),
  };
}
