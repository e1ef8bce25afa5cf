/**
 * Writes a method's checkpoint content into the step's directory
 * (checkpoint/checkpoint.ts layout) and announces each file to the
 * coordinator, which writes the manifest once all are in.
 */
import { stepDir, writeCheckpointFile } from '../../checkpoint/checkpoint.js';
import type { TrainConfig } from '../../config/schema.js';
import type { BackboneOptimizer } from '../backbone-optimizer.js';
import type { WorkerContext } from '../job.js';
import type { CheckpointContent, TrainJobConfig } from './method.js';

/** The metadata every method's network file carries: what loads it (backbone, sizes) and where its optimizer stood. */
export function networkMeta(cfg: TrainConfig, optimizer: BackboneOptimizer): Record<string, string> {
  return {
    backbone: cfg.backbone,
    embeddingSize: String(cfg.embeddingSize),
    imageSize: String(cfg.imageSize),
    optimizer: optimizer.settings.kind,
    optimizerStep: String(optimizer.stepCount),
  };
}

export async function writeMethodCheckpoint(ctx: WorkerContext, cfg: TrainJobConfig, step: number, epoch: number, content: CheckpointContent): Promise<void> {
  const dir = stepDir(`${cfg.runDir}/ckpt`, step);
  const meta = { step: String(step), epoch: String(epoch), rank: String(ctx.rank), world: String(ctx.world) };
  const { shard, network } = content;
  const s = await writeCheckpointFile(dir, shard.file, shard.tensors, { ...meta, ...shard.meta });
  await ctx.emit('checkpoint-file', { kind: 'shard', step, dir, rank: ctx.rank, classStart: ctx.classRange.start, classCount: ctx.classRange.count, ...shard.announce, ...s });
  if (!network) return;
  const b = await writeCheckpointFile(dir, network.file, network.tensors, { ...meta, ...network.meta });
  await ctx.emit('checkpoint-file', { kind: 'backbone', step, dir, rank: 0, name: cfg.backbone, ...b });
}
