import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { checkpointProblems, readManifest } from '../src/checkpoint/checkpoint.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';

describe('shardface train with 2 workers on synthetic faces', () => {
  it('lowers the loss, writes metrics, a checkpoint and a summary, and exits 0', async () => {
    const runDir = join(mkdtempSync(join(tmpdir(), 'shardface-train-')), 'run');
    const p = startCli([
      'train',
      '--workers',
      '2',
      '--batch',
      '32',
      '--image-size',
      '24',
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
      '4',
      '--warmup-epochs',
      '0',
      '--margin.s',
      '32',
      '--margin.m2',
      '0.3',
      '--checkpoint-every',
      '10',
      '--run-dir',
      runDir,
      '--log-format',
      'json',
    ]);
    const { code } = await p.exit;
    expect(code, p.lines.slice(-20).join('\n')).toBe(0);

    const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(36); // 600 images / 64 per step = 9 steps per epoch × 4
    const first = metrics.slice(0, 3).reduce((a, m) => a + m.loss, 0) / 3;
    const last = metrics.slice(-3).reduce((a, m) => a + m.loss, 0) / 3;
    expect(last).toBeLessThan(0.8 * first);
    for (const m of metrics) {
      expect(Number.isFinite(m.loss)).toBe(true);
      expect(m.images_per_s).toBeGreaterThan(0);
    }
    expect(metrics.at(-1).replicas_identical).toBe(1);

    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ ok: true, steps: 36, epochs: 4 });
    expect(summary.verification.pairs).toBe(200);
    expect(summary.verification.accuracy).toBeGreaterThan(0.5);
    expect(summary.final_loss).toBeCloseTo(metrics.at(-1).loss, 6);

    // checkpoints every 10 steps and at the end, each complete (manifest written last, checksums inside);
    // checkpointKeep (default 3) removed step 10 once step 36 was complete
    const steps = readdirSync(join(runDir, 'ckpt')).sort();
    expect(steps).toEqual(['step-000020', 'step-000030', 'step-000036']);
    expect(checkpointProblems(join(runDir, 'ckpt', 'step-000020'))).toEqual([]);
    const m = readManifest(join(runDir, 'ckpt', 'step-000036'));
    expect(m.world).toBe(2);
    expect(m.shards.map((s) => [s.classStart, s.classCount])).toEqual([
      [0, 30],
      [30, 30],
    ]);
    expect(summary.checkpoint).toBe(join(runDir, 'ckpt', 'step-000036'));
    // the backbone file also carries the optimizer's momentum, so a resume can continue exactly
    const bb = readTensorFile(join(runDir, 'ckpt', 'step-000036', m.backbone.file), m.backbone.sha256);
    expect(bb.metadata.optimizer).toBe('sgd');
    expect(bb.metadata.optimizerStep).toBe('36');
    const slots = Object.keys(bb.tensors).filter((k) => k.startsWith('optimizer.'));
    expect(slots.length).toBeGreaterThan(0);
    expect(existsSync(join(runDir, 'config.json'))).toBe(true);

    // JSON logs carry role/rank/step; the coordinator logs progress
    const steps10 = p.json().filter((l) => l.msg === 'step' && l.role === 'coordinator');
    expect(steps10.length).toBeGreaterThan(0);
  });
});
