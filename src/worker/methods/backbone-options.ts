/** The backbone's construction options from the training config (the loop's backbone, DCQ's key encoder). */
import type { BackboneOptions } from '../../models/index.js';
import type { TrainConfig } from '../../config/schema.js';

export function backboneOptions(cfg: Pick<TrainConfig, 'seed' | 'embeddingSize' | 'imageSize' | 'backbone' | 'backboneNorm'>): BackboneOptions {
  return { seed: cfg.seed, embeddingSize: cfg.embeddingSize, inputSize: cfg.imageSize, ...(cfg.backbone === 'tiny' ? { norm: cfg.backboneNorm } : {}) };
}
