/**
 * A backbone as a TensorFlow.js GraphModel: `model.json` (a TF GraphDef in
 * JSON, the format tfjs-converter writes) plus binary weight shards. It loads
 * with plain `tf.loadGraphModel`, no shardface needed (see ./load.ts for
 * exactly how, in Node and in a browser).
 *
 *   input      Placeholder `input`      [-1, S, S, 3] float32, NHWC RGB, (x/255 − 0.5)/0.5
 *   output     Identity    `embedding`  [-1, D] float32, the raw (unnormalised) embedding
 *
 * The graph is emitted by GraphRunner from the same network description the
 * trainer runs; BatchNorm uses the running statistics (inference mode).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetworkDescription } from '../models/module.js';
import { GraphBuilder, GraphRunner, type HostTensor, type NodeDef } from './graph-runner.js';

export const INPUT_NAME = 'input';
export const OUTPUT_NAME = 'embedding';
/** tfjs-converter's default shard size: small enough for browser caches. */
const DEFAULT_SHARD_BYTES = 4 * 1024 * 1024;

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
}

/** model.json of a graph model (tfjs `ModelJSON`). */
export interface GraphModelJson {
  format: 'graph-model';
  generatedBy: string;
  convertedBy: string;
  signature: {
    inputs: Record<string, TensorInfo>;
    outputs: Record<string, TensorInfo>;
  };
  modelTopology: { node: NodeDef[]; library: Record<string, never>; versions: { producer: number } };
  weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  userDefinedMetadata?: Record<string, unknown>;
}

interface TensorInfo {
  name: string;
  dtype: 'DT_FLOAT';
  tensorShape: { dim: { size: string }[] };
}

export interface GraphModelArtifacts {
  json: GraphModelJson;
  /** Weight shards in manifest order; their concatenation is every constant, in weight-spec order. */
  shards: { path: string; data: Uint8Array }[];
  /** Node count by op type (for the report and the tests). */
  ops: Record<string, number>;
}

export interface GraphExportOptions {
  shardBytes?: number;
  /** Extra metadata stored as model.json `userDefinedMetadata` (tfjs: `model.metadata`). */
  metadata?: Record<string, unknown>;
}

/** Builds the graph model of `desc` with the given tensor values (by tensor name). */
export function buildGraphModel(desc: NetworkDescription, tensors: ReadonlyMap<string, HostTensor>, opts: GraphExportOptions = {}): GraphModelArtifacts {
  const g = new GraphBuilder();
  const s = desc.inputSize;
  // tiny pools globally before its FC, so its graph takes any input size; the others fix S.
  const side = desc.anyInputSize ? -1 : s;
  const x = g.placeholder(INPUT_NAME, [-1, side, side, 3], [1, s, s, 3]);
  const y = desc.root.forward(new GraphRunner(g, tensors), x);
  const outShape = g.shape(y);
  if (outShape.length !== 2 || outShape[1] !== desc.embeddingSize) throw new Error(`graph export: output shape [${outShape}], expected [1, ${desc.embeddingSize}]`);
  g.op(OUTPUT_NAME, 'Identity', [y], outShape, { T: { type: 'DT_FLOAT' } });

  const { shards, paths } = shardWeights(
    g.consts.map((c) => c.data),
    opts.shardBytes ?? DEFAULT_SHARD_BYTES,
  );
  const ops: Record<string, number> = {};
  for (const n of g.nodes) ops[n.op] = (ops[n.op] ?? 0) + 1;
  const dim = (d: readonly number[]) => ({ dim: d.map((v) => ({ size: String(v) })) });
  const json: GraphModelJson = {
    format: 'graph-model',
    generatedBy: `shardface ${desc.name}`,
    convertedBy: 'shardface export (GraphRunner)',
    signature: {
      inputs: { [INPUT_NAME]: { name: `${INPUT_NAME}:0`, dtype: 'DT_FLOAT', tensorShape: dim([-1, side, side, 3]) } },
      outputs: { [OUTPUT_NAME]: { name: `${OUTPUT_NAME}:0`, dtype: 'DT_FLOAT', tensorShape: dim([-1, desc.embeddingSize]) } },
    },
    modelTopology: { node: g.nodes, library: {}, versions: { producer: 1 } },
    weightsManifest: [{ paths, weights: g.consts.map((c) => ({ name: c.name, shape: c.shape, dtype: c.dtype })) }],
    ...(opts.metadata ? { userDefinedMetadata: opts.metadata } : {}),
  };
  return { json, shards: shards.map((data, i) => ({ path: paths[i]!, data })), ops };
}

/** Concatenates the constants (little-endian, as typed arrays are on every supported platform) and cuts shards. */
function shardWeights(arrays: (Float32Array | Int32Array)[], shardBytes: number): { shards: Uint8Array[]; paths: string[] } {
  const total = arrays.reduce((a, d) => a + d.byteLength, 0);
  const all = new Uint8Array(total);
  let p = 0;
  for (const d of arrays) {
    all.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), p);
    p += d.byteLength;
  }
  const n = Math.max(1, Math.ceil(total / shardBytes));
  const shards = Array.from({ length: n }, (_, i) => all.subarray(i * shardBytes, Math.min(total, (i + 1) * shardBytes)));
  return { shards, paths: shards.map((_, i) => `group1-shard${i + 1}of${n}.bin`) };
}

/** Writes model.json and the shards into `dir` (model.json last, so a complete directory has it). */
export function writeGraphModel(dir: string, a: GraphModelArtifacts): string {
  mkdirSync(dir, { recursive: true });
  for (const s of a.shards) writeFileSync(join(dir, s.path), s.data);
  const path = join(dir, 'model.json');
  writeFileSync(path + '.tmp', JSON.stringify(a.json));
  renameSync(path + '.tmp', path);
  return path;
}
