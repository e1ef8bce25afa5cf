/**
 * `--occlusion adversarial` end to end: a 2-worker training run through
 * adversary pre-training and joint training (docs/methods.md#adversarial-training), then `shardface eval
 * --occlude` on its checkpoint. Uses dist/: compile with `npx tsc -p .` first.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli as cli } from './helpers/processes.js';
import { writePairFixture, type PairFixture } from './helpers/eval-fixtures.js';
import { readManifest } from '../src/checkpoint/checkpoint.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';

const START = 6;
const PRETRAIN = 4;
let dir: string;
let run: string;
let fx: PairFixture;
let train: { code: number; stdout: string; stderr: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'shardface-occlusion-'));
  run = join(dir, 'run');
  fx = writePairFixture(join(dir, 'fixture'), { identities: 12, perIdentity: 5, size: 32, folds: 10, perFold: 8 });
  train = await cli([
    'train',
    '--workers',
    '2',
    '--batch',
    '32',
    '--image-size',
    '32',
    '--embedding-size',
    '64',
    '--data',
    'synthetic:60',
    '--images-per-identity',
    '10',
    '--held-out-identities',
    '20',
    '--verification-pairs',
    '200',
    '--epochs',
    '5',
    '--warmup-epochs',
    '0',
    '--margin.s',
    '32',
    '--margin.m2',
    '0.3',
    '--run-dir',
    run,
    '--log-format',
    'json',
    '--log-every',
    '1',
    '--occlusion',
    'adversarial',
    '--occlusion-start-step',
    String(START),
    '--occlusion-pretrain-steps',
    String(PRETRAIN),
    '--occlusion-width',
    '16',
    '--augment.occluders',
    '0.5',
  ]);
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('shardface train --occlusion adversarial (2 workers)', () => {
  it('exits 0, goes through plain, pre-training and joint steps, and lowers the loss', () => {
    expect(train.code, train.stderr.slice(-3000)).toBe(0);
    const rows = readFileSync(join(run, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>);
    expect(rows).toHaveLength(45);
    for (const r of rows) expect(Number.isFinite(r.loss)).toBe(true);
    // pre-training steps freeze the backbone: no backbone gradient (grad_norm 0)
    expect(rows.slice(START, START + PRETRAIN).map((r) => r.grad_norm)).toEqual([0, 0, 0, 0]);
    // joint training: loss = ½(L_clean + L_masked), falling
    const joint = rows.slice(START + PRETRAIN);
    const mean = (a: Record<string, number>[]) => a.reduce((s, r) => s + r.loss!, 0) / a.length;
    expect(mean(joint.slice(-3))).toBeLessThan(0.85 * mean(joint.slice(0, 3)));
    expect(rows.at(-1)!.replicas_identical).toBe(1);

    // rank 0 logs the occlusion metrics of every step (--log-every 1)
    const logs = readFileSync(join(run, 'workers.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'occlusion step');
    const stage1 = logs.filter((l) => l.occlusionStage === 1);
    const stage2 = logs.filter((l) => l.occlusionStage === 2);
    expect(stage1.map((l) => l.step)).toEqual([7, 8, 9, 10]);
    for (const l of stage1) {
      expect(l.occlusionCandidates).toBe(14);
      expect((l.targetLandmarkShare as number) + (l.targetHalfShare as number) + (l.targetRandomShare as number)).toBeCloseTo(1, 6);
      expect(Number.isFinite(l.generatorLoss)).toBe(true);
    }
    expect(stage2).toHaveLength(45 - START - PRETRAIN);
    for (const l of stage2) {
      for (const k of ['lossClean', 'lossMasked', 'segLoss', 'generatorLoss']) expect(Number.isFinite(l[k] as number), k).toBe(true);
      expect(((l.lossClean as number) + (l.lossMasked as number)) / 2).toBeCloseTo(l.loss as number, 3);
      expect(l.adversaryShare).toBeGreaterThanOrEqual(0);
      expect(l.adversaryShare).toBeLessThanOrEqual(1);
    }
    // augment.occluders 0.5: about half of each global batch of 64 carries a drawn occluder
    const occludedShare = stage2.reduce((a, l) => a + (l.occludedShare as number), 0) / stage2.length;
    expect(occludedShare).toBeGreaterThan(0.35);
    expect(occludedShare).toBeLessThan(0.65);
    // masking hurts: the masked loss is above the clean one on average
    const avg = (k: string) => stage2.reduce((s, l) => s + (l[k] as number), 0) / stage2.length;
    expect(avg('lossMasked')).toBeGreaterThan(avg('lossClean'));
  });

  it('saves G and S in the backbone checkpoint file', () => {
    const step = join(run, 'ckpt', 'step-000045');
    const m = readManifest(step);
    const { tensors } = readTensorFile(join(step, m.backbone.file), m.backbone.sha256);
    const names = Object.keys(tensors);
    expect(names.some((n) => n.startsWith('occlusion.generator.'))).toBe(true);
    expect(names.some((n) => n.startsWith('occlusion.segmentation.'))).toBe(true);
    expect(names).toContain('stage1.down.conv.weight');
  });
});

describe('shardface eval --occlude on the trained checkpoint', () => {
  it('scores occluded images lower than clean ones, deterministically', async () => {
    const ckpt = join(run, 'ckpt');
    const base = ['eval', '--checkpoint', ckpt, '--pair-list', fx.pairList];
    const kinds = ['eyes', 'mouth', 'half', 'random'] as const;
    const [clean, ...occluded] = await Promise.all([cli(base), ...kinds.map((k) => cli([...base, '--occlude', k]))]);
    const parse = (r: { code: number; stdout: string; stderr: string }) => {
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout.trim()) as { accuracy: number; occlude?: string; pairs: number };
    };
    const c = parse(clean);
    expect(c.occlude).toBeUndefined();
    const acc = occluded.map(parse);
    acc.forEach((a, i) => expect(a.occlude).toBe(kinds[i]));
    const accuracies = Object.fromEntries(acc.map((a, i) => [kinds[i], a.accuracy]));
    expect(acc.filter((a) => a.accuracy !== c.accuracy).length, JSON.stringify({ clean: c.accuracy, ...accuracies })).toBeGreaterThanOrEqual(3);
    const meanOccluded = acc.reduce((s, a) => s + a.accuracy, 0) / acc.length;
    expect(meanOccluded, JSON.stringify({ clean: c.accuracy, ...accuracies })).toBeLessThan(c.accuracy);
    expect(accuracies.half!).toBeLessThan(c.accuracy);
    // the same occluders again: the same score
    expect(parse(await cli([...base, '--occlude', 'random'])).accuracy).toBe(accuracies.random);
    const bad = await cli([...base, '--occlude', 'hat']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--occlude must be one of eyes, mouth, half, random/);
  });
});

describe('shardface eval --seg-gate', () => {
  it('scores through the segmentation head of an occlusion run, and refuses a checkpoint without one', async () => {
    const base = ['eval', '--pair-list', fx.pairList];
    const gated = await cli([...base, '--checkpoint', join(run, 'ckpt'), '--seg-gate', '--occlude', 'half']);
    expect(gated.code, gated.stderr).toBe(0);
    const r = JSON.parse(gated.stdout.trim()) as { accuracy: number; seg_gate?: boolean; occlude?: string };
    expect(r.seg_gate).toBe(true);
    expect(r.occlude).toBe('half');
    expect(r.accuracy).toBeGreaterThan(0.4);
    const plainRun = join(dir, 'plain');
    const t = await cli([
      'train',
      '--workers',
      '2',
      '--batch',
      '16',
      '--image-size',
      '32',
      '--embedding-size',
      '16',
      '--data',
      'synthetic:20',
      '--images-per-identity',
      '4',
      '--held-out-identities',
      '0',
      '--epochs',
      '1',
      '--run-dir',
      plainRun,
      '--log-format',
      'json',
    ]);
    expect(t.code, t.stderr.slice(-2000)).toBe(0);
    const refused = await cli([...base, '--checkpoint', join(plainRun, 'ckpt'), '--seg-gate']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/no occlusion segmentation head .*--seg-gate needs a checkpoint of an occlusion: adversarial run/);
  });
});
