/**
 * The numerical guard through the real CLI (coordinator + 2 worker
 * processes): an injected NaN gradient on one rank skips the step on every
 * rank with nothing changed (DCQ's queue and key encoder and the occlusion
 * adversary included); maxBadSteps skips in a row stop the job with an
 * error naming the step and rank; the diverging lr-100 run of the issue ends
 * in bounded time without a non-finite checkpoint. Also SHARDFACE_FAULT's
 * parsing and its kill fault.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './helpers/processes.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';
import { readManifest } from '../src/checkpoint/checkpoint.js';
import { faultAt, parseFaults, stallAt } from '../src/worker/faults.js';
import { TINY_TRAIN_ARGS } from './helpers/train-args.js';

const TINY = TINY_TRAIN_ARGS;

function train(args: string[], fault: string | null, timeout = 120_000): Promise<{ code: number; out: string; runDir: string }> {
  const runDir = mkdtempSync(join(tmpdir(), 'shardface-guard-'));
  const env = { ...process.env, SHARDFACE_FAULT: fault ?? '' };
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'train', ...args, '--run-dir', runDir], { env, timeout, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, out: stdout + stderr, runDir });
    });
  });
}

const metricsOf = (runDir: string) =>
  readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number | null>);
const stepDirs = (runDir: string) =>
  existsSync(join(runDir, 'ckpt'))
    ? readdirSync(join(runDir, 'ckpt'))
        .filter((d) => d.startsWith('step-'))
        .sort()
    : [];

/** Every tensor of every file of a checkpoint, by file/name. */
function tensorsOf(dir: string): Map<string, Float32Array | Int32Array | Uint8Array | Float64Array> {
  const m = readManifest(dir);
  const out = new Map<string, Float32Array | Int32Array | Uint8Array | Float64Array>();
  for (const f of [m.backbone, ...m.shards]) for (const [name, t] of Object.entries(readTensorFile(join(dir, f.file), f.sha256).tensors)) out.set(`${f.file}/${name}`, t.data);
  return out;
}

const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('SHARDFACE_FAULT', () => {
  it('parses a comma-separated list and refuses malformed entries, naming them', () => {
    expect(parseFaults(undefined)).toEqual([]);
    expect(parseFaults('')).toEqual([]);
    const f = parseFaults('nan:rank=1:step=12,kill:step=30:rank=0,kill:rank=0:step=30:restart=2');
    expect(f).toEqual([
      { kind: 'nan', rank: 1, step: 12, restart: 0 },
      { kind: 'kill', rank: 0, step: 30, restart: 0 },
      { kind: 'kill', rank: 0, step: 30, restart: 2 },
    ]);
    expect(faultAt(f, 'nan', 1, 12)).toBe(true);
    expect(faultAt(f, 'nan', 0, 12)).toBe(false);
    expect(faultAt(f, 'kill', 0, 12)).toBe(false);
    // a fault fires in one round of a restarted job only: the redone step 30 of round 1 is not killed, round 2's is
    expect([0, 1, 2].map((restarts) => faultAt(f, 'kill', 0, 30, restarts))).toEqual([true, false, true]);
    expect(faultAt(f, 'nan', 1, 12, 1)).toBe(false);
    expect(() => parseFaults('inf:rank=1:step=2')).toThrow(/entry "inf:rank=1:step=2": unknown kind "inf"/);
    expect(() => parseFaults('nan:rank=1')).toThrow(/needs both rank= and step=/);
    expect(() => parseFaults('nan:rank=x:step=2')).toThrow(/"rank=x" is not rank=N, step=N, restart=N \(or ms=N for stall\)/);
    expect(() => parseFaults('nan:rank=1:rank=2:step=2')).toThrow(/rank given twice/);
    expect(() => parseFaults('nan:rank=1:step=0')).toThrow(/step must be ≥ 1/);
    expect(() => parseFaults('nan:rank=1:step=2,')).toThrow(/unknown kind ""/);
    // stall: a slow step on one rank, for signals that must land mid-step
    const s = parseFaults('stall:rank=1:step=6:ms=1500,stall:rank=0:step=2');
    expect(s).toEqual([
      { kind: 'stall', rank: 1, step: 6, ms: 1500, restart: 0 },
      { kind: 'stall', rank: 0, step: 2, ms: 2000, restart: 0 },
    ]);
    expect([stallAt(s, 1, 6), stallAt(s, 0, 2), stallAt(s, 0, 6), stallAt(s, 1, 6, 1)]).toEqual([1500, 2000, 0, 0]);
    expect(() => parseFaults('nan:rank=1:step=2:ms=5')).toThrow(/ms= belongs to stall only/);
  });
});

describe('numerical guard (real processes)', () => {
  it('a NaN gradient on rank 1 skips the step on every rank and changes nothing; training goes on', async () => {
    // 5 steps, checkpoint every step; NaN at step 3 (mid-run) and step 5 (the last, whose final checkpoint is still written)
    const r = await train([...TINY, '--steps', '5', '--checkpoint-every', '1', '--checkpoint-keep', '0'], 'nan:rank=1:step=3,nan:rank=1:step=5');
    expect(r.code, r.out).toBe(0);
    const rows = metricsOf(r.runDir);
    expect(rows.map((x) => x.skipped ?? 0)).toEqual([0, 0, 1, 0, 1]);
    expect(rows[2]!.grad_norm).toBeNull();
    expect(rows[3]!.grad_norm).toBeGreaterThan(0);
    const warns = readFileSync(join(r.runDir, 'train.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('skipped on every rank'))
      .map((l) => JSON.parse(l) as { level: number; step: number; ranks: number[] });
    expect(warns.map((w) => [w.level, w.step, w.ranks])).toEqual([
      [40, 3, [1]],
      [40, 5, [1]],
    ]);
    // a skipped step writes no periodic checkpoint; the final one holds the state the skip left alone
    expect(stepDirs(r.runDir)).toEqual(['step-000001', 'step-000002', 'step-000004', 'step-000005']);
    const s2 = tensorsOf(join(r.runDir, 'ckpt', 'step-000002'));
    const s4 = tensorsOf(join(r.runDir, 'ckpt', 'step-000004'));
    const s5 = tensorsOf(join(r.runDir, 'ckpt', 'step-000005'));
    expect([...s5.keys()].sort()).toEqual([...s4.keys()].sort());
    expect([...s5.keys()].some((k) => k.startsWith('backbone') && k.includes('optimizer.'))).toBe(true);
    expect([...s5.keys()].filter((k) => k.startsWith('classifier-shard-')).length).toBeGreaterThanOrEqual(4); // weight + momentum of both shards
    for (const [k, v] of s5) expect(bytes(v).equals(bytes(s4.get(k)!)), k).toBe(true);
    // the check has teeth: step 4 (a real step) did move the weights
    expect([...s4].some(([k, v]) => !bytes(v).equals(bytes(s2.get(k)!)))).toBe(true);
    // the optimizer counted only the applied steps (1, 2, 4)
    const bb = readTensorFile(join(r.runDir, 'ckpt', 'step-000005', readManifest(join(r.runDir, 'ckpt', 'step-000005')).backbone.file));
    expect(bb.metadata.optimizerStep).toBe('3');
  }, 120_000);

  // DCQ's key encoder (EMA and its BatchNorm statistics), queue keys, labels and pointer; the occlusion adversary's G
  // and S with their optimizer slots: all of it wait for the step's apply, so the final checkpoint after a skipped
  // last step equals the one before it bit for bit (before that was so, they moved inside the step)
  it.each([
    ['dcq', ['--classifier', 'dcq', '--dcq.queue-size', '64', '--warmup-steps', '0']],
    ['occlusion (joint stage)', ['--occlusion', 'adversarial', '--occlusion-start-step', '1', '--occlusion-pretrain-steps', '1', '--occlusion-width', '16']],
  ])(
    '%s: a skipped step leaves every method state unchanged',
    async (_name, extra) => {
      const r = await train([...TINY, ...extra, '--steps', '4', '--checkpoint-every', '1', '--checkpoint-keep', '0'], 'nan:rank=1:step=4');
      expect(r.code, r.out.slice(-3000)).toBe(0);
      expect(metricsOf(r.runDir).map((x) => x.skipped ?? 0)).toEqual([0, 0, 0, 1]);
      expect(stepDirs(r.runDir)).toEqual(['step-000001', 'step-000002', 'step-000003', 'step-000004']);
      const s2 = tensorsOf(join(r.runDir, 'ckpt', 'step-000002'));
      const s3 = tensorsOf(join(r.runDir, 'ckpt', 'step-000003'));
      const s4 = tensorsOf(join(r.runDir, 'ckpt', 'step-000004'));
      expect([...s4.keys()].sort()).toEqual([...s3.keys()].sort());
      for (const [k, v] of s4) expect(bytes(v).equals(bytes(s3.get(k)!)), k).toBe(true);
      // the method state is in the files compared, and an applied step (3) moved it
      // (DCQ: global batch 16 of a 64-slot queue, so step 3 writes slots 32…47, rank 1's)
      const methodKeys = extra.includes('dcq') ? ['queue-shard-1.safetensors/keys', 'queue-shard-1.safetensors/labels'] : ['backbone.safetensors/occlusion.'];
      for (const m of methodKeys)
        expect(
          [...s3].some(([k, v]) => k.startsWith(m) && !bytes(v).equals(bytes(s2.get(k)!))),
          m,
        ).toBe(true);
      if (extra.includes('dcq')) {
        const meta = (step: string) => readTensorFile(join(r.runDir, 'ckpt', step, 'queue-shard-0.safetensors')).metadata.ptr;
        expect(meta('step-000004')).toBe(meta('step-000003'));
      }
    },
    120_000,
  );

  it('maxBadSteps skipped steps in a row stop the job, naming the step and rank, with no checkpoint at or after them', async () => {
    const r = await train([...TINY, '--steps', '6', '--checkpoint-every', '1', '--max-bad-steps', '2'], 'nan:rank=1:step=3,nan:rank=1:step=4');
    expect(r.code).not.toBe(0);
    const summary = JSON.parse(readFileSync(join(r.runDir, 'summary.json'), 'utf8')) as { ok: boolean; error: string };
    expect(summary.ok).toBe(false);
    expect(summary.error).toMatch(/numerical guard: 2 steps in a row skipped \(maxBadSteps 2\); step 4 had non-finite gradients from rank\(s\) 1/);
    expect(r.out).toContain('numerical guard');
    expect(stepDirs(r.runDir)).toEqual(['step-000001', 'step-000002']);
  }, 120_000);

  it("the issue's lr-100 run ends in bounded time (trained through skips or stopped by the guard) and never saves non-finite weights", async () => {
    const t0 = Date.now();
    const r = await train(
      [
        '--data',
        'synthetic:40',
        '--image-size',
        '32',
        '--batch',
        '8',
        '--epochs',
        '2',
        '--embedding-size',
        '64',
        '--lr',
        '100',
        '--weight-decay',
        '1',
        '--clip-grad-norm',
        '0',
        '--checkpoint-every',
        '5',
        '--log-format',
        'json',
      ],
      null,
      150_000,
    );
    expect(Date.now() - t0).toBeLessThan(150_000);
    const summary = JSON.parse(readFileSync(join(r.runDir, 'summary.json'), 'utf8')) as { ok: boolean; error?: string };
    if (r.code === 0) expect(summary.ok).toBe(true);
    else expect(summary.error, r.out.slice(-2000)).toMatch(/numerical guard: \d+ steps in a row skipped/);
    for (const d of stepDirs(r.runDir)) for (const [k, v] of tensorsOf(join(r.runDir, 'ckpt', d))) if (v instanceof Float32Array) expect(v.every(Number.isFinite), `${d} ${k}`).toBe(true);
  }, 160_000);

  it('kill:rank=0:step=2 ends worker 0 abruptly and the job stops naming it; a malformed SHARDFACE_FAULT stops it naming the entry', async () => {
    const killed = await train([...TINY, '--steps', '4'], 'kill:rank=0:step=2');
    expect(killed.code).not.toBe(0);
    expect(JSON.parse(readFileSync(join(killed.runDir, 'summary.json'), 'utf8')).error).toMatch(/rank 0/);
    const bad = await train([...TINY, '--steps', '2'], 'nan:rank=1:step=two');
    expect(bad.code).not.toBe(0);
    expect(JSON.parse(readFileSync(join(bad.runDir, 'summary.json'), 'utf8')).error).toMatch(/SHARDFACE_FAULT entry "nan:rank=1:step=two"/);
  }, 120_000);
});
