/**
 * A trained backbone back from a checkpoint: find the step directory, check
 * the manifest and the file checksum, build the same architecture from the
 * manifest's config and assign every persistent tensor (parameters and
 * BatchNorm running statistics) from backbone.safetensors.
 */
import { tf } from '../ops/tf.js';
import { createBackbone, isBackboneName, BACKBONE_NAMES, type Backbone } from '../models/index.js';
import { OcclusionNet, SEGMENTATION_FIRST_WEIGHT, segmentationGated } from '../models/occlusion-nets.js';
import { loadBackboneTensors, type Manifest } from '../checkpoint/checkpoint.js';
import { CheckpointError, resolveCheckpointDir } from './checkpoint-dir.js';

export { CheckpointError, resolveCheckpointDir };

export interface LoadBackboneOptions {
  /**
   * Wrap the backbone in the run's occlusion segmentation head (the optional inference of
   * docs/methods.md#adversarial-training, models/occlusion-nets.ts segmentationGated): the
   * checkpoint must come from an `occlusion: adversarial` run.
   */
  segGate?: boolean;
}

/** Builds the checkpoint's backbone and loads its tensors (checksum verified). */
export async function loadBackboneFromCheckpoint(dir: string, opts: LoadBackboneOptions = {}): Promise<{ backbone: Backbone; manifest: Manifest; dir: string }> {
  const stepDir = resolveCheckpointDir(dir);
  let loaded: ReturnType<typeof loadBackboneTensors>;
  try {
    loaded = loadBackboneTensors(stepDir);
  } catch (e) {
    throw new CheckpointError(`cannot load the backbone of ${stepDir}: ${(e as Error).message}`);
  }
  const { manifest, tensors } = loaded;
  const cfg = manifest.config as { backbone?: string; imageSize?: number; seed?: number; embeddingSize?: number; backboneNorm?: 'batch' | 'none' };
  const name = manifest.backbone?.name ?? cfg.backbone;
  if (!name || !isBackboneName(name)) throw new CheckpointError(`${stepDir}: the manifest names backbone ${JSON.stringify(name)}, not one of ${BACKBONE_NAMES.join(', ')}`);
  const embeddingSize = manifest.embeddingSize ?? cfg.embeddingSize;
  const inputSize = cfg.imageSize;
  if (!Number.isInteger(embeddingSize) || !Number.isInteger(inputSize)) throw new CheckpointError(`${stepDir}: the manifest lacks embeddingSize or config.imageSize`);
  // tiny: the normalisation the run trained with (its BatchNorm tensors exist only with 'batch')
  const norm = name === 'tiny' && cfg.backboneNorm ? { norm: cfg.backboneNorm } : {};
  const backbone = createBackbone(name, { seed: Number.isInteger(cfg.seed) ? cfg.seed! : 0, embeddingSize, inputSize, ...norm });
  try {
    for (const [key, v] of backbone.state()) {
      const t = tensors[key];
      if (!t) throw new CheckpointError(`${stepDir}: backbone.safetensors has no tensor ${key} (saved by another architecture?)`);
      if (!(t.data instanceof Float32Array)) throw new CheckpointError(`${stepDir}: tensor ${key} is ${t.data.constructor.name}, expected float32`);
      if (t.shape.length !== v.shape.length || t.shape.some((s, i) => s !== v.shape[i]))
        throw new CheckpointError(`${stepDir}: tensor ${key} has shape [${t.shape}], the ${name} backbone expects [${v.shape}]`);
      const value = tf.tensor(t.data, v.shape, 'float32');
      v.assign(value);
      value.dispose();
    }
  } catch (e) {
    backbone.dispose();
    throw e;
  }
  if (!opts.segGate) return { backbone, manifest, dir: stepDir };
  const first = tensors[SEGMENTATION_FIRST_WEIGHT];
  if (!first) {
    backbone.dispose();
    throw new CheckpointError(`${stepDir}: no occlusion segmentation head in backbone.safetensors; --seg-gate needs a checkpoint of an occlusion: adversarial run`);
  }
  const seg = OcclusionNet.segmentation({ channels: backbone.featureShape()[2], width: first.shape[3]!, seed: 0 });
  try {
    seg.load((name) => {
      const t = tensors[name];
      return t?.data instanceof Float32Array ? t.data : undefined;
    });
  } catch (e) {
    backbone.dispose();
    seg.dispose();
    throw new CheckpointError(`${stepDir}: ${(e as Error).message}`);
  }
  return { backbone: segmentationGated(backbone, seg), manifest, dir: stepDir };
}
