/**
 * The numerical guard's tensor piece: whether any gradient holds NaN or ±Inf.
 * The decision is in the training loop (jobs/train.ts); what a skipped step
 * must leave alone is never written before the decision (each method's
 * `apply`, BatchNorm statistics included: docs/architecture.md#numerical-guard).
 */
import { tf } from '../ops/tf.js';

/** True iff some element of some tensor is NaN or ±Inf (x·0 is 0 for every finite x, NaN otherwise). */
export async function anyNonFinite(ts: readonly tf.Tensor[]): Promise<boolean> {
  if (ts.length === 0) return false;
  const probe = tf.tidy(() => tf.addN(ts.map((t) => tf.sum(tf.mul(t, 0)))));
  const v = (await probe.data())[0]!;
  probe.dispose();
  return !Number.isFinite(v);
}
