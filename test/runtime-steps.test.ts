import { describe, expect, it } from 'vitest';
import { startCli, startCoordinator } from './helpers/processes.js';

describe('coordinator + workers (real processes on 127.0.0.1)', () => {
  it('run 10 empty steps and stop cleanly, logging JSON with role/rank/host/pid/step', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '2', '--steps', '10', '--job', 'steps-test', '--heartbeat-ms', '200']);
    const w = [0, 1].map(() => startCli(['worker', '--coordinator', addr, '--backend', 'cpu']));
    const [c, ...ws] = await Promise.all([coord.exit, ...w.map((p) => p.exit)]);
    expect(c.code, coord.lines.slice(-10).join('\n')).toBe(0);
    for (const x of ws) expect(x.code).toBe(0);
    const logs = [...coord.json(), ...w.flatMap((p) => p.json())];
    for (const l of logs) {
      expect(l).toHaveProperty('role');
      expect(l).toHaveProperty('rank');
      expect(l).toHaveProperty('host');
      expect(l).toHaveProperty('pid');
      expect(l).toHaveProperty('step');
    }
    expect(coord.json().some((l) => l.msg === 'job complete' && l.step === 10)).toBe(true);
    const ranks = w.map((p) => p.json().find((l) => l.msg === 'joined job')!.rank).sort();
    expect(ranks).toEqual([0, 1]);
    for (const p of w) expect(p.json().some((l) => l.msg === 'stopped' && l.role === 'worker')).toBe(true);
  });

  it('honours explicit ranks (as a scheduler would give them)', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '2', '--steps', '2', '--job', 'rank-test']);
    const w1 = startCli(['worker', '--coordinator', addr, '--backend', 'cpu'], { SLURM_PROCID: '1' });
    const w0 = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', '0']);
    await Promise.all([coord.exit, w0.exit, w1.exit]);
    expect(w1.json().find((l) => l.msg === 'joined job')!.rank).toBe(1);
    expect(w0.json().find((l) => l.msg === 'joined job')!.rank).toBe(0);
  });
});
