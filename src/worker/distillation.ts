/**
 * Knowledge distillation on the worker (docs/methods.md#distillation): a frozen teacher backbone
 * runs (inference mode) on this worker's batch, and the distillation loss's
 * gradient with respect to the student's embeddings joins the classifier's
 * ∂L/∂e before the backbone backward. Also `initFrom`: the next generation of
 * recursive distillation starts the student from a previous run's backbone
 * (fresh optimizer state and LR schedule are simply those of a new run).
 */
import { tf } from '../ops/tf.js';
import { distillLoss, type DistillKind } from '../ops/distill.js';
import { loadBackboneFromCheckpoint } from '../eval/load-backbone.js';
import { loadBackboneTensors } from '../checkpoint/checkpoint.js';
import { resolveCheckpointDir } from '../eval/checkpoint-dir.js';
import type { Backbone } from '../models/index.js';

export class Teacher {
  private constructor(
    readonly network: Backbone,
    readonly dir: string,
    private readonly kind: DistillKind,
    private readonly weight: number,
  ) {}

  /** Loads the teacher's backbone from a checkpoint (checksum verified); it is never trained. */
  static async load(path: string, kind: DistillKind, weight: number): Promise<Teacher> {
    const { backbone, dir } = await loadBackboneFromCheckpoint(path);
    return new Teacher(backbone, dir, kind, weight);
  }

  /**
   * Adds weight·∂L_distill/∂F_s to `gradEmbeddings` (this worker's B rows, in
   * place) and returns this worker's mean distillation loss (unweighted).
   * `globalRows` = workers × B: the loss is the mean over the global batch, so
   * summing the backbone gradients across workers (as training does) gives
   * its gradient; the per-worker means average to the global one.
   */
  async distill(x: tf.Tensor4D, student: Float32Array, gradEmbeddings: Float32Array, globalRows: number): Promise<number> {
    const t = tf.tidy(() => this.network.apply(x, false));
    const teacher = (await t.data()) as Float32Array;
    t.dispose();
    const dim = this.network.embeddingSize;
    const rows = student.length / dim;
    const d = distillLoss(this.kind, teacher, student, dim, globalRows);
    for (let i = 0; i < gradEmbeddings.length; i++) gradEmbeddings[i] += this.weight * d.grad[i]!;
    return (d.loss * globalRows) / rows;
  }

  dispose(): void {
    this.network.dispose();
  }
}

/**
 * Assigns every persistent backbone tensor (parameters, BatchNorm statistics)
 * from a checkpoint's backbone.safetensors; the names and shapes must match.
 * Returns the step directory used.
 */
export function initBackboneFrom(backbone: Backbone, path: string): string {
  const dir = resolveCheckpointDir(path);
  const { tensors } = loadBackboneTensors(dir);
  for (const [key, v] of backbone.state()) {
    const t = tensors[key];
    if (!t) throw new Error(`initFrom ${dir}: backbone.safetensors has no tensor ${key} (saved by another architecture?)`);
    if (!(t.data instanceof Float32Array) || t.shape.length !== v.shape.length || t.shape.some((s, i) => s !== v.shape[i]))
      throw new Error(`initFrom ${dir}: tensor ${key} is [${t.shape}] ${t.data.constructor.name}, the backbone expects float32 [${v.shape}]`);
    const value = tf.tensor(t.data, v.shape, 'float32');
    v.assign(value);
    value.dispose();
  }
  return dir;
}
