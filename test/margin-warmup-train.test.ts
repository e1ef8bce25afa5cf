/**
 * The margin warm-up through real training processes: at step 1 the ramp is
 * at zero, so the run's first loss is that of the same job trained with the
 * normalised softmax (margin.type softmax) — and not the full margin's; with
 * the classifier seen from the coordinator, this checks the worker wiring
 * (config → schedule → sharded classifier), not only the schedule.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './helpers/processes.js';

const root = mkdtempSync(join(tmpdir(), 'shardface-margin-warmup-'));

async function firstLosses(name: string, extra: string[]): Promise<number[]> {
  const runDir = join(root, name);
  const args = ['train', '--workers', '2', '--batch', '8', '--backbone', 'tiny', '--embedding-size', '16', '--image-size', '16', '--held-out-identities', '0'];
  args.push('--data', 'synthetic:24', '--images-per-identity', '4', '--steps', '3', '--margin.s', '16', '--seed', '2', '--run-dir', runDir, '--log-format', 'json', ...extra);
  const { code, stderr } = await runCli(args, 120_000);
  expect(code, stderr.slice(-2000)).toBe(0);
  return readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { loss: number }).loss);
}

describe('margin warm-up in training', () => {
  it('step 1 trains with no margin (= the softmax run), the fixed margin run differs', async () => {
    const [warm, softmax, fixed] = await Promise.all([
      firstLosses('warm', ['--margin-warmup-steps', '2']),
      firstLosses('softmax', ['--margin.type', 'softmax', '--margin.m2', '0']),
      firstLosses('fixed', []),
    ]);
    expect(warm[0]!).toBeCloseTo(softmax[0]!, 5);
    expect(fixed[0]! - warm[0]!).toBeGreaterThan(0.5); // m2 = 0.5 raises the loss of the same first batch
    // step 2 starts from the same model in both runs (step 1 was identical), so the gap is the half-way margin m2 = 0.25
    expect(Math.abs(warm[1]! - softmax[1]!)).toBeGreaterThan(1e-3);
  }, 150_000);
});
