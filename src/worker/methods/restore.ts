/**
 * The counterpart of a method's checkpoint(): reads a verified checkpoint
 * (checkpoint/checkpoint.ts layout) back into the live variables, so a
 * resumed run continues exactly where the saved one stood. Every file is read
 * against the manifest's SHA-256; a tensor that is missing or of another shape
 * stops the worker naming it.
 */
import { join } from 'node:path';
import { tf } from '../../ops/tf.js';
import type { Manifest } from '../../checkpoint/checkpoint.js';
import { rowsForRange } from '../../checkpoint/reslice.js';
import { readTensorFile, type StoredTensor } from '../../checkpoint/tensor-file.js';
import type { ClassRange } from '../../ops/class-range.js';
import type { ShardState } from '../../ops/row-optimizer.js';
import type { Backbone } from '../../models/index.js';
import type { BackboneOptimizer } from '../backbone-optimizer.js';

/** Where a resumed run starts from: a checkpoint directory that verified, and its manifest. */
export interface RestorePoint {
  dir: string;
  manifest: Manifest;
}

/** Replaces `v`'s value with the stored tensor's (the variable adopts the freshly read array). */
function assignStored(v: tf.Variable, t: StoredTensor | undefined, what: string): void {
  if (!t) throw new Error(`${what} is missing`);
  if (t.shape.length !== v.shape.length || t.shape.some((d, i) => d !== v.shape[i])) throw new Error(`${what} has shape [${t.shape.join(', ')}], this run's is [${v.shape.join(', ')}]`);
  if (!(t.data instanceof Float32Array)) throw new Error(`${what} is not float32`);
  const value = tf.tensor(t.data, v.shape, 'float32');
  v.assign(value);
  value.dispose();
}

const optimizerStep = (metadata: Record<string, string>, file: string) => stepCountOf(metadata, 'optimizerStep', file);

/** Where a network file keeps the trained backbone and its optimizer slots (DCQ: under `query.`, the inference network plain). */
export interface NetworkNames {
  backbonePrefix: string;
  optimizerPrefix: string;
}

const PLAIN: NetworkNames = { backbonePrefix: '', optimizerPrefix: 'optimizer.' };

/**
 * The backbone's parameters and BatchNorm statistics, the optimizer's slots
 * and step count, and `extra` variables saved in the same file (by their
 * stored names: the occlusion adversary, DCQ's key encoder).
 */
export function restoreNetwork(from: RestorePoint, backbone: Backbone, optimizer: BackboneOptimizer, extra: Map<string, tf.Variable> = new Map(), names: NetworkNames = PLAIN): Record<string, string> {
  const entry = from.manifest.backbone;
  const path = join(from.dir, entry.file);
  const { tensors, metadata } = readTensorFile(path, entry.sha256);
  if (metadata.optimizer !== optimizer.settings.kind) throw new Error(`${path}: saved with optimizer ${metadata.optimizer ?? '(none recorded)'}, this run uses ${optimizer.settings.kind}`);
  for (const [name, v] of backbone.state()) assignStored(v, tensors[names.backbonePrefix + name], `${path}: backbone tensor ${names.backbonePrefix + name}`);
  for (const [name, v] of extra) assignStored(v, tensors[name], `${path}: tensor ${name}`);
  for (const [name, v] of optimizer.state()) assignStored(v, tensors[names.optimizerPrefix + name], `${path}: optimizer slot ${names.optimizerPrefix + name}`);
  optimizer.stepCount = optimizerStep(metadata, path);
  return metadata;
}

/** An update count from a file's metadata (key `key`), or an error naming the file. */
export function stepCountOf(metadata: Record<string, string>, key: string, file: string): number {
  const n = Number(metadata[key]);
  if (metadata[key] === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`${file}: metadata ${key} ${JSON.stringify(metadata[key])} is not a step count`);
  return n;
}

/**
 * This rank's classifier rows with their optimizer slots and step: its own
 * shard, or with another worker count the rows of its new class range re-sliced
 * from the saved shards (checkpoint/reslice.ts).
 */
export function restoreShard(from: RestorePoint, range: ClassRange, state: ShardState): number[] {
  if (range.count === 0) return []; // more workers than classes: this rank owns no rows
  const got = rowsForRange(from.dir, from.manifest, range, state.dim);
  if (got.optimizer !== state.optimizer) throw new Error(`${from.dir}: classifier saved with optimizer ${got.optimizer}, this run uses ${state.optimizer}`);
  const slots = [
    ['weight', state.weight],
    ['momentum', state.momentum],
    ['expAvg', state.expAvg],
    ['expAvgSq', state.expAvgSq],
  ] as const;
  for (const [name, v] of slots)
    if (v) assignStored(v, got.rows[name] && { data: got.rows[name], shape: [range.count, state.dim] }, `${from.dir}: classifier ${name} of classes ${range.start}..${range.start + range.count - 1}`);
  state.step = got.optimizerStep;
  return got.from;
}
