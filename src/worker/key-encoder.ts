/**
 * DCQ's weight generator f_k (docs/methods.md#dcq-step steps 3–4): an EMA copy of the
 * backbone that turns each reference image into its class weight
 * k = n(f_k(x_ref)). No gradient ever flows into it. It runs in training mode,
 * so its BatchNorm normalises with batch statistics and updates ITS OWN
 * running statistics (no MoCo shuffle-BN: each worker's keys use that
 * worker's reference batch). A step's EMA and statistics are provisional
 * until the training method applies the step (`KeyStep`): a step the
 * numerical guard skips puts the parameters back and drops the statistics.
 * At inference the key encoder is the network to
 * use (docs/methods.md#dcq-step "Inference").
 */
import { tf } from '../ops/tf.js';
import { PendingStats, type Backbone } from '../models/index.js';
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

  /**
   * One step's keys: θ_k ← μ·θ_k + (1 − μ)·θ_q (parameters only), then the
   * unit keys n(f_k(x)) of the reference images, B×D row-major (training
   * mode, no tape). Both changes are held until `commit`; `discard` puts the
   * parameters back bit for bit and drops the new BatchNorm statistics.
   */
  async step(x: tf.Tensor4D, momentum: number): Promise<KeyStep> {
    // the previous values: a clone shares the buffer, which assign() below replaces rather than overwrites
    const before = this.keyParams.map((v) => tf.clone(v));
    const stats = new PendingStats();
    let settled = false;
    const settle = (keep: boolean) => {
      if (settled) throw new Error('key encoder: a step committed or discarded twice');
      settled = true;
      if (keep) stats.commit();
      else {
        stats.discard();
        this.keyParams.forEach((v, i) => v.assign(before[i]!));
      }
      before.forEach((t) => t.dispose());
    };
    try {
      momentumUpdate(this.keyParams, this.queryParams, momentum);
      const raw = tf.tidy(() => this.network.apply(x, true, { updateStats: stats }));
      const keys = new Float32Array((await raw.data()) as Float32Array);
      raw.dispose();
      return { keys: normalizeRowsInPlace(keys, this.network.embeddingSize), commit: () => settle(true), discard: () => settle(false) };
    } catch (e) {
      settle(false);
      throw e;
    }
  }

  dispose(): void {
    this.network.dispose();
  }
}

/** A key-encoder step: its keys, and the EMA and BatchNorm statistics that produced them, pending. */
export interface KeyStep {
  keys: Float32Array;
  commit(): void;
  discard(): void;
}
