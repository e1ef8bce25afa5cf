/**
 * `train --resume RUN_DIR`: the plan of a run that continues another from its
 * newest checkpoint that verifies. The saved run's config.json with the
 * command line's overrides on top; keys that would change what the saved
 * state means (the network, the data, the classes, the seed, the loss…) are
 * refused, naming the key. Checked before any process starts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, CONFIG_KEYS, resolveConfig } from '../config/index.js';
import { newestVerifiedCheckpoint, readManifest } from '../checkpoint/checkpoint.js';
import { methodJobState, methodName } from '../worker/methods/registry.js';
import { planTraining, type TrainPlan } from './plan.js';

/**
 * Keys a resumed run may change: the length of the run and how it is run,
 * watched and saved. Every other key must keep its saved value (with the same
 * number of workers a resumed run is then bit-identical to one that never stopped;
 * a longer run follows another LR schedule from the resumed step on).
 */
export const RESUME_OVERRIDABLE: readonly string[] = [
  'steps',
  'epochs',
  // another worker count re-slices the classifier (not bit-identical then: the global batch changes)
  'workers',
  'evalEvery',
  'valEvery',
  'val',
  'verificationPairs',
  'maxBadSteps',
  'prefetch',
  'decodeThreads',
  'strictData',
  'maxBadImageShare',
  'backend',
  'threads',
  'checkpointEvery',
  'checkpointKeep',
  'checkpointMinutes',
  'shutdownTimeoutMs',
  'logEvery',
  'logFormat',
  'heartbeatMs',
  'workerTimeoutMs',
  'maxRestarts',
  'metricsPort',
  'metricsHost',
  'curveKeys',
  'maxFrameMb',
];

/** The checkpoint a resumed run starts from, and the newer ones passed over with their reasons. */
export interface ResumePoint {
  dir: string;
  step: number;
  /** The coordinator's job-wide state after `step` (CurricularFace's t); empty when the method keeps none. */
  lossState: Record<string, number>;
  rejected: { dir: string; problems: string[] }[];
}

const valueAt = (cfg: unknown, key: string): unknown => key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], cfg);

/** The plan of `train --resume runDir` with `overrides` (dashed, camelCase or dotted names, as on the command line). */
export function planResume(runDir: string, overrides: Record<string, string | boolean>): TrainPlan & { resume: ResumePoint } {
  const dir = resolve(runDir);
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new ConfigError(`--resume ${runDir}: ${configPath} does not exist (not a shardface run directory)`);
  let saved: Record<string, unknown>;
  try {
    saved = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`--resume ${runDir}: ${configPath} is not valid JSON (${(e as Error).message})`);
  }
  const before = resolveConfig({ values: { ...saved, runDir: dir } });
  const config = resolveConfig({ values: { ...saved, runDir: dir }, overrides });
  if (config.runDir !== dir) throw new ConfigError(`runDir: a resumed run writes into the directory it resumes (${dir}); leave --run-dir out`, 'runDir');
  for (const key of Object.keys(CONFIG_KEYS)) {
    if (key === 'runDir' || RESUME_OVERRIDABLE.includes(key)) continue;
    const was = valueAt(before, key);
    const now = valueAt(config, key);
    if (JSON.stringify(was) !== JSON.stringify(now))
      throw new ConfigError(`${key}: cannot change when resuming a run (saved ${JSON.stringify(was)}, asked ${JSON.stringify(now)}); only these keys may: ${RESUME_OVERRIDABLE.join(', ')}`, key);
  }
  const method = methodName(config);
  // DCQ's queue slots follow the worker count (sharded-class-queue.ts); they are not re-sliced
  if (method === 'dcq' && config.workers !== before.workers)
    throw new ConfigError(`workers: classifier dcq resumes with its saved worker count only (saved ${before.workers}, asked ${config.workers})`, 'workers');

  const found = newestVerifiedCheckpoint(join(dir, 'ckpt'));
  if (found.dir === null) {
    const why = found.rejected.map((r) => `\n  ${r.dir}: ${r.problems.join('; ')}`).join('');
    throw new ConfigError(`--resume ${runDir}: no checkpoint under ${join(dir, 'ckpt')} verifies${why || ' (there is none)'}`);
  }
  const manifest = readManifest(found.dir);
  const plan = planTraining(config);
  // steps is capped by epochs (trainFacts): an extension past it would be cut silently
  if (config.steps > plan.steps)
    throw new ConfigError(`steps: ${config.steps} is more than the run's epochs allow (${config.epochs} epochs × ${plan.stepsPerEpoch} steps = ${plan.steps}); raise --epochs too`, 'steps');
  // another worker count: each rank's rows are re-sliced from the saved shards (checkpoint/reslice.ts)
  if (manifest.world !== config.workers)
    plan.warnings.push(
      `workers: resuming ${manifest.world} workers' checkpoint with ${config.workers}: the classifier rows are re-sliced to the new class ranges, but the global batch (${config.workers} × ${config.batch}), hence the data order and the epoch of each step, follow the new count, so the run is not identical to one that kept ${manifest.world} workers`,
    );
  if (found.step >= plan.steps)
    throw new ConfigError(
      `--resume ${runDir}: the newest verified checkpoint is at step ${found.step} and the run has ${plan.steps} steps: nothing left to do (extend it with --steps or --epochs)`,
      'steps',
    );
  const lossState = manifest.lossState ?? {};
  const reducer = methodJobState(config);
  for (const k of Object.keys(reducer?.initial ?? {}))
    if (!Number.isFinite(lossState[k])) throw new ConfigError(`--resume ${runDir}: ${found.dir}/manifest.json has no lossState.${k}, which ${reducer!.owner} needs to continue`);
  return { ...plan, resume: { dir: found.dir, step: found.step, lossState, rejected: found.rejected } };
}
