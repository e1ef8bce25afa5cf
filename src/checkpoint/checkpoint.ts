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
import { existsSync, readFileSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../common/atomic-file.js';
import { fileSha256, fsyncDir, readTensorFile, writeTensorFile, type StoredTensor } from './tensor-file.js';

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

export async function writeCheckpointFile(dir: string, file: string, tensors: Record<string, StoredTensor>, metadata: Record<string, string>): Promise<FileEntry> {
  const r = await writeTensorFile(join(dir, file), tensors, metadata);
  return { file, sha256: r.sha256, bytes: r.bytes };
}

/** Writes manifest.json last, durably (temp file, fsync, rename, fsync of the directory): its presence is what marks a checkpoint complete. */
export function writeManifest(dir: string, m: Manifest): string {
  const path = join(dir, 'manifest.json');
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(path, JSON.stringify(m, null, 2));
  fsyncDir(dir);
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

/** Every file a manifest names, with the role it plays. */
function manifestFiles(m: Manifest): (FileEntry & { role: string })[] {
  return [{ ...m.backbone, role: 'backbone' }, ...m.shards.map((sh) => ({ ...sh, role: `shard ${sh.rank} (classes ${sh.classStart}..${sh.classStart + sh.classCount - 1})` }))];
}

/** Why a checkpoint cannot be used, file by file; empty when every file is present, of the right size and checksum, and the shards tile [0, numClasses). */
export function checkpointProblems(dir: string): string[] {
  let m: Manifest;
  try {
    m = readManifest(dir);
  } catch (e) {
    return [(e as Error).message];
  }
  const problems: string[] = [];
  for (const f of manifestFiles(m)) {
    const path = join(dir, f.file);
    if (!existsSync(path)) {
      problems.push(`${f.role}: ${f.file} is missing`);
      continue;
    }
    try {
      const got = fileSha256(path);
      if (got.bytes !== f.bytes) problems.push(`${f.role}: ${f.file} has ${got.bytes} bytes, the manifest says ${f.bytes} (truncated?)`);
      else if (got.sha256 !== f.sha256) problems.push(`${f.role}: ${f.file} checksum mismatch (file corrupt or replaced)`);
    } catch (e) {
      problems.push(`${f.role}: ${(e as Error).message}`);
    }
  }
  let next = 0;
  for (const sh of [...m.shards].sort((a, b) => a.classStart - b.classStart)) {
    if (sh.classStart !== next) problems.push(`shards do not tile the classes: a gap or overlap at class ${Math.min(next, sh.classStart)}`);
    next = sh.classStart + sh.classCount;
  }
  if (m.shards.length > 0 && next !== m.numClasses) problems.push(`shards cover classes up to ${next}, the manifest says ${m.numClasses}`);
  return problems;
}

const STEP_DIR = /^step-([0-9]+)$/;

/** Whether a directory name is one of stepDir's (`step-000120`). */
export function isStepDirName(name: string): boolean {
  return STEP_DIR.test(name);
}

/** The step directories under a run's `ckpt` root, newest first (complete or not). */
export function stepDirs(root: string): { dir: string; step: number }[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((n) => ({ n, m: STEP_DIR.exec(n) }))
    .filter((x) => x.m && statSync(join(root, x.n)).isDirectory())
    .map((x) => ({ dir: join(root, x.n), step: Number(x.m![1]) }))
    .sort((a, b) => b.step - a.step);
}

/**
 * The newest checkpoint under `root` whose every file verifies, and the ones
 * passed over on the way with their reasons (so a resume can log why it went
 * back further than the newest directory).
 */
export function newestVerifiedCheckpoint(
  root: string,
): { dir: string; step: number; rejected: { dir: string; problems: string[] }[] } | { dir: null; rejected: { dir: string; problems: string[] }[] } {
  const rejected: { dir: string; problems: string[] }[] = [];
  for (const s of stepDirs(root)) {
    const problems = checkpointProblems(s.dir);
    if (problems.length === 0) return { dir: s.dir, step: s.step, rejected };
    rejected.push({ dir: s.dir, problems });
  }
  return { dir: null, rejected };
}

/**
 * Keeps the newest `keep` complete checkpoints under `root` and deletes the
 * older ones (and incomplete directories older than the newest complete one:
 * the remains of an interrupted write). `keep` 0 keeps everything. Returns the
 * directories removed.
 */
export function pruneCheckpoints(root: string, keep: number): string[] {
  if (keep <= 0) return [];
  const removed: string[] = [];
  let complete = 0;
  for (const s of stepDirs(root)) {
    const isComplete = existsSync(join(s.dir, 'manifest.json'));
    if (isComplete) complete++;
    if ((isComplete && complete > keep) || (!isComplete && complete > 0)) {
      rmSync(s.dir, { recursive: true, force: true });
      removed.push(s.dir);
    }
  }
  return removed;
}
