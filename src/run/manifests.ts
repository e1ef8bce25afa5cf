/**
 * The coordinator's side of a checkpoint: workers report each file they wrote
 * (with its checksum); once the backbone and every shard of a step are in, the
 * manifest is written last, which is what makes the checkpoint loadable.
 */
import { dirname } from 'node:path';
import { pruneCheckpoints, writeManifest, type FileEntry, type Manifest, type ShardEntry } from '../checkpoint/checkpoint.js';

/** The fields of a worker's `checkpoint-file` event. */
export type CheckpointFileEvent = { kind: 'shard' | 'backbone'; step: number; dir: string; rank: number; classStart: number; classCount: number; name: string } & FileEntry;

/** What a manifest holds beyond the files: fixed per run, plus the job-wide loss state at writing time. */
export interface ManifestContext {
  world: number;
  numClasses: number;
  embeddingSize: number;
  stepsPerEpoch: number;
  config: Record<string, unknown>;
  lossState: () => Record<string, number>;
  /** How many complete checkpoints to keep (0 = all). */
  keep: number;
}

export class CheckpointManifests {
  private readonly pending = new Map<number, { dir: string; backbone?: FileEntry & { name: string }; shards: ShardEntry[] }>();

  constructor(private readonly ctx: ManifestContext) {}

  /** Forgets the files of checkpoints not yet complete: after a restart their steps are redone and their files written again. */
  dropPending(): void {
    this.pending.clear();
  }

  /**
   * Records one written file; when it completes a checkpoint, writes the
   * manifest, prunes checkpoints beyond `keep` and returns the directory and
   * what was removed.
   */
  onFile(f: CheckpointFileEvent): { dir: string; removed: string[] } | null {
    const p = this.pending.get(f.step) ?? { dir: f.dir, shards: [] };
    this.pending.set(f.step, p);
    if (f.kind === 'backbone') p.backbone = { file: f.file, sha256: f.sha256, bytes: f.bytes, name: f.name };
    else p.shards.push({ rank: f.rank, classStart: f.classStart, classCount: f.classCount, file: f.file, sha256: f.sha256, bytes: f.bytes });
    if (!p.backbone || p.shards.length < this.ctx.world) return null;
    const lossState = this.ctx.lossState();
    const manifest: Manifest = {
      format: 'shardface-checkpoint',
      version: 1,
      step: f.step,
      epoch: f.step / this.ctx.stepsPerEpoch,
      world: this.ctx.world,
      numClasses: this.ctx.numClasses,
      embeddingSize: this.ctx.embeddingSize,
      backbone: p.backbone,
      shards: p.shards.sort((a, b) => a.rank - b.rank),
      config: this.ctx.config,
      ...(Object.keys(lossState).length > 0 ? { lossState } : {}),
      createdAt: new Date().toISOString(),
    };
    this.pending.delete(f.step);
    writeManifest(p.dir, manifest);
    return { dir: p.dir, removed: pruneCheckpoints(dirname(p.dir), this.ctx.keep) };
  }
}
