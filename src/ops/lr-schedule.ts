/**
 * Learning rate per iteration (docs/methods.md#learning-rate-schedule, arcface_torch PolyScheduler): linear
 * warm-up from 0 to `base` over `warmupSteps`, then polynomial decay (power 1 =
 * linear to 0 at `totalSteps`). Stepped per iteration, `step` counting from 1.
 */
export interface LrSchedule {
  base: number;
  warmupSteps: number;
  totalSteps: number;
  power?: number;
}

export function learningRate(step: number, s: LrSchedule): number {
  const power = s.power ?? 1;
  if (s.warmupSteps > 0 && step <= s.warmupSteps) return (s.base * step) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, Math.max(0, (step - s.warmupSteps) / span));
  return s.base * Math.pow(1 - progress, power);
}
