/**
 * The cross-key checks of the loss heads (loss, magface.*, curricular.*) and
 * of distillation (teacher, distill, distillWeight, initFrom), run with the
 * other checks before any process starts. A setting that would be ignored is
 * an error, not a silent no-op.
 */
import { CheckpointError, resolveCheckpointDir } from '../eval/checkpoint-dir.js';
import { readManifest, type Manifest } from '../checkpoint/checkpoint.js';
import { MagFaceSpecError, validateMagFace, type MagFaceSpec } from '../ops/magface.js';
import { CONFIG_KEYS, type TrainConfig } from './schema.js';

type Fail = (key: string, msg: string) => never;

/** `fail(key, msg)` throws the ConfigError; `explicit(key)` says whether the user set the key to something other than its default. */
export function checkLossAndDistillation(cfg: TrainConfig, fail: Fail, explicit: (key: string) => boolean): void {
  const groupSet = (group: string) => Object.keys(CONFIG_KEYS).find((k) => k.startsWith(`${group}.`) && explicit(k));
  if (cfg.loss === 'margin') {
    for (const g of ['magface', 'curricular']) {
      const k = groupSet(g);
      if (k) fail(k, `only used with loss ${g} (loss is "margin")`);
    }
  } else {
    if (cfg.classifier === 'dcq') fail('loss', `loss ${cfg.loss} is a head of the sharded classifier (classifier fc); DCQ has its own queue softmax`);
    if (cfg.margin.type !== 'arcface') fail('margin.type', `loss ${cfg.loss} uses the legacy ArcFace target, so margin.type must be "arcface" (got "${cfg.margin.type}")`);
    if (explicit('marginGrad')) fail('marginGrad', `does not apply to loss ${cfg.loss}, whose target gradient is the analytic one of the legacy head (docs/methods.md#legacy-closed-form)`);
    const other = cfg.loss === 'magface' ? 'curricular' : 'magface';
    const k = groupSet(other);
    if (k) fail(k, `only used with loss ${other} (loss is "${cfg.loss}")`);
  }
  if (cfg.loss === 'magface') {
    if (explicit('margin.m2')) fail('margin.m2', 'loss magface takes its margin from the magnitude: m(a) runs from magface.lm to magface.um; leave margin.m2 unset');
    const spec: MagFaceSpec = { s: cfg.margin.s, ...cfg.magface };
    try {
      validateMagFace(spec, { s: 'margin.s', la: 'magface.la', ua: 'magface.ua', lm: 'magface.lm', um: 'magface.um', lambdaG: 'magface.lambdaG', easyMargin: 'magface.easyMargin' });
    } catch (e) {
      if (!(e instanceof MagFaceSpecError)) throw e;
      const key = e.field === 's' ? 'margin.s' : `magface.${e.field}`;
      fail(key, e.message.slice(e.message.indexOf(': ') + 2));
    }
  }

  if (cfg.teacher === 'none') {
    for (const k of ['distill', 'distillWeight']) if (explicit(k)) fail(k, 'only used with a teacher (teacher is "none")');
  } else {
    if (cfg.occlusion !== 'none') fail('teacher', `distillation is not supported together with occlusion ${cfg.occlusion}`);
    const m = checkpointManifest('teacher', cfg.teacher, fail);
    const imageSize = (m.config as { imageSize?: unknown }).imageSize;
    if (m.embeddingSize !== cfg.embeddingSize)
      fail('teacher', `the teacher's embeddings have ${m.embeddingSize} values, this run's embeddingSize is ${cfg.embeddingSize}; distillation compares them value by value`);
    if (imageSize !== cfg.imageSize) fail('teacher', `the teacher was trained on ${String(imageSize)}×${String(imageSize)} images, this run uses imageSize ${cfg.imageSize}; both see the same batch`);
  }
  if (cfg.initFrom !== 'none') {
    const m = checkpointManifest('initFrom', cfg.initFrom, fail);
    const name = m.backbone?.name ?? (m.config as { backbone?: string }).backbone;
    if (name !== cfg.backbone) fail('initFrom', `the checkpoint holds a ${String(name)} backbone, this run trains ${cfg.backbone}`);
    if (m.embeddingSize !== cfg.embeddingSize) fail('initFrom', `the checkpoint's embeddingSize is ${m.embeddingSize}, this run's ${cfg.embeddingSize}`);
    const norm = (m.config as { backboneNorm?: string }).backboneNorm ?? 'batch';
    if (cfg.backbone === 'tiny' && norm !== cfg.backboneNorm) fail('initFrom', `the checkpoint's tiny backbone has backboneNorm ${norm}, this run ${cfg.backboneNorm}`);
  }
}

function checkpointManifest(key: string, path: string, fail: Fail): Manifest {
  try {
    return readManifest(resolveCheckpointDir(path));
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof Error) return fail(key, (e as Error).message);
    throw e;
  }
}
