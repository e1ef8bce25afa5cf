/**
 * Distillation around any training method: the frozen teacher's pull on this
 * worker's embeddings joins the method's ∂L/∂e before the backbone backward
 * (distillation.ts holds the teacher; the loss: docs/methods.md). Everything
 * else — checkpoints, the inference network — is the wrapped method's.
 */
import type { Teacher } from '../distillation.js';
import type { RestorePoint } from './restore.js';
import type { EmbeddingGradHook, MethodStepInput, MethodStepResult, TrainingMethod } from './method.js';

export class DistillationMethod implements TrainingMethod {
  readonly name: string;
  private readonly pull: EmbeddingGradHook;

  constructor(
    private readonly inner: TrainingMethod,
    private readonly teacher: Teacher,
    /** workers × batch: the distillation loss is a mean over the global batch. */
    globalRows: number,
  ) {
    this.name = `${inner.name}+distillation`;
    this.pull = async (x, embeddings, gradEmbeddings) => ({ distillLoss: await teacher.distill(x, embeddings, gradEmbeddings, globalRows) });
  }

  get inferenceNetwork() {
    return this.inner.inferenceNetwork;
  }

  step(input: MethodStepInput): Promise<MethodStepResult> {
    return this.inner.step({ ...input, hooks: [...input.hooks, this.pull] });
  }

  checkpoint() {
    return this.inner.checkpoint();
  }

  /** The teacher is frozen and read from its own file: only the student's state comes back. */
  restore(from: RestorePoint) {
    return this.inner.restore(from);
  }

  dispose(): void {
    this.inner.dispose();
    this.teacher.dispose();
  }
}
