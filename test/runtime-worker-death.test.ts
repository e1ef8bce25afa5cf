import { describe, expect, it } from 'vitest';
import { startCli, startCoordinator } from './helpers/processes.js';

describe('a worker that dies', () => {
  it('SIGKILL: the coordinator names the rank within the timeout and exits non-zero', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '2', '--steps', '1000', '--step-delay-ms', '50', '--heartbeat-ms', '200', '--worker-timeout', '2', '--job', 'death-test']);
    const w = [0, 1].map((r) => startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', String(r)]));
    await coord.waitFor((l) => l.msg === 'all workers ready; starting', 30_000);
    await new Promise((r) => setTimeout(r, 500)); // a few 50 ms steps
    const killedAt = Date.now();
    w[1]!.child.kill('SIGKILL');
    const c = await coord.exit;
    const elapsed = Date.now() - killedAt;
    expect(c.code).not.toBe(0);
    expect(elapsed).toBeLessThan(2000 + 3000); // the timeout plus slack
    const failure = coord.json().find((l) => l.msg === 'stopping job');
    expect(failure?.reason).toMatch(/worker rank 1 \(host .+, pid \d+\) silent for .* last completed step \d+/);
    const survivor = await w[0]!.exit;
    expect(survivor.code).not.toBe(0);
    expect(w[0]!.json().some((l) => l.msg === 'job stopped with an error' && /worker rank 1/.test(String(l.reason)))).toBe(true);
  });

  it('under the launcher, a crashed worker stops the job at once, naming its rank', async () => {
    const launch = startCli(['launch', '--workers', '2', '--steps', '1000', '--step-delay-ms', '50', '--worker-timeout', '30', '--job', 'launch-death']);
    const ready = await launch.waitFor((l) => l.msg === 'worker ready' && l.worker === 1, 30_000);
    expect(ready).toBeTruthy();
    const joined = await launch.waitFor((l) => l.msg === 'joined job' && l.rank === 1);
    process.kill(joined.pid as number, 'SIGKILL');
    const t0 = Date.now();
    const r = await launch.exit;
    expect(r.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(15_000);
    const stop = launch.json().find((l) => l.msg === 'stopping job');
    expect(stop?.reason).toMatch(/worker rank 1 \(host .+, pid \d+\) exited with signal SIGKILL/);
  });
});
