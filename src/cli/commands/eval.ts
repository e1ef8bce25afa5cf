/**
 * `shardface eval --checkpoint RUN_DIR/ckpt[/step-N] (--bin FILE | --pairs FILE --images DIR | --pair-list FILE)`:
 * verification accuracy of a checkpoint's backbone (docs/methods.md#ten-fold-accuracy), printed as
 * one JSON line:
 *
 *   {"accuracy":…, "accuracy_std":…, "threshold":…, "tar_at_far":{"1e-3":…|null, "1e-4":…|null},
 *    "pairs":…, "source":"bin:/…", "checkpoint":"/…/step-000120", "step":120}
 *
 * `threshold` is the mean of the ten folds' chosen squared-distance
 * thresholds; TAR@FAR is null where there are fewer than 1/FAR negative pairs.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { BACKENDS } from '../../config/schema.js';
import { ImageInputError, loadVerificationSet, VerificationSetError, type VerificationSpec } from '../../eval/verification-set.js';
import { BinPackError } from '../../eval/bin-pack.js';
import { PairFileError } from '../../eval/pair-files.js';
import { CheckpointError, resolveCheckpointDir } from '../../eval/checkpoint-dir.js';
import type { BackendChoice } from '../../ops/backend.js';
import type { CropBox } from '../../data/decode.js';
import type { OccluderKind } from '../../eval/occluders.js'; // --- occlusion

const OPTIONS: Record<string, OptionSpec> = {
  checkpoint: { kind: 'string', help: 'RUN_DIR/ckpt (latest complete step) or RUN_DIR/ckpt/step-N' },
  bin: { kind: 'string', help: 'insightface .bin pack (pickle of encoded images and issame labels)' },
  pairs: { kind: 'string', help: 'LFW-style pairs.txt (with --images)' },
  images: { kind: 'string', help: 'image folder of --pairs: DIR/name/name_%04d.jpg (or .jpeg/.png/.pgm)' },
  'pair-list': { kind: 'string', help: 'pair list: pathA<TAB>pathB<TAB>1|0 per line, paths relative to the list' },
  'image-size': { kind: 'int', help: "decode images to S×S (default: the checkpoint's imageSize)" },
  crop: { kind: 'string', default: 'centre', help: 'centre (short side resized, centre square kept) or LEFT,TOP,WIDTH,HEIGHT as fractions of the image' },
  batch: { kind: 'int', default: 64, help: 'images per forward pass' },
  backend: { kind: 'string', default: 'auto', help: BACKENDS.join(' | ') },
  threads: { kind: 'int', help: 'threads for native CPU kernels (default: all cores)' },
  'roc-csv': { kind: 'string', help: 'write the ROC (fpr,tpr,thresholds) to this CSV file' },
  occlude: { kind: 'string', help: 'draw synthetic occluders on every image first: eyes | mouth | half | random (src/eval/occluders.ts)' }, // --- occlusion
  'occlude-seed': { kind: 'int', default: 0, help: 'seed of the occluders (which half, colours, the random block), per image' }, // --- occlusion
  'seg-gate': {
    kind: 'boolean',
    default: false,
    help: "occlusion adversarial checkpoints: scale each feature-map cell by 1 − σ(S(f)), the segmentation head's occlusion probability, before the head (docs/methods.md#adversarial-training inference)",
  }, // --- occlusion
  help: { kind: 'boolean', default: false, help: 'show this help' },
};

export async function run(argv: string[]): Promise<number> {
  const { options: o } = parseArgs(argv, OPTIONS);
  if (o.help) {
    console.log(usage('eval', OPTIONS));
    return 0;
  }
  const checkpoint = o.checkpoint as string | undefined;
  if (!checkpoint) throw new UsageError('eval needs --checkpoint RUN_DIR/ckpt or RUN_DIR/ckpt/step-N');
  const spec = sourceSpec(o);
  const crop = parseCrop(o.crop as string);
  const backend = o.backend as string;
  if (!(BACKENDS as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(backend)}`);
  const batch = o.batch as number;
  if (batch < 1) throw new UsageError(`--batch must be ≥ 1, got ${batch}`);
  const imageSizeOpt = o['image-size'] as number | undefined;
  // --- occlusion: --occlude KIND
  const occlude = o.occlude as string | undefined;
  if (occlude !== undefined && !['eyes', 'mouth', 'half', 'random'].includes(occlude)) throw new UsageError(`--occlude must be one of eyes, mouth, half, random, got ${JSON.stringify(occlude)}`);
  // --- end occlusion
  if (imageSizeOpt !== undefined && imageSizeOpt < 1) throw new UsageError(`--image-size must be ≥ 1, got ${imageSizeOpt}`);

  try {
    // everything that can fail on the inputs fails before TensorFlow.js starts
    resolveCheckpointDir(checkpoint);
    const set = loadVerificationSet(spec);
    // TensorFlow.js only now, so usage and input errors answer at once
    const [{ initBackend }, { loadBackboneFromCheckpoint }, { rocCsv, verifySet }, { tf }] = await Promise.all([
      import('../../ops/backend.js'),
      import('../../eval/load-backbone.js'),
      import('../../eval/verify-set.js'),
      import('../../ops/tf.js'),
    ]);
    const info = await initBackend(backend as BackendChoice, { threads: o.threads as number | undefined });
    const segGate = o['seg-gate'] as boolean; // --- occlusion
    const { backbone, manifest, dir } = await loadBackboneFromCheckpoint(checkpoint, { segGate });
    const imageSize = imageSizeOpt ?? backbone.inputSize;
    process.stderr.write(`shardface eval: ${manifest.backbone.name} step ${manifest.step} on ${set.source}: ${set.images.length} images, ${set.pairs.issame.length} pairs (backend ${info.backend})\n`);
    try {
      if (imageSize !== backbone.inputSize) {
        try {
          tf.tidy(() => backbone.apply(tf.zeros([1, imageSize, imageSize, 3]), false));
        } catch (e) {
          throw new UsageError(`--image-size ${imageSize}: ${(e as Error).message}`);
        }
      }
      // --- occlusion: the same protocol on occluded images
      const r = occlude
        ? await (await import('../../eval/occluders.js')).verifySetOccluded(backbone, set, { imageSize, crop, batch, occlude: occlude as OccluderKind, seed: o['occlude-seed'] as number })
        : await verifySet(backbone, set, { imageSize, crop, batch });
      // --- end occlusion
      if (o['roc-csv']) {
        if (!r.roc) throw new VerificationSetError('--roc-csv: the pairs are all of one kind (same or different), so there is no ROC');
        writeFileSync(o['roc-csv'] as string, rocCsv(r.roc));
      }
      console.log(
        JSON.stringify({
          accuracy: r.accuracy,
          accuracy_std: r.std,
          threshold: r.threshold,
          tar_at_far: r.tarAtFar,
          pairs: r.pairs,
          source: set.source,
          checkpoint: dir,
          step: manifest.step,
          ...(occlude ? { occlude } : {}), // --- occlusion
          ...(segGate ? { seg_gate: true } : {}), // --- occlusion
        }),
      );
    } finally {
      backbone.dispose();
    }
    return 0;
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof VerificationSetError || e instanceof BinPackError || e instanceof PairFileError || e instanceof ImageInputError) {
      console.error(`shardface eval: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

/** Exactly one source: --bin, --pairs with --images, or --pair-list. */
function sourceSpec(o: Record<string, unknown>): VerificationSpec {
  const bin = o.bin as string | undefined;
  const pairs = o.pairs as string | undefined;
  const images = o.images as string | undefined;
  const list = o['pair-list'] as string | undefined;
  const given = [bin, pairs, list].filter((x) => x !== undefined).length;
  if (given !== 1) throw new UsageError(`eval needs exactly one of --bin FILE, --pairs FILE --images DIR, --pair-list FILE (got ${given})`);
  if (images !== undefined && pairs === undefined) throw new UsageError('--images goes with --pairs');
  if (bin !== undefined) return { kind: 'bin', file: bin };
  if (pairs !== undefined) {
    if (images === undefined) throw new UsageError('--pairs needs --images DIR (the folder holding name/name_0001.jpg)');
    return { kind: 'lfw-pairs', pairs, images };
  }
  return { kind: 'pair-list', file: list! };
}

/** `centre`, or `LEFT,TOP,WIDTH,HEIGHT` fractions in [0, 1]. */
function parseCrop(s: string): 'centre' | CropBox {
  if (s === 'centre' || s === 'center') return 'centre';
  const f = s.split(',').map((x) => Number(x.trim()));
  if (f.length !== 4 || f.some((x) => !Number.isFinite(x) || x < 0 || x > 1)) throw new UsageError(`--crop must be centre or LEFT,TOP,WIDTH,HEIGHT (fractions in [0, 1]), got ${JSON.stringify(s)}`);
  const [left, top, width, height] = f as [number, number, number, number];
  if (width <= 0 || height <= 0 || left + width > 1 + 1e-9 || top + height > 1 + 1e-9) throw new UsageError(`--crop ${s}: the box must have a positive size and lie inside the image`);
  return { left, top, width, height };
}
