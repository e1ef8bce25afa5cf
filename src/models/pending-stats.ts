/**
 * BatchNorm running statistics computed by a training forward but written
 * later. The training step runs its one forward before it knows whether the
 * numerical guard will keep the step (docs/architecture.md#numerical-guard),
 * so the new running values wait here: `commit()` (the step is applied)
 * assigns them, `discard()` (the step is skipped or fails) drops them.
 * A running statistic is read by nothing between the forward and the
 * commit, so the committed values are those an immediate write would give.
 */
import { tf } from '../ops/tf.js';

export class PendingStats {
  private writes: [tf.Variable, tf.Tensor][] = [];

  /** Holds `next` (kept, so no tidy frees it) as the coming value of `running`. */
  stage(running: tf.Variable, next: tf.Tensor): void {
    // a second value would be computed from the old one, not from the first: not what an immediate write gives
    if (this.writes.some(([v]) => v === running)) throw new Error('pending BatchNorm statistics: one running statistic staged twice before a commit');
    this.writes.push([running, tf.keep(next)]);
  }

  get size(): number {
    return this.writes.length;
  }

  /** Writes every staged value, in staging order. */
  commit(): void {
    const writes = this.take();
    for (const [v, t] of writes) {
      v.assign(t);
      t.dispose();
    }
  }

  discard(): void {
    for (const [, t] of this.take()) t.dispose();
  }

  private take(): [tf.Variable, tf.Tensor][] {
    const w = this.writes;
    this.writes = [];
    return w;
  }
}
