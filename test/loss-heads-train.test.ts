import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { readManifest, stepDir } from '../src/checkpoint/checkpoint.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';
import { maxRelDiff } from './helpers/compare.js';

const root = mkdtempSync(join(tmpdir(), 'shardface-heads-train-'));
const TINY = [
  '--backbone',
  'tiny',
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
  '--warmup-steps',
  '0',
  '--seed',
  '5',
  '--log-format',
  'json',
];

async function train(name: string, args: string[]): Promise<{ runDir: string; metrics: Record<string, number>[] }> {
  const runDir = join(root, name);
  const p = startCli(['train', ...TINY, ...args, '--run-dir', runDir]);
  const { code } = await p.exit;
  expect(code, p.lines.slice(-20).join('\n')).toBe(0);
  const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
  return { runDir, metrics };
}

function backboneTensors(runDir: string, step: number) {
  const dir = stepDir(join(runDir, 'ckpt'), step);
  const m = readManifest(dir);
  return readTensorFile(join(dir, m.backbone.file), m.backbone.sha256).tensors;
}

describe('training with the loss heads and with a teacher', () => {
  it('CurricularFace: t is one value on every worker each step, equals the 1-worker run, and is saved in the manifest', async () => {
    const common = ['--backbone-norm', 'none', '--steps', '4', '--lr', '0.2', '--loss', 'curricular', '--margin.s', '16', '--margin.m2', '0.2'];
    const [two, one] = await Promise.all([train('curricular-2', ['--workers', '2', '--batch', '8', ...common]), train('curricular-1', ['--workers', '1', '--batch', '16', ...common])]);
    expect(two.metrics).toHaveLength(4);
    two.metrics.forEach((m, i) => {
      expect(m.curricular_t_identical).toBe(1);
      expect(Math.abs(m.curricular_t! - one.metrics[i]!.curricular_t!)).toBeLessThan(1e-5 * Math.max(1e-3, Math.abs(one.metrics[i]!.curricular_t!)));
      expect(Math.abs(m.loss! - one.metrics[i]!.loss!) / one.metrics[i]!.loss!).toBeLessThan(1e-5);
    });
    // it moved: four EMA steps away from 0
    expect(new Set(two.metrics.map((m) => m.curricular_t)).size).toBe(4);
    expect(readManifest(stepDir(join(two.runDir, 'ckpt'), 4)).lossState).toEqual({ curricularT: two.metrics[3]!.curricular_t });
  });

  it('MagFace trains on 2 workers (loss includes the regulariser) and exits 0', async () => {
    const r = await train('magface', ['--workers', '2', '--batch', '8', '--steps', '3', '--lr', '0.1', '--loss', 'magface']);
    expect(r.metrics).toHaveLength(3);
    // tiny's embeddings start below l_a = 10: the regulariser alone adds λ_g·g(10) = 3.53 to the loss
    for (const m of r.metrics) expect(m.loss).toBeGreaterThan(3.5);
  });

  it("--teacher: a 3-step run's checkpoint distils into a student that reports distill_loss; --init-from starts the next generation from the student", async () => {
    const teacher = await train('teacher', ['--workers', '2', '--batch', '8', '--steps', '3', '--lr', '0.2']);
    const student = await train('student', ['--workers', '2', '--batch', '8', '--steps', '3', '--lr', '0.2', '--teacher', join(teacher.runDir, 'ckpt'), '--distill', 'angular']);
    for (const m of student.metrics) {
      expect(Number.isFinite(m.distill_loss)).toBe(true);
      expect(m.distill_loss).toBeGreaterThan(0);
      expect(m.distill_loss).toBeLessThanOrEqual(4); // 2 − 2cos
    }
    expect(student.metrics.at(-1)!.replicas_identical).toBe(1);

    // generation 2, with a learning rate too small to move anything: its weights are the student's
    const gen2 = await train('gen2', [
      '--workers',
      '2',
      '--batch',
      '8',
      '--steps',
      '1',
      '--lr',
      '1e-12',
      '--teacher',
      join(teacher.runDir, 'ckpt'),
      '--distill',
      'l2',
      '--init-from',
      join(student.runDir, 'ckpt'),
    ]);
    expect(gen2.metrics[0]!.distill_loss).toBeGreaterThan(0);
    const from = backboneTensors(student.runDir, 3);
    const to = backboneTensors(gen2.runDir, 1);
    const scratch = backboneTensors(teacher.runDir, 3);
    let moved = 0;
    for (const [name, t] of Object.entries(from)) {
      if (name.includes('running')) continue; // BatchNorm statistics move with every training forward
      if (name.startsWith('optimizer.')) {
        // --init-from starts a fresh optimizer: the new generation's momentum is its own, not the student's
        expect(maxRelDiff(to[name]!.data as Float32Array, t.data as Float32Array), name).toBeGreaterThan(1e-3);
        continue;
      }
      expect(maxRelDiff(to[name]!.data as Float32Array, t.data as Float32Array), name).toBeLessThan(1e-6);
      moved = Math.max(moved, maxRelDiff(scratch[name]!.data as Float32Array, t.data as Float32Array));
    }
    expect(moved).toBeGreaterThan(1e-3); // the comparison is not between two equal inits
  });
});
