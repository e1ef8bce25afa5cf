/**
 * `shardface bench occlusion` at toy size: both runs train through real
 * processes, every line carries its scores, and the summary is the arithmetic
 * of those lines. Workers run from dist/: compile with `npx tsc -p .` first.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/processes.js';

interface Scores {
  clean_accuracy: number;
  occluded_accuracy: Record<string, number>;
  mean_occluded_accuracy: number;
}

describe('bench occlusion', () => {
  it('prints a line per run (the adversarial one also seg-gated) and a summary of the gains', async () => {
    const args = ['bench', 'occlusion', '--workers', '2', '--batch', '8', '--image-size', '32', '--identities', '12', '--images-per-identity', '4', '--held-out-identities', '10'];
    args.push('--pairs', '60', '--epochs', '3', '--start-fraction', '0.3', '--pretrain-steps', '1', '--width', '8', '--train-occluders', '0.5', '--seeds', '4');
    const { code, stdout, stderr } = await runCli(args, 170_000);
    expect(code, stderr.slice(-3000)).toBe(0);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.bench, l.occlusion])).toEqual([
      ['occlusion', 'none'],
      ['occlusion', 'adversarial'],
      ['occlusion-summary', undefined],
    ]);
    const [none, adv, summary] = lines as [Scores & Record<string, unknown>, Scores & { seg_gate: Scores }, Record<string, unknown>];
    for (const s of [none, adv, adv.seg_gate]) {
      expect(Object.keys(s.occluded_accuracy).sort()).toEqual(['eyes', 'half', 'mouth', 'random']);
      const kinds = Object.values(s.occluded_accuracy);
      expect(s.mean_occluded_accuracy).toBeCloseTo(kinds.reduce((a, v) => a + v, 0) / 4, 12);
      for (const v of [s.clean_accuracy, ...kinds]) {
        expect(v).toBeGreaterThan(0);
        expect(v).toBeLessThanOrEqual(1);
      }
    }
    expect(none.seg_gate).toBeNull();
    expect(none.feature_map).toEqual([8, 8, 32]);
    expect(summary.occluded_gain).toBeCloseTo(adv.mean_occluded_accuracy - none.mean_occluded_accuracy, 12);
    expect(summary.occluded_gain_per_seed).toEqual([summary.occluded_gain]);
    expect(summary.seg_gate_occluded_gain).toBeCloseTo(adv.seg_gate.mean_occluded_accuracy - none.mean_occluded_accuracy, 12);
    expect(summary.clean_change).toBeCloseTo(adv.clean_accuracy - none.clean_accuracy, 12);
  }, 180_000);
});
