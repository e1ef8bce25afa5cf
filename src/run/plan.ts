/** Everything a training run derives from its config, checked before any process starts. */
import { resolve, join } from 'node:path';
import { ConfigError, configWarnings, trainFacts } from '../config/index.js';
import type { TrainConfig } from '../config/schema.js';

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
}

export function planTraining(config: TrainConfig, now = new Date()): TrainPlan {
  const f = trainFacts(config);
  if (f.stepsPerEpoch < 1)
    throw new ConfigError(`batch: workers × batch = ${f.globalBatch} images per step, but the training set has only ${f.trainImages}`, 'batch');
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runDir = resolve(config.runDir || join('runs', stamp));
  return { config, trainImages: f.trainImages, numClasses: f.numClasses, stepsPerEpoch: f.stepsPerEpoch, steps: f.totalSteps, epochs: f.totalSteps / f.stepsPerEpoch, runDir, warnings: configWarnings(config) };
}
