/**
 * DCQ's weight generator f_k (docs/methods.md#dcq-step steps 3–4): an EMA copy of the
 * backbone that turns each reference image into its class weight
 * k = n(f_k(x_ref)). No gradient ever flows into it. It runs in training mode,
 * so its BatchNorm normalises with batch statistics and updates ITS OWN
 * running statistics (no MoCo shuffle-BN: each worker's keys use that
 * worker's reference batch). At inference the key encoder is the network to
 * use (docs/methods.md#dcq-step "Inference").
 */
import { tf } from '../ops/tf.js';
import type { Backbone } from '../models/index.js';
import { momentumUpdate, normalizeRowsInPlace } from '../ops/dcq.js';

export class KeyEncoder {
  private readonly keyParams: tf.Variable[];
  private readonly queryParams: tf.Variable[];

  /**
   * `network`: a freshly built backbone of the same architecture; every
   * persistent tensor of `query` (parameters and BN statistics) is copied
   * into it, so f_k starts as f_q.
   */
  constructor(
    readonly network: Backbone,
    query: Backbone,
  ) {
    const target = network.state();
    for (const [name, v] of query.state()) {
      const t = target.get(name);
      if (!t || t.shape.join() !== v.shape.join()) throw new Error(`key encoder: tensor ${name} missing or of another shape; build it with the query backbone's architecture`);
      // a private copy, never a shared buffer (in-place optimizer kernels write into the query's)
      const copy = tf.tensor(new Float32Array(v.dataSync() as Float32Array), v.shape, 'float32');
      t.assign(copy);
      copy.dispose();
    }
    const byName = new Map(network.trainableVariables().map((p) => [p.name, p.variable]));
    const q = query.trainableVariables();
    this.queryParams = q.map((p) => p.variable);
    this.keyParams = q.map((p) => byName.get(p.name)!);
  }

  /** θ_k ← μ·θ_k + (1 − μ)·θ_q, parameters only; call before computing this step's keys. */
  update(momentum: number): void {
    momentumUpdate(this.keyParams, this.queryParams, momentum);
  }

  /** Unit keys n(f_k(x)) of the reference images, B×D row-major (training mode, own BN statistics updated, no tape). */
  async encode(x: tf.Tensor4D): Promise<Float32Array> {
    const raw = tf.tidy(() => this.network.apply(x, true, { updateStats: true }));
    const keys = new Float32Array((await raw.data()) as Float32Array);
    raw.dispose();
    return normalizeRowsInPlace(keys, this.network.embeddingSize);
  }

  dispose(): void {
    this.network.dispose();
  }
}
