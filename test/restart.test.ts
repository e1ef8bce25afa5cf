/**
 * maxRestarts: a worker SIGKILLed mid-run is replaced, every process goes back
 * to the newest verified checkpoint, and the run ends with checkpoints
 * bit-identical (SHA-256 of every file) to a run that was never interrupted —
 * under the local launcher and with workers started by hand as a scheduler
 * would. The failure after the last restart stops the job naming the rank, and
 * a replacement with the wrong token is refused while the right one is let in.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, startCli, startCoordinator } from './helpers/processes.js';
import { stepDir } from '../src/checkpoint/checkpoint.js';
import { checkpointHashes, records, TINY_CHECKPOINTED_JOB } from './helpers/resume.js';
import { parsePrometheus } from './helpers/prometheus-text.js';

const dir = mkdtempSync(join(tmpdir(), 'shardface-restart-'));
const CONFIG = join(dir, 'train.json');
// one config for every run here, so all of them train the same model step by step
writeFileSync(CONFIG, JSON.stringify({ ...TINY_CHECKPOINTED_JOB, maxRestarts: 1, logFormat: 'json' }));
const runDir = (name: string) => join(dir, name);

const summary = (run: string) => JSON.parse(readFileSync(join(run, 'summary.json'), 'utf8')) as { ok: boolean; steps: number; restarts: number; error?: string };

/** The uninterrupted run everything is compared with. */
const straight = runDir('straight');

function expectSameAsStraight(run: string): void {
  for (const step of [8, 12]) {
    const h = checkpointHashes(straight, step);
    expect(Object.keys(h).sort()).toEqual(['backbone.safetensors', 'classifier-shard-0.safetensors', 'classifier-shard-1.safetensors']);
    expect(checkpointHashes(run, step), `checkpoint of step ${step}`).toEqual(h);
  }
  // one record per step, the redone steps' records replacing the lost ones, with the same losses
  expect(records(run).map((r) => [r.step, r.loss])).toEqual(records(straight).map((r) => [r.step, r.loss]));
}

describe('train --max-restarts', () => {
  beforeAll(async () => {
    const r = await runCli(['train', '--config', CONFIG, '--run-dir', straight]);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
  }, 120_000);

  it('replaces a SIGKILLed worker, reloads the step-4 checkpoint everywhere and ends bit-identical to an uninterrupted run', async () => {
    const run = runDir('killed');
    const p = startCli(['train', '--config', CONFIG, '--run-dir', run, '--metrics-port', '0'], { SHARDFACE_FAULT: 'kill:rank=1:step=7' });
    const page = await p.waitFor((l) => l.msg === 'status page and metrics', 60_000);
    const resumed = await p.waitFor((l) => l.event === 'resumed', 90_000);
    // the Prometheus counter counts it while the run goes on
    const text = await (await fetch(String(page.metrics))).text();
    expect(parsePrometheus(text).value('shardface_restarts_total')).toBe(1);
    const exit = await p.exit;
    expect(exit.code, p.lines.slice(-20).join('\n')).toBe(0);

    const log = p.json();
    const coordinator = log.filter((l) => l.role === 'coordinator');
    const failed = coordinator.find((l) => l.event === 'worker-failed');
    expect(failed).toMatchObject({ rank: 1, restart: 1, maxRestarts: 1, lastCompletedStep: 6 });
    expect(String(failed?.reason)).toMatch(/worker rank 1 \(host .+, pid \d+\) exited with signal SIGKILL/);
    expect(coordinator.find((l) => l.event === 'checkpoint-reloaded')).toMatchObject({ rank: 1, checkpointStep: 4, stepsLost: 2, checkpoint: stepDir(join(run, 'ckpt'), 4) });
    expect(coordinator.find((l) => l.event === 'replacement-joined')).toMatchObject({ rank: 1, restart: 1 });
    expect(resumed).toMatchObject({ rank: 1, checkpointStep: 4, stepsLost: 2, step: 5 });
    expect(resumed.secondsToResume).toBeGreaterThan(0);
    // the survivor stayed in its process and registered again; only rank 1's process was replaced
    const survivor = log.find((l) => l.role === 'worker' && l.msg === 'job restarting from its newest checkpoint; registering again');
    expect(survivor?.rank).toBe(0);
    expect(coordinator.some((l) => l.event === 'replacing')).toBe(false);
    expect(summary(run)).toMatchObject({ ok: true, steps: 12, restarts: 1 });
    expectSameAsStraight(run);
  }, 150_000);

  it("over CURVE: the replacement authenticates with the lost rank's key pair and the run still ends bit-identical", async () => {
    const keys = join(dir, 'keys');
    expect((await runCli(['keys', 'generate', keys, '--workers', '2'])).code).toBe(0);
    const run = runDir('curve');
    const p = startCli(['train', '--config', CONFIG, '--run-dir', run, '--curve-keys', keys], { SHARDFACE_FAULT: 'kill:rank=1:step=6' });
    const exit = await p.exit;
    expect(exit.code, p.lines.slice(-20).join('\n')).toBe(0);
    expect(p.json().find((l) => l.event === 'checkpoint-reloaded')).toMatchObject({ rank: 1, checkpointStep: 4, stepsLost: 1 });
    expect(p.json().filter((l) => l.msg === 'joined job' && l.curve === true)).toHaveLength(4);
    expect(summary(run)).toMatchObject({ ok: true, restarts: 1 });
    expectSameAsStraight(run);
  }, 150_000);

  it('stops at the failure after the last restart, naming the rank', async () => {
    const run = runDir('twice');
    // round 0 loses rank 1 at step 7; round 1 (its replacement) at step 6; the fault of one round never fires in another
    const p = startCli(['train', '--config', CONFIG, '--run-dir', run], { SHARDFACE_FAULT: 'kill:rank=1:step=7,kill:rank=1:step=6:restart=1' });
    const exit = await p.exit;
    expect(exit.code).toBe(1);
    const stop = p.json().find((l) => l.msg === 'stopping job');
    expect(String(stop?.reason)).toMatch(/^worker rank 1 \(host .+, pid \d+\) exited with signal SIGKILL; last completed step 5; no restart left \(maxRestarts 1, all used\)$/);
    expect(summary(run)).toMatchObject({ ok: false, restarts: 1 });
    expect(p.json().filter((l) => l.event === 'worker-failed')).toHaveLength(1);
  }, 150_000);

  it('with workers started elsewhere: the survivor registers again by itself, a replacement with the wrong token is refused, the right one continues bit-identically', async () => {
    const run = runDir('external');
    writeFileSync(join(dir, 'token'), 'team-secret');
    writeFileSync(join(dir, 'wrong-token'), 'guessed');
    const { coord, address: addr } = await startCoordinator([
      '--config',
      CONFIG,
      '--workers',
      '2',
      '--token-file',
      join(dir, 'token'),
      '--job',
      'sched-7',
      '--run-dir',
      run,
      '--heartbeat-ms',
      '300',
      '--worker-timeout',
      '3',
    ]);
    await coord.waitFor((l) => /waiting for 2 workers/.test(String(l.msg)));
    const worker = (rank: number, token: string, env: NodeJS.ProcessEnv = {}) => startCli(['worker', '--coordinator', addr, '--rank', String(rank), '--token-file', join(dir, token)], env);
    const w0 = worker(0, 'token');
    const w1 = worker(1, 'token', { SHARDFACE_FAULT: 'kill:rank=1:step=7' });
    expect((await w1.exit).signal).toBe('SIGKILL');
    // no launcher here: the coordinator notices the silence, then waits for rank 1 as a scheduler would restart it
    const reloaded = await coord.waitFor((l) => l.event === 'checkpoint-reloaded', 30_000);
    expect(reloaded).toMatchObject({ rank: 1, checkpointStep: 4 });
    expect(String(coord.json().find((l) => l.event === 'worker-failed')?.reason)).toMatch(/^worker rank 1 \(host .+, pid \d+\) silent for/);

    const impostor = worker(1, 'wrong-token');
    const refused = await impostor.exit;
    expect(refused.code).toBe(1);
    expect(
      impostor.json().some((l) => /coordinator refused registration: bad-token/.test(String(l.reason))),
      impostor.lines.join('\n'),
    ).toBe(true);
    expect(coord.json().some((l) => l.msg === 'rejected message from an unregistered connection' && l.code === 'bad-token')).toBe(true);

    // a scheduler takes its time: the survivor, registered and waiting, must not be taken for silent meanwhile
    await new Promise((r) => setTimeout(r, 4000));
    const replacement = worker(1, 'token');
    const [c, r0, r1] = await Promise.all([coord.exit, w0.exit, replacement.exit]);
    expect(c.code, coord.lines.slice(-20).join('\n')).toBe(0);
    expect([r0.code, r1.code]).toEqual([0, 0]);
    expect(w0.json().some((l) => l.msg === 'job restarting from its newest checkpoint; registering again')).toBe(true);
    expect(replacement.json().find((l) => l.msg === 'joined job')?.rank).toBe(1);
    expect(summary(run)).toMatchObject({ ok: true, restarts: 1 });
    expectSameAsStraight(run);
  }, 150_000);
});
