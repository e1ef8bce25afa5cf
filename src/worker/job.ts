/**
 * What a worker runs each step. A job gets the worker's place in the cluster
 * and the communication operations, and reads like single-process code.
 */
import type { Bodies, StepKind } from '../protocol/index.js';
import type { ShardfaceLogger } from '../log/logger.js';
import type { Ring } from '../collectives/ring.js';
import type { Collectives } from '../collectives/collectives.js';
import type { ShardStats } from '../ops/softmax-shard.js';
import type { HeadShardStats } from '../ops/shard-heads.js';

export interface WorkerContext {
  rank: number;
  world: number;
  numClasses: number;
  classRange: Bodies['welcome']['classRange'];
  seed: number;
  config: Record<string, unknown>;
  ring: Ring;
  /** Bulk collectives (the backbone gradient all-reduce): shared memory among same-host workers or the ring (`collectiveTransport`). */
  collectives: Collectives;
  logger: ShardfaceLogger;
  /** Sends this shard's per-row statistics; resolves with the global log-sum-exp and loss. */
  exchangeSoftmax(step: number, batch: number, stats: ShardStats | HeadShardStats): Promise<{ logSumExp: Float32Array; loss: number; extras: Record<string, number> }>;
  /** CurricularFace's preliminary exchange: owned rows' target cosines → every row's, plus job-wide values (t). */
  exchangeTargets(step: number, batch: number, stats: { targetCos: Float32Array; owned: Uint8Array }): Promise<{ targetCos: Float32Array; extras: Record<string, number> }>;
  /** Sends an event to the coordinator (checkpoint written, evaluation result, selftest output…). */
  emit(name: string, fields: Record<string, unknown>): Promise<void>;
}

/** What the coordinator asked of a step beyond running it. */
export interface StepRequest {
  /** Write a checkpoint at the end of this step (step-begin's `checkpoint` flag: checkpointMinutes). */
  checkpoint: boolean;
}

export interface WorkerJob {
  /** Runs step `step`; returns the metrics reported with step-end. */
  step(step: number, request: StepRequest): Promise<Record<string, number>>;
  /**
   * Writes a checkpoint of the state after `step`, the step that just ended (the coordinator's `checkpoint` message
   * before a graceful stop). Jobs without state to save leave it out.
   */
  checkpoint?(step: number): Promise<void>;
  /** Called once after the last step (or on stop) to release resources. */
  close?(ok: boolean): Promise<void>;
}

export type JobFactory = (ctx: WorkerContext) => Promise<WorkerJob>;

/** Job modules by step kind, loaded on demand so a worker only loads what it runs. */
export const JOB_MODULES: Record<StepKind, string> = {
  empty: './jobs/empty.js',
  selftest: './jobs/selftest.js',
  bench: './jobs/bench-classifier.js',
  train: './jobs/train.js',
};
