/**
 * The numerical guard's tensor pieces: whether any gradient holds NaN or ±Inf,
 * and a snapshot of the backbone's non-trainable state (BatchNorm running
 * statistics, moved by the step's taped forward) to put back when a step is
 * skipped. The decision itself is in the training loop (jobs/train.ts).
 */
import { tf } from '../ops/tf.js';
import type { Backbone } from '../models/index.js';

/** True iff some element of some tensor is NaN or ±Inf (x·0 is 0 for every finite x, NaN otherwise). */
export async function anyNonFinite(ts: readonly tf.Tensor[]): Promise<boolean> {
  if (ts.length === 0) return false;
  const probe = tf.tidy(() => tf.addN(ts.map((t) => tf.sum(tf.mul(t, 0)))));
  const v = (await probe.data())[0]!;
  probe.dispose();
  return !Number.isFinite(v);
}

export interface StateSnapshot {
  /** Puts every snapshotted tensor back as it was, and releases the copies. */
  restore(): void;
  dispose(): void;
}

/** Copies the backbone's persistent tensors that are not trained by gradients (BatchNorm running statistics). */
export function snapshotBuffers(backbone: Backbone): StateSnapshot {
  const trained = new Set(backbone.trainableVariables().map((p) => p.variable));
  const copies = [...backbone.state().values()].filter((v) => !trained.has(v)).map((v) => [v, tf.clone(v)] as const);
  const dispose = () => copies.forEach(([, c]) => c.dispose());
  return {
    restore() {
      for (const [v, c] of copies) v.assign(c);
      dispose();
    },
    dispose,
  };
}
