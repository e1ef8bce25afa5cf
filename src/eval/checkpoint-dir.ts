/**
 * Which checkpoint step directory a user means (no TensorFlow.js here, so a
 * command can check its arguments before loading it).
 */
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { isStepDirName, stepDirs } from '../checkpoint/checkpoint.js';

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/**
 * The step directory that `dir` names: `dir` itself when it holds a
 * manifest.json; otherwise, when it holds step-N directories (a run's `ckpt`),
 * the highest step whose manifest was written (incomplete ones are skipped);
 * a run directory holding `ckpt/` is accepted too.
 */
export function resolveCheckpointDir(dir: string): string {
  const d = resolve(dir);
  if (!existsSync(d)) throw new CheckpointError(`checkpoint ${dir} does not exist`);
  if (!statSync(d).isDirectory()) throw new CheckpointError(`checkpoint ${dir} is not a directory (give RUN_DIR/ckpt or RUN_DIR/ckpt/step-N)`);
  if (existsSync(join(d, 'manifest.json'))) return d;
  const steps = stepDirs(d);
  if (steps.length === 0) {
    if (isStepDirName(basename(d))) throw new CheckpointError(`${dir} is not a complete checkpoint (no manifest.json)`);
    if (existsSync(join(d, 'ckpt'))) return resolveCheckpointDir(join(d, 'ckpt'));
    throw new CheckpointError(`${dir} holds no checkpoint (neither manifest.json nor step-N directories)`);
  }
  const complete = steps.find((s) => existsSync(join(s.dir, 'manifest.json')));
  if (!complete) throw new CheckpointError(`${dir}: none of its ${steps.length} step directories is complete (no manifest.json; training interrupted while writing?)`);
  return complete.dir;
}
