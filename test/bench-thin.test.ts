/**
 * `shardface bench thin` at toy size: both recipes train through real
 * processes, each line carries its verification and loss curve, and the
 * summary is the arithmetic of those lines (the 90% target is for the full
 * size, README "Benchmarks"). Workers run from dist/: compile with
 * `npx tsc -p .` first.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/processes.js';
import { lossByEpoch } from '../bench/thin.js';

describe('bench thin', () => {
  it('prints a line per recipe with held-out verification and a summary of the gain', async () => {
    const args = ['bench', 'thin', '--identities', '40', '--images-per-identity', '2', '--held-out-identities', '20', '--pairs', '16'];
    args.push('--image-size', '16', '--embedding-size', '8', '--batch', '8', '--epochs', '3', '--seed', '3');
    const { code, stdout, stderr } = await runCli(args, 120_000);
    expect(code, stderr.slice(-3000)).toBe(0);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.bench, l.recipe])).toEqual([
      ['thin', 'recommended'],
      ['thin', 'defaults'],
      ['thin-summary', undefined],
    ]);
    const [rec, def, summary] = lines as [Record<string, unknown>, Record<string, unknown>, Record<string, number>];
    // 40 identities × 2 images / (2 workers × 8) = 5 steps per epoch
    for (const l of [rec, def]) {
      expect(l.verification_accuracy).toBeGreaterThan(0);
      expect(l.verification_accuracy).toBeLessThanOrEqual(1);
      expect(l.pairs).toBe(16);
      expect(l.steps).toBe(15);
      expect(l.identities).toBe(40);
      expect(l.images_per_identity).toBe(2);
      const curve = l.loss_by_epoch as number[];
      expect(curve).toHaveLength(3);
      for (const v of curve) expect(Number.isFinite(v) && v > 0).toBe(true);
    }
    expect((rec.settings as Record<string, unknown>).marginWarmupEpochs).toBeGreaterThan(0);
    expect((def.settings as Record<string, unknown>).marginWarmupEpochs).toBe(0);
    expect((def.settings as { margin: { s: number; m2: number } }).margin).toMatchObject({ type: 'arcface', s: 64, m2: 0.5 });
    expect(summary.recommended).toBe(rec.verification_accuracy);
    expect(summary.defaults).toBe(def.verification_accuracy);
    expect(summary.gain).toBeCloseTo(summary.recommended - summary.defaults, 12);
  }, 130_000);

  it('rejects an unknown or repeated recipe with a usage error, training nothing', async () => {
    for (const recipes of ['recommended,fancy', 'defaults,defaults']) {
      const { code, stdout, stderr } = await runCli(['bench', 'thin', '--recipes', recipes], 20_000);
      expect(code).toBe(2);
      expect(stderr).toMatch(/--recipes must be comma-separated, each once, from recommended, defaults/);
      expect(stdout.trim()).toBe('');
    }
  }, 45_000);

  it('lossByEpoch averages the steps of each epoch', () => {
    expect(
      lossByEpoch([
        { epoch: 0, loss: 4 },
        { epoch: 0, loss: 2 },
        { epoch: 1, loss: 1 },
      ]),
    ).toEqual([3, 1]);
  });
});
