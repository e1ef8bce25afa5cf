import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';
import { readManifest, stepDir } from '../src/checkpoint/checkpoint.js';
import { maxRelDiff } from './helpers/compare.js';

const root = mkdtempSync(join(tmpdir(), 'shardface-dp-'));

/** Same job, any worker count: tiny without BatchNorm, 16×16 synthetic faces, 4 steps. */
async function train(workers: number, batch: number, name: string): Promise<string> {
  const runDir = join(root, name);
  const p = startCli([
    'train',
    '--workers',
    String(workers),
    '--batch',
    String(batch),
    '--backbone',
    'tiny',
    '--backbone-norm',
    'none',
    '--embedding-size',
    '16',
    '--image-size',
    '16',
    '--held-out-identities',
    '0',
    '--data',
    'synthetic:24',
    '--images-per-identity',
    '8',
    '--steps',
    '4',
    '--lr',
    '0.2',
    '--warmup-steps',
    '0',
    '--margin.s',
    '16',
    '--margin.m2',
    '0.2',
    '--seed',
    '5',
    '--run-dir',
    runDir,
    '--log-format',
    'json',
  ]);
  const { code } = await p.exit;
  expect(code, p.lines.slice(-20).join('\n')).toBe(0);
  return runDir;
}

function load(runDir: string) {
  const dir = stepDir(join(runDir, 'ckpt'), 4);
  const m = readManifest(dir);
  const backbone = readTensorFile(join(dir, m.backbone.file), m.backbone.sha256).tensors;
  const rows: Float32Array[] = m.shards.sort((a, b) => a.classStart - b.classStart).map((s) => readTensorFile(join(dir, s.file), s.sha256).tensors.weight!.data as Float32Array);
  const classifier = new Float32Array(rows.reduce((a, r) => a + r.length, 0));
  let o = 0;
  for (const r of rows) {
    classifier.set(r, o);
    o += r.length;
  }
  return { backbone, classifier };
}

describe('data parallel training is exact', () => {
  it('2 workers × batch 8 end with the same model as 1 worker × batch 16, and replicas stay bit-identical', async () => {
    const [two, one] = await Promise.all([train(2, 8, 'two'), train(1, 16, 'one')]);
    const a = load(two);
    const b = load(one);
    expect(Object.keys(a.backbone).sort()).toEqual(Object.keys(b.backbone).sort());
    for (const name of Object.keys(b.backbone)) {
      expect(maxRelDiff(a.backbone[name]!.data as Float32Array, b.backbone[name]!.data as Float32Array), name).toBeLessThan(1e-5);
    }
    expect(a.classifier.length).toBe(b.classifier.length);
    expect(maxRelDiff(a.classifier, b.classifier)).toBeLessThan(1e-5);
    // the parameters moved (the comparison is not between two untouched inits)
    const lines = readFileSync(join(two, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(4);
    expect(lines.at(-1).replicas_identical).toBe(1);
    const lossesOne = readFileSync(join(one, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).loss);
    lines.forEach((l, i) => expect(Math.abs(l.loss - lossesOne[i]) / lossesOne[i]).toBeLessThan(1e-5));
  });
});
