/**
 * `shardface embed --checkpoint RUN_DIR/ckpt[/step-N] [--image-size S] [--json] IMAGES…`:
 * face embeddings of image files (JPEG, PNG, PGM/PPM), one line per image.
 *
 *   --json:   {"image": PATH, "embedding": [D unit-length floats], "magnitude": ‖e‖}
 *   default:  PATH  magnitude  first few embedding values
 *
 * `embedding` is n(e + e_flip), the flip-fused embedding verification uses;
 * `magnitude` is ‖e‖ of the raw embedding of the image itself, the quality
 * score of MagFace-trained models (docs/methods.md#magnitude-as-quality). Each image is decoded to S×S
 * (short side resized, centre square kept; default S: the checkpoint's
 * imageSize). An image that cannot be read is reported on stderr and the
 * command exits 1 after embedding the others.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { BACKEND_CHOICES, initBackend, type BackendChoice } from '../../ops/backend.js';
import { CheckpointError, loadBackboneFromCheckpoint, resolveCheckpointDir } from '../../eval/load-backbone.js';
import { decodeImage } from '../../data/decode.js';
import { embedImages } from '../../export/embeddings.js';
import { tf } from '../../ops/tf.js';

const OPTIONS: Record<string, OptionSpec> = {
  checkpoint: { kind: 'string', help: 'RUN_DIR/ckpt (latest complete step) or RUN_DIR/ckpt/step-N' },
  'image-size': { kind: 'int', help: "decode images to S×S (default: the checkpoint's imageSize; only tiny accepts another size)" },
  json: { kind: 'boolean', default: false, help: 'one JSON line per image: {image, embedding, magnitude}' },
  flip: { kind: 'boolean', default: true, help: 'fuse the mirror image: n(e + e_flip) (--no-flip: n(e))' },
  batch: { kind: 'int', default: 32, help: 'images per forward pass' },
  'seg-gate': { kind: 'boolean', default: false, help: 'occlusion adversarial checkpoints: blank out the feature-map cells the segmentation head finds occluded (f ⊙ (1 − σ(S(f)))) before the head' },
  backend: { kind: 'string', default: 'auto', help: BACKEND_CHOICES.join(' | ') },
  threads: { kind: 'int', help: 'threads for native CPU kernels (default: all cores)' },
  help: { kind: 'boolean', default: false, help: 'show this help' },
};

export async function run(argv: string[]): Promise<number> {
  const { options: o, positional: images } = parseArgs(argv, OPTIONS, { allowPositional: true });
  if (o.help) {
    console.log(`${usage('embed', OPTIONS)}\n  IMAGES…  image files (JPEG, PNG, PGM, PPM)`);
    return 0;
  }
  const checkpoint = o.checkpoint as string | undefined;
  if (!checkpoint) throw new UsageError('embed needs --checkpoint RUN_DIR/ckpt or RUN_DIR/ckpt/step-N');
  if (images.length === 0) throw new UsageError('embed needs at least one image file');
  const backend = o.backend as string;
  if (!(BACKEND_CHOICES as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKEND_CHOICES.join(', ')}, got ${JSON.stringify(backend)}`);
  const batch = o.batch as number;
  if (batch < 1) throw new UsageError(`--batch must be ≥ 1, got ${batch}`);
  const sizeOpt = o['image-size'] as number | undefined;
  if (sizeOpt !== undefined && sizeOpt < 1) throw new UsageError(`--image-size must be ≥ 1, got ${sizeOpt}`);

  let loaded: Awaited<ReturnType<typeof loadBackboneFromCheckpoint>>;
  try {
    resolveCheckpointDir(checkpoint);
    await initBackend(backend as BackendChoice, { threads: o.threads as number | undefined });
    loaded = await loadBackboneFromCheckpoint(checkpoint, { segGate: o['seg-gate'] as boolean });
  } catch (e) {
    if (e instanceof CheckpointError) throw new UsageError(e.message);
    throw e;
  }
  const { backbone } = loaded;
  try {
    const size = sizeOpt ?? backbone.inputSize;
    if (size !== backbone.inputSize) {
      try {
        tf.tidy(() => backbone.apply(tf.zeros([1, size, size, 3]) as tf.Tensor4D, false));
      } catch (e) {
        throw new UsageError(`--image-size ${size}: ${(e as Error).message}`);
      }
    }
    const px = size * size * 3;
    let failed = 0;
    for (let start = 0; start < images.length; start += batch) {
      const paths = images.slice(start, start + batch);
      const pixels = new Float32Array(paths.length * px);
      const ok: string[] = [];
      for (const path of paths) {
        try {
          const img = await decodeImage(await readFile(path), { size });
          pixels.set(img.data, ok.length * px);
          ok.push(path);
        } catch (e) {
          failed++;
          process.stderr.write(`shardface embed: ${path}: ${(e as Error).message}\n`);
        }
      }
      if (ok.length === 0) continue;
      const { embeddings, magnitudes } = await embedImages(backbone, pixels, ok.length, size, { flip: o.flip as boolean });
      const d = backbone.embeddingSize;
      ok.forEach((image, i) => {
        const e = Array.from(embeddings.subarray(i * d, (i + 1) * d));
        const magnitude = magnitudes[i]!;
        if (o.json) console.log(JSON.stringify({ image, embedding: e, magnitude }));
        else
          console.log(
            `${image}\tmagnitude ${magnitude.toFixed(4)}\t[${e
              .slice(0, 4)
              .map((v) => v.toFixed(4))
              .join(', ')}, …] (${d} dims)`,
          );
      });
    }
    return failed > 0 ? 1 : 0;
  } finally {
    backbone.dispose();
  }
}
