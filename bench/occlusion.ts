/**
 * `shardface bench occlusion`: does adversarial feature masking (SPEC §6.3,
 * `--occlusion adversarial`) make verification more robust to occluders?
 *
 * Two short training runs with the same seed and config, `occlusion: none`
 * and `occlusion: adversarial` (tiny backbone, small synthetic faces), each
 * then scored on the same held-out pairs, clean and with each synthetic
 * occluder of src/eval/occluders.ts drawn on the images. One JSON line per run:
 *
 *   {"bench":"occlusion","occlusion":"none"|"adversarial","clean_accuracy":…,
 *    "occluded_accuracy":{"eyes":…,"mouth":…,"half":…,"random":…}, …}
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../src/config/index.js';
import { planTraining, trainWithPlan } from '../src/cli/commands/train.js';
import { initBackend, type BackendChoice } from '../src/ops/backend.js';
import { createSyntheticSplits } from '../src/data/synthetic.js';
import { makeVerificationPairs } from '../src/eval/pairs.js';
import { verifyBackbone } from '../src/eval/evaluate.js';
import { loadBackboneFromCheckpoint } from '../src/eval/load-backbone.js';
import { OCCLUDERS, occludedDataset } from '../src/eval/occluders.js';

export interface BenchOcclusionOptions {
  workers: number;
  batch: number;
  imageSize: number;
  identities: number;
  imagesPerIdentity: number;
  heldOutIdentities: number;
  pairs: number;
  epochs: number;
  embeddingSize: number;
  /** Plain training before the adversary starts, as a fraction of the run. */
  startFraction: number;
  pretrainSteps: number;
  width: number;
  seed: number;
  backend: string;
  /** Print each line as soon as its run is scored (default true). */
  print?: boolean;
}

export const BENCH_OCCLUSION_DEFAULTS: BenchOcclusionOptions = {
  workers: 2,
  batch: 64,
  imageSize: 40,
  identities: 300,
  imagesPerIdentity: 20,
  heldOutIdentities: 100,
  pairs: 1000,
  epochs: 6,
  embeddingSize: 128,
  startFraction: 0.3,
  pretrainSteps: 10,
  width: 64,
  seed: 1,
  backend: 'auto',
};

export async function benchOcclusion(opts: Partial<BenchOcclusionOptions> = {}): Promise<Record<string, unknown>[]> {
  const o = { ...BENCH_OCCLUSION_DEFAULTS, ...opts };
  const root = mkdtempSync(join(tmpdir(), 'shardface-bench-occlusion-'));
  const lines: Record<string, unknown>[] = [];
  try {
    for (const mode of ['none', 'adversarial'] as const) {
      const runDir = join(root, mode);
      const values = {
        workers: o.workers,
        backbone: 'tiny',
        embeddingSize: o.embeddingSize,
        imageSize: o.imageSize,
        data: `synthetic:${o.identities}`,
        imagesPerIdentity: o.imagesPerIdentity,
        heldOutIdentities: o.heldOutIdentities,
        verificationPairs: o.pairs,
        batch: o.batch,
        epochs: o.epochs,
        lr: 0.1,
        warmupEpochs: 1,
        margin: { type: 'arcface', s: 32, m2: 0.3 },
        seed: o.seed,
        backend: o.backend,
        runDir,
        logFormat: 'json',
        workerTimeoutMs: 3_600_000,
        occlusion: mode,
        occlusionPretrainSteps: o.pretrainSteps,
        occlusionWidth: o.width,
      };
      const plan = planTraining(resolveConfig({ values }));
      const startStep = Math.round(o.startFraction * plan.steps);
      const cfg = resolveConfig({ values: { ...values, occlusionStartStep: startStep } });
      const t0 = Date.now();
      const code = await trainWithPlan(planTraining(cfg), { quiet: true });
      if (code !== 0) throw new Error(`bench occlusion: ${mode} training exited with ${code}; see ${runDir}/workers.log`);
      const trainSeconds = (Date.now() - t0) / 1000;
      const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as { checkpoint: string; final_loss: number; steps: number };

      // score the final checkpoint here, clean and occluded, on the training run's own held-out pairs
      await initBackend(o.backend as BackendChoice);
      const { backbone } = await loadBackboneFromCheckpoint(summary.checkpoint);
      try {
        const { heldOut } = createSyntheticSplits({ identities: o.identities, heldOutIdentities: o.heldOutIdentities, imagesPerIdentity: o.imagesPerIdentity, imageSize: o.imageSize, seed: o.seed });
        const labels = Int32Array.from({ length: heldOut!.size }, (_, i) => heldOut!.label(i));
        const pairs = makeVerificationPairs({ labels, pairs: o.pairs, seed: o.seed });
        const clean = await verifyBackbone(backbone, heldOut!, pairs);
        const occluded: Record<string, number> = {};
        for (const kind of OCCLUDERS) occluded[kind] = (await verifyBackbone(backbone, occludedDataset(heldOut!, kind, o.seed), pairs)).accuracy;
        const line = {
          bench: 'occlusion',
          occlusion: mode,
          clean_accuracy: clean.accuracy,
          occluded_accuracy: occluded,
          mean_occluded_accuracy: OCCLUDERS.reduce((a, k) => a + occluded[k]!, 0) / OCCLUDERS.length,
          pairs: clean.pairs,
          steps: summary.steps,
          occlusion_start_step: mode === 'adversarial' ? startStep : null,
          occlusion_pretrain_steps: mode === 'adversarial' ? o.pretrainSteps : null,
          final_loss: summary.final_loss,
          train_seconds: trainSeconds,
          image_size: o.imageSize,
          feature_map: backbone.featureShape(o.imageSize),
          seed: o.seed,
        };
        lines.push(line);
        if (o.print !== false) console.log(JSON.stringify(line));
      } finally {
        backbone.dispose();
      }
    }
    return lines;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
