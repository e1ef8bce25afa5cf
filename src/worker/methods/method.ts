/**
 * The seam between the training loop and a training method (src/worker/jobs/train.ts):
 * the loop owns data, backbone, optimizer, schedule and the gradient
 * all-reduce; a method owns what turns a batch into a loss and this worker's
 * backbone gradients (the sharded classifier, the class queue, the occlusion
 * adversary), what it saves in a checkpoint, and which network verification
 * scores. The math of each method: docs/methods.md.
 */
import type { tf } from '../../ops/tf.js';
import type { TrainConfig } from '../../config/schema.js';
import type { Batch, Loader } from '../../data/loader.js';
import type { Backbone, TrainableVariable } from '../../models/index.js';
import type { StoredTensor } from '../../checkpoint/tensor-file.js';
import type { BackboneOptimizer } from '../backbone-optimizer.js';
import type { ShardComm } from '../sharded-classifier.js';
import type { WorkerContext } from '../job.js';
import type { RestorePoint } from './restore.js';

/** The train config plus what the coordinator derived from it. */
export type TrainJobConfig = TrainConfig & {
  steps: number;
  stepsPerEpoch: number;
  runDir: string;
  /** A resumed run: the verified checkpoint directory its state comes from (the coordinator starts at its step + 1). */
  resumeFrom?: string;
};

/** What a method is built from: the worker, the job's config and the loop's backbone, optimizer and data. */
export interface MethodContext {
  worker: WorkerContext;
  cfg: TrainJobConfig;
  backbone: Backbone;
  /** The backbone's trainable variables, in the optimizer's (and the gradients') order. */
  params: TrainableVariable[];
  optimizer: BackboneOptimizer;
  loader: Loader;
  comm: ShardComm;
}

/**
 * A further pull on ∂L/∂e, added in place to `gradEmbeddings` after the
 * method's loss and before the backbone backward (distillation's teacher).
 * Returns metrics for the step.
 */
export type EmbeddingGradHook = (x: tf.Tensor4D, embeddings: Float32Array, gradEmbeddings: Float32Array) => Promise<Record<string, number>>;

export interface MethodStepInput {
  step: number;
  epoch: number;
  /** Index of the batch within the epoch. */
  batchIndex: number;
  /** The batch's images as a [B, S, S, 3] tensor (the loop disposes it). */
  x: tf.Tensor4D;
  batch: Batch;
  lr: number;
  hooks: readonly EmbeddingGradHook[];
}

/** performance.now() marks inside a step, for the loop's step-time breakdown. */
export interface StepMarks {
  /** End of the tape-free forward to the embeddings. */
  forwardDone: number;
  /** Start and end of the loss exchange (classifier or queue). */
  lossStart: number;
  lossDone: number;
}

export interface MethodStepResult {
  /** The global batch's loss, as the coordinator reduced it. */
  loss: number;
  /** This worker's (not yet summed) gradients of the backbone's trainable variables; null = backbone frozen this step. */
  backboneGrads: tf.Tensor[] | null;
  metrics: Record<string, number>;
  marks: StepMarks;
  /**
   * Everything else the step changes, after the backbone's optimizer step: the
   * forward's BatchNorm running statistics, classifier rows, DCQ's queue and
   * key encoder, the occlusion adversary. The loop calls it exactly when the
   * numerical guard keeps the step (backboneGrads null or not), so a step
   * must change none of that state before it.
   */
  apply: (lr: number) => void;
  /** Releases what `apply` would have used, for a step that is skipped. */
  discard: () => void;
}

/** One checkpoint file's content. */
export interface CheckpointPart {
  file: string;
  tensors: Record<string, StoredTensor>;
  /** File metadata beyond step, epoch, rank and world. */
  meta: Record<string, string>;
}

/** What a method saves: its per-worker shard file and, on rank 0, the inference network's file (backbone.safetensors). */
export interface CheckpointContent {
  shard: CheckpointPart & {
    /** Fields of the `checkpoint-file` event beyond the class range (DCQ: the queue slots). */
    announce: Record<string, number>;
  };
  network: CheckpointPart | null;
}

export interface TrainingMethod {
  readonly name: string;
  /** One step's loss and this worker's backbone gradients. */
  step(input: MethodStepInput): Promise<MethodStepResult>;
  /** The network verification scores and checkpoints serve for inference. */
  readonly inferenceNetwork: Backbone;
  /** The tensors of a checkpoint at this point (read from the live variables). */
  checkpoint(): Promise<CheckpointContent>;
  /** Puts back what checkpoint() saved (a resumed run), before the first step; throws naming what does not fit. */
  restore(from: RestorePoint): Promise<void>;
  dispose(): void;
}

/** Reads variables into checkpoint tensors, in order. */
export async function storedTensors(entries: Iterable<readonly [string, tf.Tensor]>, prefix = ''): Promise<Record<string, StoredTensor>> {
  const out: Record<string, StoredTensor> = {};
  for (const [name, v] of entries) out[prefix + name] = { data: (await v.data()) as Float32Array, shape: v.shape };
  return out;
}
