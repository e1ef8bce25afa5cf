/**
 * Margin warm-up: the margin head's angular/cosine margins ramped linearly
 * from none (the normalised softmax: m1 = 1, m2 = 0, m3 = 0) to their
 * configured values over the first `warmupSteps` steps; the scale s stays.
 *
 * Why: from a random start every target angle is near 90°, where ArcFace's
 * cos(θ + 0.5) is already about −0.48, so at s = 64 the target logit sits ~31
 * below the others and the loss is dominated by the margin, not by the
 * features. On thin data (few images per identity) the network then settles
 * on a near-chance solution and stays there. Without a margin the first steps
 * pull embeddings and class rows together first; the margin then only tightens
 * clusters that already exist (README, "Small real datasets").
 *
 * Each step's head is an ordinary margin head with fixed numbers, so its
 * gradient is that head's gradient (the same sharded math and reference as any
 * fixed margin); the schedule itself has no gradient.
 */
import type { MarginSpec } from './margin.js';

/** Share of the warm-up done at `step` (counting from 1): 0 at step 1, 1 from step warmupSteps + 1 on; 1 throughout when warmupSteps is 0. */
export function marginWarmupProgress(step: number, warmupSteps: number): number {
  if (!Number.isFinite(step)) throw new RangeError(`margin warm-up: step must be a finite number, got ${step}`);
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) throw new RangeError(`margin warm-up: warmupSteps must be a non-negative integer, got ${warmupSteps}`);
  if (warmupSteps === 0) return 1;
  return Math.min(1, Math.max(0, (step - 1) / warmupSteps));
}

/** The margin head to use at `step`: `target` with m1, m2, m3 moved towards neutral by the share of warm-up still to go. */
export function marginAtStep(target: MarginSpec, step: number, warmupSteps: number): MarginSpec {
  const t = marginWarmupProgress(step, warmupSteps);
  if (t === 1) return target;
  return {
    ...target,
    m1: 1 + t * (target.m1 - 1),
    m2: t * target.m2,
    m3: t * target.m3,
  };
}

/** The per-step margin of a warm-up over `warmupSteps` steps; undefined when there is none (the fixed `target` throughout). */
export function marginSchedule(target: MarginSpec, warmupSteps: number): ((step: number) => MarginSpec) | undefined {
  marginWarmupProgress(1, warmupSteps); // validates warmupSteps now, not at the first step
  return warmupSteps > 0 ? (step) => marginAtStep(target, step, warmupSteps) : undefined;
}

/** Margin warm-up length in steps from the config's two exclusive keys (steps win when set, as for the LR warm-up). */
export function marginWarmupSteps(o: { marginWarmupSteps: number; marginWarmupEpochs: number; stepsPerEpoch: number }): number {
  return o.marginWarmupSteps || Math.round(o.marginWarmupEpochs * o.stepsPerEpoch);
}
