/**
 * `shardface ckpt info DIR [--json]`: what a run's checkpoints hold and whether
 * each one verifies (every file's size and SHA-256 against its manifest).
 * `shardface ckpt merge DIR --out FILE`: the whole classifier as one
 * safetensors file.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { checkpointProblems, readManifest, stepDirs } from '../../checkpoint/checkpoint.js';
import { mergeClassifier } from '../../checkpoint/merge.js';
import { resolveCheckpointDir, CheckpointError } from '../../eval/checkpoint-dir.js';

const OPTIONS: Record<string, OptionSpec> = {
  out: { kind: 'string', help: 'merge: the safetensors file to write' },
  json: { kind: 'boolean', default: false, help: 'info: one JSON object instead of a table' },
  help: { kind: 'boolean', default: false, help: 'show this help' },
};

const HELP = `usage: shardface ckpt info DIR [--json]        checkpoints under DIR (a run, its ckpt/, or one step-N) and whether each verifies
       shardface ckpt merge DIR --out FILE    the whole classifier of DIR's newest complete checkpoint (or step-N) as one safetensors file`;

export async function run(argv: string[]): Promise<number> {
  const { options, positional } = parseArgs(argv, OPTIONS, { allowPositional: true });
  if (options.help) {
    console.log(`${HELP}\n\n${usage('ckpt', OPTIONS)}`);
    return 0;
  }
  const [verb, dir, ...extra] = positional;
  if (!verb || !dir || extra.length > 0) throw new UsageError(HELP);
  if (verb === 'info') return info(dir, options.json as boolean);
  if (verb === 'merge') {
    const out = options.out as string | undefined;
    if (!out) throw new UsageError('ckpt merge needs --out FILE');
    let step: string;
    try {
      step = resolveCheckpointDir(dir);
    } catch (e) {
      if (e instanceof CheckpointError) return fail(e.message);
      throw e;
    }
    const problems = checkpointProblems(step);
    if (problems.length > 0) return fail(`${step} does not verify: ${problems.join('; ')}`);
    try {
      console.log(JSON.stringify(await mergeClassifier(step, resolve(out))));
    } catch (e) {
      return fail((e as Error).message);
    }
    return 0;
  }
  throw new UsageError(`unknown ckpt verb ${JSON.stringify(verb)}\n${HELP}`);
}

function fail(message: string): number {
  console.error(`shardface ckpt: ${message}`);
  return 1;
}

interface StepInfo {
  dir: string;
  step: number;
  complete: boolean;
  verified: boolean;
  problems: string[];
  world?: number;
  numClasses?: number;
  embeddingSize?: number;
  bytes?: number;
  createdAt?: string;
}

function info(dir: string, json: boolean): number {
  const d = resolve(dir);
  if (!existsSync(d)) return fail(`${dir} does not exist`);
  const root = existsSync(join(d, 'manifest.json')) ? null : existsSync(join(d, 'ckpt')) ? join(d, 'ckpt') : d;
  const dirs = root ? stepDirs(root) : [{ dir: d, step: readManifest(d).step }];
  if (dirs.length === 0) return fail(`${dir} holds no checkpoint (neither manifest.json nor step-N directories)`);
  const steps: StepInfo[] = dirs.map(({ dir: sd, step }) => {
    const complete = existsSync(join(sd, 'manifest.json'));
    const problems = checkpointProblems(sd);
    if (!complete) return { dir: sd, step, complete, verified: false, problems };
    const m = readManifest(sd);
    return {
      dir: sd,
      step,
      complete,
      verified: problems.length === 0,
      problems,
      world: m.world,
      numClasses: m.numClasses,
      embeddingSize: m.embeddingSize,
      bytes: m.backbone.bytes + m.shards.reduce((a, s) => a + s.bytes, 0),
      createdAt: m.createdAt,
    };
  });
  const newest = steps.find((s) => s.verified);
  if (json) console.log(JSON.stringify({ newestVerified: newest?.dir ?? null, checkpoints: steps }));
  else {
    for (const s of steps) {
      const what = s.verified
        ? `ok        world ${s.world}, ${s.numClasses} classes × ${s.embeddingSize}, ${((s.bytes ?? 0) / 2 ** 20).toFixed(1)} MiB, ${s.createdAt}`
        : s.complete
          ? 'CORRUPT'
          : 'INCOMPLETE';
      console.log(`step ${String(s.step).padStart(7)}  ${what}  ${s.dir}`);
      for (const p of s.problems) console.log(`               - ${p}`);
    }
    console.log(newest ? `newest that verifies: ${newest.dir}` : 'no checkpoint verifies');
  }
  return newest ? 0 : 1;
}
