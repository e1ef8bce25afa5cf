/**
 * The step every embedding-loss method shares (fc, dcq, and occlusion before
 * its start step): one forward of the backbone under a deferred tape
 * (src/ops/deferred-gradients.ts) to this worker's embeddings, the method's
 * distributed loss giving ∂L/∂e, the hooks' further pulls on ∂L/∂e
 * (distillation), then the backbone backward from ∂L/∂e through the tape the
 * forward recorded. Nothing that runs in between (the classifier's ops, a key
 * encoder's or a teacher's forward) is recorded into that tape.
 *
 * The forward's new BatchNorm running statistics are staged, not written
 * (src/models/pending-stats.ts): `apply` commits them with the method's own
 * update, `discard` drops them, so a step the numerical guard skips leaves
 * them as they were.
 */
import { performance } from 'node:perf_hooks';
import { tf } from '../../ops/tf.js';
import { DeferredTape } from '../../ops/deferred-gradients.js';
import { PendingStats, type Backbone, type TrainableVariable } from '../../models/index.js';
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
  const tape = new DeferredTape();
  const stats = new PendingStats();
  let emb: tf.Tensor2D | undefined;
  let l: EmbeddingLoss | undefined;
  try {
    emb = tape.record(() => backbone.apply(x, true, { updateStats: stats }));
    const embData = (await emb.data()) as Float32Array;
    const forwardDone = performance.now();

    const lossStart = performance.now();
    l = await loss(embData);
    const lossDone = performance.now();
    const metrics = { ...l.metrics };
    for (const hook of input.hooks) Object.assign(metrics, await hook(x, embData, l.gradEmbeddings));

    const dy = tf.tensor2d(l.gradEmbeddings, emb.shape);
    const grads = tape.gradients(
      emb,
      params.map((p) => p.variable),
      dy,
    );
    dy.dispose();
    const { apply, discard } = l;
    return {
      loss: l.loss,
      backboneGrads: grads,
      metrics,
      marks: { forwardDone, lossStart, lossDone },
      apply: (lr) => {
        stats.commit();
        apply(lr);
      },
      discard: () => {
        stats.discard();
        discard();
      },
    };
  } catch (e) {
    tape.dispose();
    stats.discard();
    l?.discard();
    throw e;
  } finally {
    emb?.dispose();
  }
}
