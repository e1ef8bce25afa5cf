/**
 * The whole classifier of a sharded checkpoint as one safetensors file: each
 * per-class tensor of the shards (weight and its optimizer slots), rows
 * concatenated in class order. Streams shard by shard, so only one shard is in
 * memory at a time.
 */
import { join } from 'node:path';
import { readManifest, type Manifest, type ShardEntry } from './checkpoint.js';
import { readTensorFile, writeTensorFile, type PiecewiseTensor, type StoredTensor } from './tensor-file.js';

/** The per-class tensors a classifier shard may hold (rows = its classCount). */
const ROW_TENSORS = ['weight', 'momentum', 'expAvg', 'expAvgSq'] as const;

export interface MergeResult {
  out: string;
  sha256: string;
  bytes: number;
  numClasses: number;
  embeddingSize: number;
  tensors: string[];
}

export async function mergeClassifier(dir: string, out: string): Promise<MergeResult> {
  const m = readManifest(dir);
  const shards = orderedShards(m);
  const first = readTensorFile(join(dir, shards[0]!.file), shards[0]!.sha256);
  const names = ROW_TENSORS.filter((n) => first.tensors[n]);
  if (!names.includes('weight')) throw new Error(`${dir}: shard ${shards[0]!.rank} holds no classifier weight (a DCQ checkpoint has a class queue, not a classifier)`);
  const dim = first.tensors.weight!.shape[1]!;
  const tensors: Record<string, PiecewiseTensor> = {};
  for (const name of names)
    tensors[name] = {
      dtype: 'F32',
      shape: [m.numClasses, dim],
      pieces: () => shardRows(dir, shards, name, dim, first.tensors),
    };
  const r = await writeTensorFile(out, tensors, { format: 'shardface-classifier', step: String(m.step), numClasses: String(m.numClasses), embeddingSize: String(dim), sourceWorld: String(m.world) });
  return { out, ...r, numClasses: m.numClasses, embeddingSize: dim, tensors: names };
}

function orderedShards(m: Manifest): ShardEntry[] {
  const shards = [...m.shards].sort((a, b) => a.classStart - b.classStart);
  if (shards.length === 0) throw new Error('the checkpoint has no classifier shards');
  let next = 0;
  for (const s of shards) {
    if (s.classStart !== next) throw new Error(`shards do not tile the classes: class ${next} is ${s.classStart > next ? 'in no shard' : 'in two shards'}`);
    next += s.classCount;
  }
  if (next !== m.numClasses) throw new Error(`shards cover ${next} classes, the manifest says ${m.numClasses}`);
  return shards;
}

function* shardRows(dir: string, shards: ShardEntry[], name: string, dim: number, firstTensors: Record<string, StoredTensor>): Iterable<Float32Array> {
  for (const [i, s] of shards.entries()) {
    const t = i === 0 ? firstTensors[name] : readTensorFile(join(dir, s.file), s.sha256, (n) => n === name).tensors[name];
    if (!t) throw new Error(`shard ${s.rank} (${s.file}) has no ${name} tensor`);
    if (t.shape[0] !== s.classCount || t.shape[1] !== dim) throw new Error(`shard ${s.rank} (${s.file}): ${name} is ${JSON.stringify(t.shape)}, expected [${s.classCount}, ${dim}]`);
    yield t.data as Float32Array;
  }
}
