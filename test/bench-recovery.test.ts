/**
 * `shardface bench recovery` at toy size: a worker is SIGKILLed mid-interval,
 * the restart is measured from the coordinator's log, and the line's figures
 * agree with the run's arithmetic. Workers run from dist/: compile with
 * `npx tsc -p .` first.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/processes.js';

describe('bench recovery', () => {
  it('prints steps lost, seconds to resume and the checkpoint write throughput beside a plain write', async () => {
    const args = ['bench', 'recovery', '--classes', '40', '--image-size', '16', '--embedding-size', '16', '--batch', '8'];
    args.push('--steps', '12', '--checkpoint-every', '4', '--kill-step', '7', '--reps', '1', '--backend', 'cpu-native');
    const { code, stdout, stderr } = await runCli(args, 120_000);
    expect(code, stderr.slice(-3000)).toBe(0);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const bench = lines.filter((l) => 'bench' in l);
    expect(bench).toHaveLength(1);
    const r = bench[0] as Record<string, number | boolean | string>;
    // killed at the start of step 7: steps 5 and 6 were done after the step-4 checkpoint and are redone
    expect(r).toMatchObject({ bench: 'recovery', kill_step: 7, checkpoint_step: 4, steps_lost: 2, steps_since_checkpoint: 2, steps_lost_ok: true, checkpoint_files: 3 });
    expect(r.seconds_to_resume).toBeGreaterThan(0);
    expect(r.checkpoint_bytes).toBeGreaterThan(40 * 16 * 4 * 2); // at least the weights and momentum of every class row
    expect(r.write_ratio as number).toBeCloseTo((r.write_bytes_per_s as number) / (r.plain_write_bytes_per_s as number), 10);
    // the restart's own records came through the run's log
    expect(lines.some((l) => l.event === 'resumed' && l.stepsLost === 2)).toBe(true);
  });

  it('refuses a kill before the first checkpoint', async () => {
    const { code, stderr } = await runCli(['bench', 'recovery', '--checkpoint-every', '20', '--kill-step', '10']);
    expect(code).toBe(2);
    expect(stderr).toContain('--kill-step 10 must come after the first checkpoint (--checkpoint-every 20)');
  });
});
