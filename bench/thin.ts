/**
 * `shardface bench thin`: training from scratch on a thin dataset — thousands
 * of identities with 2 images each, the shape of many small real datasets —
 * with the recommended recipe for it (README "Small real datasets") and, for
 * comparison, the plain defaults (ArcFace s = 64, m = 0.5 from step 1), which
 * stall near chance there. Each run is scored on held-out identities (never
 * trained on) by 10-fold verification. One JSON line per recipe, then a
 * summary when both ran:
 *
 *   {"bench":"thin","recipe":"recommended"|"defaults","verification_accuracy":…,
 *    "verification_std":…,"pairs":…,"loss_by_epoch":[…],"train_seconds":…,"settings":{…},…}
 *   {"bench":"thin-summary","recommended":…,"defaults":…,"gain":…}
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../src/config/index.js';
import { planTraining } from '../src/run/plan.js';
import { trainWithPlan } from '../src/run/training.js';

export const THIN_RECIPES = ['recommended', 'defaults'] as const;
export type ThinRecipe = (typeof THIN_RECIPES)[number];

/**
 * The settings each recipe changes over the config defaults. `recommended` is
 * the README's "Small real datasets" recipe; `defaults` changes nothing.
 */
export const THIN_RECIPE_SETTINGS: Readonly<Record<ThinRecipe, Readonly<Record<string, unknown>>>> = {
  recommended: {
    margin: { type: 'arcface', s: 16, m2: 0.5 },
    marginWarmupEpochs: 2,
    warmupEpochs: 1,
    classifierInitStd: 0.1,
  },
  defaults: {},
};

export interface BenchThinOptions {
  recipes: ThinRecipe[];
  workers: number;
  batch: number;
  imageSize: number;
  embeddingSize: number;
  identities: number;
  imagesPerIdentity: number;
  heldOutIdentities: number;
  pairs: number;
  epochs: number;
  seed: number;
  backend: string;
  /** Print each line as soon as it is ready (default true). */
  print?: boolean;
}

export const BENCH_THIN_DEFAULTS: BenchThinOptions = {
  recipes: ['recommended', 'defaults'],
  workers: 2,
  batch: 64,
  imageSize: 32,
  embeddingSize: 128,
  identities: 5000,
  imagesPerIdentity: 2,
  heldOutIdentities: 1000,
  pairs: 900,
  epochs: 20,
  seed: 1,
  backend: 'auto',
};

/** The last lines of a failed run's logs (the run directory is removed afterwards). */
function logTail(runDir: string): string {
  return ['train.log', 'workers.log'].flatMap((f) => (existsSync(join(runDir, f)) ? readFileSync(join(runDir, f), 'utf8').trim().split('\n').slice(-5) : [])).join('\n');
}

/** Mean step loss of each epoch, from the run's metrics.jsonl. */
export function lossByEpoch(steps: readonly { epoch: number; loss: number }[]): number[] {
  const sum: number[] = [];
  const count: number[] = [];
  for (const s of steps) {
    sum[s.epoch] = (sum[s.epoch] ?? 0) + s.loss;
    count[s.epoch] = (count[s.epoch] ?? 0) + 1;
  }
  return sum.map((x, e) => x / count[e]!);
}

export async function benchThin(opts: Partial<BenchThinOptions> = {}): Promise<Record<string, unknown>[]> {
  const o = { ...BENCH_THIN_DEFAULTS, ...opts };
  if (o.recipes.length === 0) throw new Error('bench thin: no recipe to run');
  const lines: Record<string, unknown>[] = [];
  const emit = (line: Record<string, unknown>) => {
    lines.push(line);
    if (o.print !== false) console.log(JSON.stringify(line));
  };
  const accuracy: Partial<Record<ThinRecipe, number>> = {};
  const root = mkdtempSync(join(tmpdir(), 'shardface-bench-thin-'));
  try {
    for (const recipe of o.recipes) {
      const runDir = join(root, recipe);
      const settings = THIN_RECIPE_SETTINGS[recipe];
      const cfg = resolveConfig({
        values: {
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
          seed: o.seed,
          backend: o.backend,
          runDir,
          logFormat: 'json',
          workerTimeoutMs: 3_600_000,
          ...settings,
        },
      });
      const t0 = Date.now();
      const code = await trainWithPlan(planTraining(cfg), { quiet: true });
      if (code !== 0) throw new Error(`bench thin: ${recipe} training exited with ${code}; the run's log ends:\n${logTail(runDir)}`);
      const trainSeconds = (Date.now() - t0) / 1000;
      const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as {
        steps: number;
        final_loss: number;
        images_per_s: number;
        verification: {
          accuracy: number;
          accuracy_std: number;
          pairs: number;
        } | null;
      };
      if (!summary.verification) throw new Error(`bench thin: ${recipe} run reported no verification (held-out identities ${o.heldOutIdentities}, pairs ${o.pairs})`);
      const steps = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { epoch: number; loss: number });
      accuracy[recipe] = summary.verification.accuracy;
      emit({
        bench: 'thin',
        recipe,
        verification_accuracy: summary.verification.accuracy,
        verification_std: summary.verification.accuracy_std,
        pairs: summary.verification.pairs,
        final_loss: summary.final_loss,
        loss_by_epoch: lossByEpoch(steps).map((l) => Math.round(l * 1000) / 1000),
        steps: summary.steps,
        epochs: o.epochs,
        train_seconds: trainSeconds,
        images_per_s: summary.images_per_s,
        identities: o.identities,
        images_per_identity: o.imagesPerIdentity,
        held_out_identities: o.heldOutIdentities,
        image_size: o.imageSize,
        embedding_size: o.embeddingSize,
        workers: o.workers,
        batch: o.batch,
        seed: o.seed,
        settings: {
          margin: cfg.margin,
          marginWarmupEpochs: cfg.marginWarmupEpochs,
          marginWarmupSteps: cfg.marginWarmupSteps,
          lr: cfg.lr,
          warmupEpochs: cfg.warmupEpochs,
          weightDecay: cfg.weightDecay,
          classifierInitStd: cfg.classifierInitStd,
        },
      });
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  if (accuracy.recommended !== undefined && accuracy.defaults !== undefined)
    emit({
      bench: 'thin-summary',
      recommended: accuracy.recommended,
      defaults: accuracy.defaults,
      gain: accuracy.recommended - accuracy.defaults,
    });
  return lines;
}
