/**
 * `shardface bench occlusion`: does adversarial feature masking (docs/methods.md#adversarial-training,
 * `--occlusion adversarial`) make verification more robust to occluders?
 *
 * For each seed, two training runs with the same config, `occlusion: none`
 * and `occlusion: adversarial` (tiny backbone, small synthetic faces), each
 * then scored on the same held-out pairs, clean and with each synthetic
 * occluder of src/data/occluders.ts drawn on the images (never seen in
 * training unless `trainOccluders` > 0, which draws them on that share of
 * the training images in both runs). The adversarial run is also scored with
 * its segmentation head gating the feature map (`eval --seg-gate`). One JSON
 * line per run, then one summary over the seeds:
 *
 *   {"bench":"occlusion","occlusion":"none"|"adversarial","seed":…,"clean_accuracy":…,
 *    "occluded_accuracy":{"eyes":…,"mouth":…,"half":…,"random":…},"mean_occluded_accuracy":…,
 *    "seg_gate":{…same fields…}|null, …}
 *   {"bench":"occlusion-summary","seeds":[…],"none":{clean, occluded},"adversarial":{…},
 *    "adversarial_seg_gate":{…},"occluded_gain":…,"occluded_gain_per_seed":[…], …}
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../src/config/index.js';
import { planTraining } from '../src/run/plan.js';
import { trainWithPlan } from '../src/run/training.js';
import { initBackend, type BackendChoice } from '../src/ops/backend.js';
import { createSyntheticSplits } from '../src/data/synthetic.js';
import type { Dataset } from '../src/data/dataset.js';
import { makeVerificationPairs, type PairSet } from '../src/eval/pairs.js';
import { verifyBackbone } from '../src/eval/evaluate.js';
import { loadBackboneFromCheckpoint } from '../src/eval/load-backbone.js';
import { OCCLUDERS, occludedDataset } from '../src/eval/occluders.js';
import type { Backbone } from '../src/models/index.js';

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
  /** augment.occluders of both runs: share of the training images with a drawn occluder (0 = none). */
  trainOccluders: number;
  /** One pair of runs per seed. */
  seeds: number[];
  backend: string;
  /** Print each line as soon as it is ready (default true). */
  print?: boolean;
}

export const BENCH_OCCLUSION_DEFAULTS: BenchOcclusionOptions = {
  workers: 2,
  batch: 64,
  imageSize: 40,
  identities: 300,
  imagesPerIdentity: 20,
  heldOutIdentities: 100,
  pairs: 3000,
  epochs: 15,
  embeddingSize: 128,
  startFraction: 0.3,
  pretrainSteps: 10,
  width: 64,
  trainOccluders: 0,
  seeds: [1, 2, 3],
  backend: 'auto',
};

interface Scores {
  clean_accuracy: number;
  occluded_accuracy: Record<string, number>;
  mean_occluded_accuracy: number;
}

async function score(backbone: Backbone, heldOut: Dataset, pairs: PairSet, seed: number): Promise<Scores> {
  const clean = await verifyBackbone(backbone, heldOut, pairs);
  const occluded: Record<string, number> = {};
  for (const kind of OCCLUDERS) occluded[kind] = (await verifyBackbone(backbone, occludedDataset(heldOut, kind, seed), pairs)).accuracy;
  return { clean_accuracy: clean.accuracy, occluded_accuracy: occluded, mean_occluded_accuracy: OCCLUDERS.reduce((a, k) => a + occluded[k]!, 0) / OCCLUDERS.length };
}

/** The last lines of a failed run's logs (the run directory is removed afterwards). */
function logTail(runDir: string): string {
  const lines = ['train.log', 'workers.log'].flatMap((f) => (existsSync(join(runDir, f)) ? readFileSync(join(runDir, f), 'utf8').trim().split('\n').slice(-5) : []));
  return lines.join('\n');
}

const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

export async function benchOcclusion(opts: Partial<BenchOcclusionOptions> = {}): Promise<Record<string, unknown>[]> {
  const o = { ...BENCH_OCCLUSION_DEFAULTS, ...opts };
  const emit = (line: Record<string, unknown>) => {
    lines.push(line);
    if (o.print !== false) console.log(JSON.stringify(line));
  };
  const lines: Record<string, unknown>[] = [];
  const runs: { mode: 'none' | 'adversarial'; plain: Scores; gated: Scores | null }[] = [];
  for (const seed of o.seeds) {
    const root = mkdtempSync(join(tmpdir(), 'shardface-bench-occlusion-'));
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
          verificationPairs: Math.min(o.pairs, 1000), // the run's own end-of-training check; the scores below use all o.pairs
          batch: o.batch,
          epochs: o.epochs,
          lr: 0.1,
          warmupEpochs: 1,
          margin: { type: 'arcface', s: 32, m2: 0.3 },
          augment: { occluders: o.trainOccluders },
          seed,
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
        if (code !== 0) throw new Error(`bench occlusion: ${mode} training (seed ${seed}) exited with ${code}; the run's log ends:\n${logTail(runDir)}`);
        const trainSeconds = (Date.now() - t0) / 1000;
        const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as { checkpoint: string; final_loss: number; steps: number };

        // score the final checkpoint here, clean and occluded, on held-out identities
        await initBackend(o.backend as BackendChoice);
        const { heldOut } = createSyntheticSplits({ identities: o.identities, heldOutIdentities: o.heldOutIdentities, imagesPerIdentity: o.imagesPerIdentity, imageSize: o.imageSize, seed });
        const labels = Int32Array.from({ length: heldOut!.size }, (_, i) => heldOut!.label(i));
        const pairs = makeVerificationPairs({ labels, pairs: o.pairs, seed });
        const { backbone } = await loadBackboneFromCheckpoint(summary.checkpoint);
        const featureMap = backbone.featureShape(o.imageSize);
        let plain: Scores;
        try {
          plain = await score(backbone, heldOut!, pairs, seed);
        } finally {
          backbone.dispose();
        }
        let gated: Scores | null = null;
        if (mode === 'adversarial') {
          const g = (await loadBackboneFromCheckpoint(summary.checkpoint, { segGate: true })).backbone;
          try {
            gated = await score(g, heldOut!, pairs, seed);
          } finally {
            g.dispose();
          }
        }
        runs.push({ mode, plain, gated });
        emit({
          bench: 'occlusion',
          occlusion: mode,
          seed,
          ...plain,
          seg_gate: gated,
          pairs: pairs.issame.length,
          train_occluders: o.trainOccluders,
          steps: summary.steps,
          occlusion_start_step: mode === 'adversarial' ? startStep : null,
          occlusion_pretrain_steps: mode === 'adversarial' ? o.pretrainSteps : null,
          final_loss: summary.final_loss,
          train_seconds: trainSeconds,
          image_size: o.imageSize,
          feature_map: featureMap,
        });
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  const means = (s: Scores[]) => ({ clean: mean(s.map((x) => x.clean_accuracy)), occluded: mean(s.map((x) => x.mean_occluded_accuracy)) });
  const none = runs.filter((r) => r.mode === 'none');
  const adv = runs.filter((r) => r.mode === 'adversarial');
  const gains = adv.map((r, i) => r.plain.mean_occluded_accuracy - none[i]!.plain.mean_occluded_accuracy);
  const gatedGains = adv.map((r, i) => r.gated!.mean_occluded_accuracy - none[i]!.plain.mean_occluded_accuracy);
  emit({
    bench: 'occlusion-summary',
    seeds: o.seeds,
    train_occluders: o.trainOccluders,
    none: means(none.map((r) => r.plain)),
    adversarial: means(adv.map((r) => r.plain)),
    adversarial_seg_gate: means(adv.map((r) => r.gated!)),
    occluded_gain: mean(gains),
    occluded_gain_per_seed: gains,
    seg_gate_occluded_gain: mean(gatedGains),
    clean_change: mean(adv.map((r, i) => r.plain.clean_accuracy - none[i]!.plain.clean_accuracy)),
  });
  return lines;
}
