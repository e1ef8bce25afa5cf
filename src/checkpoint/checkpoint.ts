/**
 * Checkpoint layout (a directory per step):
 *
 *   step-000120/
 *     classifier-shard-<rank>.safetensors   rows [start, start+count) + optimizer state
 *     backbone.safetensors                  parameters, BN statistics, optimizer state (rank 0)
 *     manifest.json                         written LAST by the coordinator, with checksums
 *
 * Each shard records its class range, so a resume with another worker count
 * can re-slice rows; a directory without manifest.json is incomplete and is
 * never loaded.
 */
import { existsSync, readFileSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readTensorFile, writeTensorFile, type StoredTensor } from './tensor-file.js';

export interface FileEntry {
  file: string;
  sha256: string;
  bytes: number;
}

export interface ShardEntry extends FileEntry {
  rank: number;
  classStart: number;
  classCount: number;
}

export interface Manifest {
  format: 'shardface-checkpoint';
  version: 1;
  step: number;
  epoch: number;
  world: number;
  numClasses: number;
  embeddingSize: number;
  backbone: FileEntry & { name: string };
  shards: ShardEntry[];
  config: Record<string, unknown>;
  /** Job-wide loss state kept by the coordinator (CurricularFace: { curricularT }, the t after `step`); absent when none. */
  lossState?: Record<string, number>;
  createdAt: string;
}

export function stepDir(root: string, step: number): string {
  return join(root, `step-${String(step).padStart(6, '0')}`);
}

export function shardFile(rank: number): string {
  return `classifier-shard-${rank}.safetensors`;
}

export const BACKBONE_FILE = 'backbone.safetensors';

export function writeCheckpointFile(dir: string, file: string, tensors: Record<string, StoredTensor>, metadata: Record<string, string>): FileEntry {
  const r = writeTensorFile(join(dir, file), tensors, metadata);
  return { file, sha256: r.sha256, bytes: r.bytes };
}

export function writeManifest(dir: string, m: Manifest): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'manifest.json');
  writeFileSync(path + '.tmp', JSON.stringify(m, null, 2));
  renameSync(path + '.tmp', path);
  return path;
}

/** Reads a complete checkpoint directory's manifest, or throws saying why it cannot be used. */
export function readManifest(dir: string): Manifest {
  const path = join(dir, 'manifest.json');
  if (!existsSync(path)) throw new Error(`${dir} is not a complete checkpoint (no manifest.json)`);
  const m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  if (m.format !== 'shardface-checkpoint') throw new Error(`${path}: not a shardface checkpoint manifest`);
  return m;
}

/** Loads the backbone tensors of a checkpoint, verifying the checksum. */
export function loadBackboneTensors(dir: string): { manifest: Manifest; tensors: Record<string, StoredTensor> } {
  const manifest = readManifest(dir);
  const { tensors } = readTensorFile(join(dir, manifest.backbone.file), manifest.backbone.sha256);
  return { manifest, tensors };
}
