/** A job whose steps do nothing: exercises membership, the step clock and heartbeats. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobFactory } from '../job.js';

export const createJob: JobFactory = async (ctx) => {
  const delayMs = Number(ctx.config.stepDelayMs ?? 0);
  return {
    async step(step) {
      // Touch the data plane once so a broken ring shows up even in empty runs.
      if (step === 1) await ctx.ring.barrier();
      if (delayMs > 0) await sleep(delayMs);
      return {};
    },
  };
};
