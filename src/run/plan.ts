/** Everything a training run derives from its config, checked before any process starts. */
import { resolve, join } from 'node:path';
import { ConfigError, configWarnings, trainFacts } from '../config/index.js';
import type { TrainConfig } from '../config/schema.js';
import { DEFAULT_CHUNK_BYTES } from '../collectives/ring.js';
import type { ResumePoint } from './resume.js';

/**
 * The largest frame a training job legitimately sends: a ring chunk (bucketed
 * gradients and gathers are cut into chunks of at most DEFAULT_CHUNK_BYTES,
 * whatever bucketMb is), or a per-row float32 tensor of the classifier
 * exchange over the global batch (doubled with occlusion adversarial, which
 * classifies clean and masked rows), plus room for a header.
 */
export function largestFrameBytes(config: TrainConfig): number {
  const rows = config.workers * config.batch * (config.occlusion === 'adversarial' ? 2 : 1);
  return Math.max(DEFAULT_CHUNK_BYTES, 4 * rows) + (64 << 10);
}

export interface TrainPlan {
  config: TrainConfig;
  trainImages: number;
  numClasses: number;
  stepsPerEpoch: number;
  steps: number;
  epochs: number;
  runDir: string;
  /** Legal but probably unintended settings (configWarnings), logged as warnings when the run starts. */
  warnings: string[];
  /** A resumed run (`train --resume`, resume.ts): the checkpoint it continues from. */
  resume?: ResumePoint;
}

export function planTraining(config: TrainConfig, now = new Date()): TrainPlan {
  const f = trainFacts(config);
  if (f.stepsPerEpoch < 1) throw new ConfigError(`batch: workers × batch = ${f.globalBatch} images per step, but the training set has only ${f.trainImages}`, 'batch');
  const needed = largestFrameBytes(config);
  if (config.maxFrameMb * 2 ** 20 < needed)
    throw new ConfigError(`maxFrameMb: ${config.maxFrameMb} MiB is below the largest frame this job sends (${(needed / 2 ** 20).toFixed(2)} MiB); raise it`, 'maxFrameMb');
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runDir = resolve(config.runDir || join('runs', stamp));
  return {
    config,
    trainImages: f.trainImages,
    numClasses: f.numClasses,
    stepsPerEpoch: f.stepsPerEpoch,
    steps: f.totalSteps,
    epochs: f.totalSteps / f.stepsPerEpoch,
    runDir,
    warnings: configWarnings(config),
  };
}
