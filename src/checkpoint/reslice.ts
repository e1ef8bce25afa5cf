/**
 * A classifier shard's rows for a class range, read from a checkpoint
 * written with any number of workers: the saved shards that overlap the
 * range give their rows (weight and each optimizer slot), in class order. A
 * resume with another worker count takes each new rank's range this way; with
 * the same count it is the rank's own file, taken as is.
 */
import { join } from 'node:path';
import type { Manifest } from './checkpoint.js';
import { readTensorFile } from './tensor-file.js';
import type { ClassRange } from '../ops/class-range.js';

/** The per-class tensors a classifier shard may hold. */
export const SHARD_ROW_TENSORS = ['weight', 'momentum', 'expAvg', 'expAvgSq'] as const;
export type ShardRowTensor = (typeof SHARD_ROW_TENSORS)[number];

export interface RangeRows {
  /** count×dim, row-major, for each tensor the shards hold. */
  rows: Partial<Record<ShardRowTensor, Float32Array>>;
  /** The shards' optimizer ('sgd' | 'adamw') and update count, equal in every shard read. */
  optimizer: string;
  optimizerStep: number;
  /** The saved shards read (their ranks). */
  from: number[];
}

/** Rows [range.start, range.start + range.count) of every row tensor, each shard's SHA-256 checked against the manifest. */
export function rowsForRange(dir: string, manifest: Manifest, range: ClassRange, dim: number): RangeRows {
  const end = range.start + range.count;
  const overlapping = [...manifest.shards].sort((a, b) => a.classStart - b.classStart).filter((s) => s.classStart < end && s.classStart + s.classCount > range.start);
  const rows: Partial<Record<ShardRowTensor, Float32Array>> = {};
  let optimizer: string | null = null;
  let optimizerStep = 0;
  let covered = 0;
  for (const s of overlapping) {
    const path = join(dir, s.file);
    const { tensors, metadata } = readTensorFile(path, s.sha256);
    const step = Number(metadata.optimizerStep);
    if (!Number.isSafeInteger(step) || step < 0) throw new Error(`${path}: metadata optimizerStep ${JSON.stringify(metadata.optimizerStep)} is not a step count`);
    if (optimizer === null) [optimizer, optimizerStep] = [metadata.optimizer ?? '', step];
    else if (metadata.optimizer !== optimizer || step !== optimizerStep)
      throw new Error(`${path}: optimizer ${metadata.optimizer} at update ${step}, another shard of the same checkpoint has ${optimizer} at update ${optimizerStep}`);
    const from = Math.max(range.start, s.classStart);
    const to = Math.min(end, s.classStart + s.classCount);
    for (const name of SHARD_ROW_TENSORS) {
      const t = tensors[name];
      if (!t) continue;
      if (!(t.data instanceof Float32Array) || t.shape[0] !== s.classCount || t.shape[1] !== dim)
        throw new Error(`${path}: ${name} is ${JSON.stringify(t.shape)}, expected float32 [${s.classCount}, ${dim}]`);
      // the rank's own whole shard: taken without a copy
      if (overlapping.length === 1 && s.classStart === range.start && s.classCount === range.count) {
        rows[name] = t.data;
        continue;
      }
      const out = (rows[name] ??= new Float32Array(range.count * dim));
      out.set(t.data.subarray((from - s.classStart) * dim, (to - s.classStart) * dim), (from - range.start) * dim);
    }
    covered += to - from;
  }
  if (covered !== range.count) throw new Error(`${dir}: the shards cover ${covered} of the ${range.count} classes ${range.start}..${end - 1}`);
  return { rows, optimizer: optimizer ?? '', optimizerStep, from: overlapping.map((s) => s.rank) };
}
