/**
 * The step every embedding-loss method shares (fc, dcq, and occlusion before
 * its start step): a tape-free forward to this worker's embeddings, the
 * method's distributed loss giving ∂L/∂e, the hooks' further pulls on ∂L/∂e
 * (distillation), then the backbone backward from ∂L/∂e with the forward
 * recomputed under the tape. BatchNorm running statistics move once, in that
 * taped forward.
 */
import { performance } from 'node:perf_hooks';
import { tf } from '../../ops/tf.js';
import type { Backbone, TrainableVariable } from '../../models/index.js';
import type { MethodStepInput, MethodStepResult } from './method.js';

/** What a method's loss gives for this worker's embeddings. */
export interface EmbeddingLoss {
  loss: number;
  /** ∂L/∂e for this worker's B rows (B×D); the hooks add to it in place. */
  gradEmbeddings: Float32Array;
  metrics: Record<string, number>;
  apply: (lr: number) => void;
  discard: () => void;
}

export async function embeddingStep(
  backbone: Backbone,
  params: readonly TrainableVariable[],
  input: MethodStepInput,
  loss: (embeddings: Float32Array) => Promise<EmbeddingLoss>,
): Promise<MethodStepResult> {
  const { x } = input;
  const emb = tf.tidy(() => backbone.apply(x, true, { updateStats: false }));
  const embData = (await emb.data()) as Float32Array;
  emb.dispose();
  const forwardDone = performance.now();

  const lossStart = performance.now();
  const l = await loss(embData);
  const lossDone = performance.now();
  const metrics = { ...l.metrics };
  for (const hook of input.hooks) Object.assign(metrics, await hook(x, embData, l.gradEmbeddings));

  const [b, d] = [embData.length / backbone.embeddingSize, backbone.embeddingSize];
  const dy = tf.tensor2d(l.gradEmbeddings, [b, d]);
  const vars = params.map((p) => p.variable);
  const grads = tf.engine().gradients(() => backbone.apply(x, true), vars, dy).grads;
  dy.dispose();
  return { loss: l.loss, backboneGrads: grads, metrics, marks: { forwardDone, lossStart, lossDone }, apply: l.apply, discard: l.discard };
}
