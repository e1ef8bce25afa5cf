/** What the resume and graceful-stop tests share: running `shardface train`, and comparing two runs' checkpoints and records. */
import { expect } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './processes.js';
import { fileSha256 } from '../../src/checkpoint/tensor-file.js';
import { readManifest, stepDir } from '../../src/checkpoint/checkpoint.js';

/** `shardface train ARGS` to the end, with SHARDFACE_FAULT = `fault`: its exit code and both outputs. */
export function cli(args: string[], fault = '', timeout = 120_000): Promise<{ code: number; out: string }> {
  const env = { ...process.env, SHARDFACE_FAULT: fault };
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'train', ...args], { env, timeout, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

/**
 * A tiny 2-worker job with checkpoints at steps 4, 8 and 12, every one kept. Threads are
 * fixed: the native kernels' sums follow the thread count, and the tests compare bytes.
 */
export const TINY_CHECKPOINTED_JOB = {
  workers: 2,
  backbone: 'tiny',
  imageSize: 16,
  embeddingSize: 16,
  data: 'synthetic:20',
  imagesPerIdentity: 4,
  heldOutIdentities: 0,
  batch: 8,
  steps: 12,
  checkpointEvery: 4,
  checkpointKeep: 0,
  threads: 1,
  backend: 'cpu-native',
} as const;

export const newRunDir = () => mkdtempSync(join(tmpdir(), 'shardface-resume-'));

/** SHA-256 of every file of a run's checkpoint at `step` (the manifest aside: it records when it was written). */
export function checkpointHashes(runDir: string, step: number): Record<string, string> {
  const dir = stepDir(join(runDir, 'ckpt'), step);
  const m = readManifest(dir);
  const out: Record<string, string> = {};
  for (const f of [m.backbone, ...m.shards]) out[f.file] = fileSha256(join(dir, f.file)).sha256;
  return out;
}

export const records = (runDir: string) =>
  readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { step: number; loss: number; curricularT?: number });

/**
 * Run `b`, stopped and resumed from its checkpoint at step `after`, ended bit-identical to run `a`, which never
 * stopped: every checkpoint file at steps 8 and 12, and the loss of every step after `after`.
 */
export function expectSameContinuation(a: string, b: string, after: number, shards = 'classifier-shard'): void {
  for (const step of [8, 12]) {
    const ha = checkpointHashes(a, step);
    expect(Object.keys(ha).sort()).toEqual(['backbone.safetensors', `${shards}-0.safetensors`, `${shards}-1.safetensors`]);
    expect(checkpointHashes(b, step)).toEqual(ha);
  }
  // the continuation really moved the weights on from the checkpoint it started at
  expect(checkpointHashes(b, 12)['backbone.safetensors']).not.toBe(checkpointHashes(b, after)['backbone.safetensors']);
  const ra = records(a);
  const rb = records(b);
  expect(rb.map((r) => r.step)).toEqual(ra.map((r) => r.step));
  expect(rb.filter((r) => r.step > after).map((r) => [r.step, r.loss, r.curricularT])).toEqual(ra.filter((r) => r.step > after).map((r) => [r.step, r.loss, r.curricularT]));
}
