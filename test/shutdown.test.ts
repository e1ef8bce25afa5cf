/**
 * Graceful stop and time-based checkpoints, through the real CLI (coordinator + 2 worker processes):
 * - the first SIGTERM (to the coordinator and both workers at once, as Kubernetes and Slurm send it) lets the
 *   running step finish, writes a final checkpoint of it and exits 143; `train --resume` then ends bit-identical
 *   (SHA-256 of every checkpoint file) to a run that never stopped;
 * - SIGTERM to one worker only: it keeps serving, the coordinator hears of it and stops the same way;
 * - a second signal stops at once; shutdownTimeoutMs bounds the wait; a step the numerical guard skipped is not
 *   checkpointed;
 * - checkpointMinutes: checkpoints at the steps the coordinator's clock picks, complete on every rank;
 * - `shardface coordinator --resume` with workers started elsewhere continues such a run bit-identically.
 * A `stall` fault makes one rank's step slow, so that the signals land inside a known step.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Proc, runCli, startCli, startCoordinator } from './helpers/processes.js';
import { checkpointProblems, stepDir } from '../src/checkpoint/checkpoint.js';
import { TINY_TRAIN_ARGS } from './helpers/train-args.js';
import { cli, expectSameContinuation, newRunDir, TINY_CHECKPOINTED_JOB } from './helpers/resume.js';
import { CheckpointClock } from '../src/run/shutdown.js';

const TINY = [...TINY_TRAIN_ARGS, '--steps', '12', '--checkpoint-every', '4', '--checkpoint-keep', '0', '--log-every', '1'];

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const manifestAt = (runDir: string, step: number) => existsSync(join(stepDir(join(runDir, 'ckpt'), step), 'manifest.json'));
const summaryOf = (runDir: string) => JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as Record<string, unknown>;
const stepLogged = (p: Proc, step: number) => p.waitFor((l) => l.msg === 'step' && l.role === 'coordinator' && l.step === step, 60_000);
const workerPids = (p: Proc) =>
  p
    .json()
    .filter((l) => l.msg === 'joined job')
    .sort((x, y) => Number(x.rank) - Number(y.rank))
    .map((l) => l.pid as number);
const trainLog = (runDir: string) =>
  readFileSync(join(runDir, 'train.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('graceful stop on SIGTERM / SIGINT', () => {
  it('SIGTERM to the coordinator and every worker: step 6 finishes, a final checkpoint of it, exit 143; --resume ends bit-identical', async () => {
    const a = newRunDir();
    const b = newRunDir();
    const straight = cli([...TINY, '--run-dir', a]);
    // rank 1 takes 3 s over step 6, so signals sent when step 5 is logged land inside step 6
    const run = startCli(['train', ...TINY, '--run-dir', b], { SHARDFACE_FAULT: 'stall:rank=1:step=6:ms=3000' });
    await stepLogged(run, 5);
    const pids = workerPids(run);
    expect(pids).toHaveLength(2);
    for (const pid of [run.child.pid!, ...pids]) process.kill(pid, 'SIGTERM');
    const r = await run.exit;
    expect(r.code, run.lines.slice(-12).join('\n')).toBe(143);
    const log = run.json();
    expect(log.find((l) => l.role === 'coordinator' && String(l.msg).startsWith('coordinator received SIGTERM: finishing step 6'))?.level).toBe(40);
    // each worker got the signal, and kept serving until the coordinator stopped the job
    for (const pid of pids) {
      expect(log.some((l) => l.pid === pid && String(l.msg).startsWith('received SIGTERM: serving the coordinator'))).toBe(true);
      expect(alive(pid)).toBe(false);
    }
    const final = stepDir(join(b, 'ckpt'), 6);
    expect(checkpointProblems(final)).toEqual([]);
    expect(manifestAt(b, 7)).toBe(false);
    const summary = summaryOf(b);
    expect(summary).toMatchObject({ ok: false, steps: 6, checkpoint: final, stopped_by: 'SIGTERM' });
    expect(summary.error).toBe(`coordinator received SIGTERM: stopped after step 6; final checkpoint ${final}; continue with shardface train --resume ${b}`);

    expect((await straight).code).toBe(0);
    const resumed = await cli(['--resume', b]);
    expect(resumed.code, resumed.out).toBe(0);
    expect(readFileSync(join(b, 'train.log'), 'utf8')).toContain(`resumed from step 6 (${final}); continuing at step 7`);
    expectSameContinuation(a, b, 6);
  }, 180_000);

  it('SIGTERM to one worker only: it keeps serving, the coordinator hears of it and stops after the step with a final checkpoint', async () => {
    const b = newRunDir();
    const run = startCli(['train', ...TINY, '--run-dir', b], { SHARDFACE_FAULT: 'stall:rank=0:step=3:ms=3000' });
    await stepLogged(run, 2);
    const pids = workerPids(run);
    process.kill(pids[1]!, 'SIGTERM');
    const r = await run.exit;
    expect(r.code, run.lines.slice(-12).join('\n')).toBe(143);
    expect(run.json().some((l) => String(l.msg).startsWith('worker rank 1 received SIGTERM: finishing step 3'))).toBe(true);
    // rank 1 wrote its shard of the final checkpoint after its signal: it is complete
    expect(checkpointProblems(stepDir(join(b, 'ckpt'), 3))).toEqual([]);
    expect(summaryOf(b)).toMatchObject({ steps: 3, checkpoint: stepDir(join(b, 'ckpt'), 3), stopped_by: 'SIGTERM' });
  }, 120_000);

  it('a second SIGINT stops at once, without a final checkpoint (exit 130)', async () => {
    const b = newRunDir();
    const run = startCli(['train', ...TINY, '--run-dir', b], { SHARDFACE_FAULT: 'stall:rank=1:step=3:ms=6000' });
    await stepLogged(run, 2);
    run.child.kill('SIGINT');
    await run.waitFor((l) => String(l.msg).startsWith('coordinator received SIGINT: finishing step 3'));
    const t0 = Date.now();
    run.child.kill('SIGINT');
    // the job stops well before rank 1's step 3 would end (the process exits once that rank's step returns)
    await run.waitFor((l) => l.msg === 'stopping job');
    expect(Date.now() - t0).toBeLessThan(4000);
    const r = await run.exit;
    expect(r.code).toBe(130);
    expect(run.json().find((l) => l.msg === 'stopping job')?.reason).toBe('coordinator received SIGINT again: stopping at once, without a final checkpoint; the newest complete checkpoint is none');
    expect(existsSync(join(b, 'ckpt'))).toBe(false);
  }, 120_000);

  it('shutdownTimeoutMs bounds the step and its final checkpoint', async () => {
    const b = newRunDir();
    const run = startCli(['train', ...TINY, '--run-dir', b, '--shutdown-timeout-ms', '1000'], { SHARDFACE_FAULT: 'stall:rank=1:step=5:ms=6000' });
    await stepLogged(run, 4);
    const t0 = Date.now();
    run.child.kill('SIGTERM');
    await run.waitFor((l) => l.msg === 'stopping job');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(Date.now() - t0).toBeLessThan(4000);
    const r = await run.exit;
    expect(r.code).toBe(143);
    expect(run.json().find((l) => l.msg === 'stopping job')?.reason).toBe(
      `coordinator received SIGTERM, and the step and its final checkpoint did not complete within shutdownTimeoutMs (1 s); the newest complete checkpoint is ${stepDir(join(b, 'ckpt'), 4)}`,
    );
    expect(manifestAt(b, 5)).toBe(false);
    expect(summaryOf(b)).toMatchObject({ checkpoint: stepDir(join(b, 'ckpt'), 4), stopped_by: 'SIGTERM' });
  }, 120_000);

  it('a step the numerical guard skipped is not checkpointed: the newest complete checkpoint stays the one to resume from', async () => {
    const b = newRunDir();
    const run = startCli(['train', ...TINY, '--run-dir', b, '--checkpoint-every', '2'], { SHARDFACE_FAULT: 'nan:rank=0:step=3,stall:rank=1:step=3:ms=3000' });
    await stepLogged(run, 2);
    run.child.kill('SIGTERM');
    const r = await run.exit;
    expect(r.code).toBe(143);
    const two = stepDir(join(b, 'ckpt'), 2);
    const log = run.json();
    expect(log.some((l) => l.msg === 'step 3 skipped on every rank: non-finite gradients from rank(s) 0; no weights changed')).toBe(true);
    expect(log.find((l) => String(l.msg).startsWith('no final checkpoint'))?.msg).toBe(`no final checkpoint: the numerical guard skipped step 3; the newest complete checkpoint is ${two}`);
    expect(existsSync(stepDir(join(b, 'ckpt'), 3))).toBe(false);
    expect(summaryOf(b)).toMatchObject({ steps: 3, checkpoint: two });
  }, 120_000);
});

describe('checkpointMinutes', () => {
  it('the clock: due once the minutes have passed since the first step or the last complete checkpoint; 0 = never', () => {
    let now = 1_000_000;
    const clock = new CheckpointClock(0.5, () => now);
    const at = (ms: number) => ((now = 1_000_000 + ms), clock.due());
    expect([at(0), at(29_999)]).toEqual([null, null]);
    expect(at(30_000)).toBe(0.5);
    expect(at(45_000)).toBe(0.75); // still due: no checkpoint completed yet (a skipped step writes none)
    clock.written(); // at 45 s
    expect([at(46_000), at(74_999)]).toEqual([null, null]);
    expect(at(75_000)).toBe(0.5);
    const off = new CheckpointClock(0, () => now);
    expect([off.due(), ((now += 1e9), off.due())]).toEqual([null, null]);
  });

  it('0.01 min: checkpoints at the steps the coordinator picked, ≥ 600 ms apart, each complete on every rank', async () => {
    const b = newRunDir();
    // a slow step 4 (1.2 s on rank 0) makes at least one checkpoint due by time, whatever the machine's speed
    const r = await cli([...TINY, '--run-dir', b, '--checkpoint-every', '0', '--checkpoint-minutes', '0.01'], 'stall:rank=0:step=4:ms=1200');
    expect(r.code, r.out).toBe(0);
    const log = trainLog(b);
    const due = log.filter((l) => String(l.msg).startsWith('checkpoint due at step')).map((l) => ({ step: l.step as number, since: l.sinceLastMinutes as number }));
    expect(due.length).toBeGreaterThan(0);
    for (const d of due) expect(d.since).toBeGreaterThanOrEqual(0.01);
    const written = log.filter((l) => l.msg === 'checkpoint written').map((l) => ({ step: l.step as number, at: Date.parse(String(l.time)) }));
    // exactly the steps the clock asked for, plus the end of the run
    expect(written.map((w) => w.step)).toEqual([...new Set([...due.map((d) => d.step), 12])].sort((x, y) => x - y));
    expect(written.some((w) => w.step <= 5)).toBe(true);
    for (const w of written) expect(checkpointProblems(stepDir(join(b, 'ckpt'), w.step))).toEqual([]);
    // independently of the coordinator's own figure: the log's clock. The first step begins after 'all workers ready'.
    const start = Date.parse(String(log.find((l) => l.msg === 'all workers ready; starting')!.time));
    const times = [start, ...written.filter((w) => w.step !== 12 || due.some((d) => d.step === 12)).map((w) => w.at)];
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(600);
  }, 120_000);
});

describe('shardface coordinator --resume', () => {
  it('a standalone coordinator and its workers, stopped by SIGTERM, continue bit-identically to train run straight through', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-coord-resume-'));
    const config = join(dir, 'train.json');
    writeFileSync(config, JSON.stringify({ ...TINY_CHECKPOINTED_JOB, logEvery: 1 }));
    writeFileSync(join(dir, 'token'), 'team-secret');
    const a = join(dir, 'straight');
    const b = join(dir, 'run');
    const straight = cli(['--config', config, '--run-dir', a]);

    const start = async (args: string[], fault = '') => {
      const { coord, address: addr } = await startCoordinator([...args, '--workers', '2', '--token-file', join(dir, 'token'), '--job', 'ext-1']);
      await coord.waitFor((l) => /waiting for 2 workers/.test(String(l.msg)));
      const workers = [0, 1].map((r) => startCli(['worker', '--coordinator', addr, '--job', 'ext-1', '--token-file', join(dir, 'token')], { SLURM_PROCID: String(r), SHARDFACE_FAULT: fault }));
      return { coord, workers };
    };
    const first = await start(['--config', config, '--run-dir', b], 'stall:rank=1:step=6:ms=3000');
    await stepLogged(first.coord, 5);
    for (const p of [first.coord, ...first.workers]) p.child.kill('SIGTERM');
    const [c, ...w] = await Promise.all([first.coord.exit, ...first.workers.map((p) => p.exit)]);
    expect(c.code, first.coord.lines.slice(-10).join('\n')).toBe(143);
    expect(w.map((x) => x.code)).toEqual([143, 143]);
    const final = stepDir(join(b, 'ckpt'), 6);
    expect(checkpointProblems(final)).toEqual([]);
    expect(summaryOf(b).error).toContain(`final checkpoint ${final}; continue with shardface coordinator --resume ${b}`);

    const second = await start(['--resume', b]);
    const [c2, ...w2] = await Promise.all([second.coord.exit, ...second.workers.map((p) => p.exit)]);
    expect(c2.code, second.coord.lines.slice(-10).join('\n')).toBe(0);
    expect(w2.map((x) => x.code)).toEqual([0, 0]);
    expect(second.coord.json().some((l) => l.msg === `resumed from step 6 (${final}); continuing at step 7`)).toBe(true);
    expect((await straight).code).toBe(0);
    expectSameContinuation(a, b, 6);
  }, 180_000);

  it('refuses --resume with --config, and a directory that is not a run, naming why (exit 2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-coord-resume-'));
    let r = await runCli(['coordinator', '--workers', '2', '--resume', dir, '--config', join(dir, 'x.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--resume takes the run's saved config.json; leave --config out");
    r = await runCli(['coordinator', '--workers', '2', '--resume', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--resume ${dir}: ${join(dir, 'config.json')} does not exist (not a shardface run directory)`);
  });
});
