/**
 * `shardface train --resume RUN_DIR` through the real CLI (coordinator + 2
 * worker processes): a run killed after a checkpoint and resumed ends
 * bit-identical to one that never stopped (the SHA-256 of every checkpoint
 * file at the same later step, and the loss of every step after the
 * checkpoint), with SGD and with AdamW + CurricularFace (whose t lives on the
 * coordinator), with classifier dcq and with occlusion adversarial; a corrupt newest checkpoint is passed over with its reason and
 * the one before is used, still bit-identical; a run can be extended; bad
 * resumes get a clear error and exit 2. With another worker count (2 → 3) the
 * rows are re-sliced to the new class ranges: equal to the merged classifier.
 */
import { describe, expect, it } from 'vitest';
import { cpSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkpointProblems, readManifest, stepDir } from '../src/checkpoint/checkpoint.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';
import { mergeClassifier } from '../src/checkpoint/merge.js';
import { classRange } from '../src/ops/class-range.js';
import { createShardState, disposeShardState } from '../src/ops/row-optimizer.js';
import { restoreShard } from '../src/worker/methods/restore.js';
import { TINY_TRAIN_ARGS } from './helpers/train-args.js';
import { cli, expectSameContinuation, newRunDir, records } from './helpers/resume.js';

const TINY = [...TINY_TRAIN_ARGS, '--steps', '12', '--checkpoint-every', '4', '--checkpoint-keep', '0'];

/** Run A straight to step 12; run B killed at the start of `killAt` (rank 0) and left for a resume. */
async function straightAndKilled(extra: string[], killAt: number): Promise<{ a: string; b: string }> {
  const a = newRunDir();
  const b = newRunDir();
  const [ra, rb] = [await cli([...TINY, ...extra, '--run-dir', a]), await cli([...TINY, ...extra, '--run-dir', b], `kill:rank=0:step=${killAt}`)];
  expect(ra.code, ra.out).toBe(0);
  expect(rb.code).not.toBe(0);
  expect(existsSync(stepDir(join(b, 'ckpt'), 12))).toBe(false);
  return { a, b };
}

describe('train --resume', () => {
  it('continues bit-identically after a kill (SGD, margin family)', async () => {
    const { a, b } = await straightAndKilled([], 5);
    const r = await cli(['--resume', b, '--log-format', 'json']);
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(join(b, 'train.log'), 'utf8')).toContain(`resumed from step 4 (${stepDir(join(b, 'ckpt'), 4)}); continuing at step 5`);
    expectSameContinuation(a, b, 4);

    // a finished run extended by 4 steps continues from its last checkpoint, appending to metrics.jsonl
    const more = await cli(['--resume', a, '--steps', '16']);
    expect(more.code, more.out).toBe(0);
    expect(records(a).map((x) => x.step)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(existsSync(join(stepDir(join(a, 'ckpt'), 16), 'manifest.json'))).toBe(true);
    // and nothing is left to do at its end
    const again = await cli(['--resume', a, '--steps', '16']);
    expect(again.code).toBe(2);
    expect(again.out).toContain('the newest verified checkpoint is at step 16 and the run has 16 steps: nothing left to do');
  }, 120_000);

  it('continues bit-identically with AdamW and CurricularFace (t carried on from the manifest)', async () => {
    const extra = ['--optimizer', 'adamw', '--lr', '0.01', '--loss', 'curricular'];
    const { a, b } = await straightAndKilled(extra, 7);
    const t4 = readManifest(stepDir(join(b, 'ckpt'), 4)).lossState;
    expect(t4?.curricularT).toBeGreaterThan(0);
    const r = await cli(['--resume', b]);
    expect(r.code, r.out).toBe(0);
    expectSameContinuation(a, b, 4);
    expect(readManifest(stepDir(join(b, 'ckpt'), 12)).lossState).toEqual(readManifest(stepDir(join(a, 'ckpt'), 12)).lossState);
  }, 120_000);

  it('continues bit-identically with classifier dcq (key encoder, query encoder and its optimizer, queue and pointer)', async () => {
    const { a, b } = await straightAndKilled(['--classifier', 'dcq', '--warmup-steps', '0'], 6);
    const r = await cli(['--resume', b]);
    expect(r.code, r.out).toBe(0);
    expectSameContinuation(a, b, 4, 'queue-shard');
    // the queue's slots follow the worker count: no re-slicing
    const four = await cli(['--resume', b, '--workers', '4']);
    expect(four.code).toBe(2);
    expect(four.out).toContain('workers: classifier dcq resumes with its saved worker count only (saved 2, asked 4)');
  }, 120_000);

  it('continues bit-identically with occlusion adversarial (G, S and their optimizers), from a checkpoint in the joint stage', async () => {
    const { a, b } = await straightAndKilled(['--occlusion', 'adversarial', '--occlusion-start-step', '2', '--occlusion-pretrain-steps', '3', '--occlusion-width', '16'], 9);
    const r = await cli(['--resume', b]);
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(join(b, 'train.log'), 'utf8')).toContain('resumed from step 8');
    expectSameContinuation(a, b, 8);
  }, 120_000);

  it('passes over a truncated or byte-flipped newest checkpoint, logging why, and still ends bit-identical', async () => {
    const { a, b } = await straightAndKilled([], 9);
    const c = newRunDir();
    cpSync(b, c, { recursive: true });
    // b: one byte of shard 1 flipped; c: the backbone cut short
    const shard = join(stepDir(join(b, 'ckpt'), 8), 'classifier-shard-1.safetensors');
    const bytes = readFileSync(shard);
    bytes[bytes.length - 3] ^= 0x40;
    writeFileSync(shard, bytes);
    const backbone = join(stepDir(join(c, 'ckpt'), 8), 'backbone.safetensors');
    truncateSync(backbone, readManifest(stepDir(join(c, 'ckpt'), 8)).backbone.bytes - 100);
    // c's config.json names its old run directory: the resume writes into the one it is given
    for (const [dir, reason] of [
      [b, 'classifier-shard-1.safetensors checksum mismatch'],
      [c, 'backbone.safetensors has'],
    ] as const) {
      const r = await cli(['--resume', dir]);
      expect(r.code, r.out).toBe(0);
      const log = readFileSync(join(dir, 'train.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { level: number; msg: string });
      const rejected = log.find((l) => l.msg.startsWith(`checkpoint ${stepDir(join(dir, 'ckpt'), 8)} rejected`));
      expect(rejected?.level).toBe(40);
      expect(rejected?.msg).toContain(reason);
      expect(log.some((l) => l.msg.startsWith('resumed from step 4'))).toBe(true);
      // steps 5..8 were redone: their old records replaced, and the step-8 checkpoint rewritten
      expectSameContinuation(a, dir, 4);
    }
  }, 180_000);

  it('refuses a run directory with no verified checkpoint, a missing config.json, and overrides that cannot change', async () => {
    const empty = newRunDir();
    const killed = await cli([...TINY, '--run-dir', empty], 'kill:rank=1:step=3');
    expect(killed.code).not.toBe(0);
    const none = await cli(['--resume', empty]);
    expect(none.code).toBe(2);
    expect(none.out).toContain(`--resume ${empty}: no checkpoint under ${join(empty, 'ckpt')} verifies`);

    const bare = newRunDir();
    const noConfig = await cli(['--resume', bare]);
    expect(noConfig.code).toBe(2);
    expect(noConfig.out).toContain(`${join(bare, 'config.json')} does not exist (not a shardface run directory)`);

    // a run with a checkpoint at step 4
    const run = newRunDir();
    expect((await cli([...TINY, '--run-dir', run], 'kill:rank=0:step=5')).code).not.toBe(0);
    for (const [args, msg] of [
      [['--seed', '7'], 'seed: cannot change when resuming a run (saved 1, asked 7)'],
      [['--backbone', 'mobilefacenet'], 'backbone: cannot change when resuming a run'],
      [['--embedding-size', '32'], 'embeddingSize: cannot change when resuming a run'],
      [['--loss', 'curricular'], 'loss: cannot change when resuming a run'],
      [['--margin.m2', '0.3'], 'margin.m2: cannot change when resuming a run'],
      [['--run-dir', bare], 'runDir: a resumed run writes into the directory it resumes'],
      [['--steps', '100000'], "steps: 100000 is more than the run's epochs allow"],
    ] as const) {
      const r = await cli(['--resume', run, ...args]);
      expect(r.code, r.out).toBe(2);
      expect(r.out).toContain(msg);
    }
    // nothing was touched: the checkpoint and the records are still there
    expect(records(run).map((x) => x.step)).toEqual([1, 2, 3, 4]);
  }, 120_000);

  it("resumes 2 workers' checkpoint with 3: each new rank's rows and optimizer slots are the merged classifier's rows of its range", async () => {
    const run = newRunDir();
    expect((await cli([...TINY, '--run-dir', run], 'kill:rank=0:step=5')).code).not.toBe(0);
    const dir = stepDir(join(run, 'ckpt'), 4);
    const manifest = readManifest(dir);
    expect(manifest.world).toBe(2);
    const merged = readTensorFile((await mergeClassifier(dir, join(run, 'merged.safetensors'))).out).tensors;
    const dim = 16;
    const ranges = [0, 1, 2].map((r) => classRange(manifest.numClasses, 3, r));
    // rank 1's range [7, 14) takes rows from both saved shards [0, 10) and [10, 20)
    expect(ranges[1]).toEqual({ start: 7, count: 7 });
    for (const range of ranges) {
      const state = createShardState(range.count, dim, 'sgd', new Float32Array(range.count * dim));
      try {
        const from = restoreShard({ dir, manifest }, range, state);
        expect(from.length).toBeGreaterThan(0);
        const rows = (a: Float32Array) => Array.from(a.subarray(range.start * dim, (range.start + range.count) * dim));
        expect(Array.from(state.weight.dataSync())).toEqual(rows(merged.weight!.data as Float32Array));
        expect(Array.from(state.momentum!.dataSync())).toEqual(rows(merged.momentum!.data as Float32Array));
        expect(state.step).toBe(4);
      } finally {
        disposeShardState(state);
      }
    }
    // and the run itself continues with 3 workers
    const r = await cli(['--resume', run, '--workers', '3']);
    expect(r.code, r.out).toBe(0);
    const last = stepDir(join(run, 'ckpt'), 12);
    expect(checkpointProblems(last)).toEqual([]);
    expect(readManifest(last).shards.map((sh) => [sh.classStart, sh.classCount])).toEqual(ranges.map((x) => [x.start, x.count]));
    expect(readFileSync(join(run, 'train.log'), 'utf8')).toContain("workers: resuming 2 workers' checkpoint with 3: the classifier rows are re-sliced");
  }, 120_000);
});
