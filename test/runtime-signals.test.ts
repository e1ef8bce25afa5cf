import { describe, expect, it } from 'vitest';
import { startCli } from './helpers/processes.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('SIGINT / SIGTERM', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} to the launcher stops the coordinator and every worker cleanly`, async () => {
      const launch = startCli(['launch', '--workers', '2', '--steps', '100000', '--step-delay-ms', '20', '--job', `signal-${sig}`]);
      await launch.waitFor((l) => l.msg === 'all workers ready; starting', 30_000);
      const workerPids = launch
        .json()
        .filter((l) => l.msg === 'joined job')
        .map((l) => l.pid as number);
      expect(workerPids).toHaveLength(2);
      launch.child.kill(sig);
      const t0 = Date.now();
      const r = await launch.exit;
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(r.code).toBe(1);
      expect(launch.json().find((l) => l.msg === 'stopping job')?.reason).toBe(`coordinator received ${sig}`);
      // every worker was told why and exited; none is left behind
      for (const pid of workerPids) {
        expect(launch.json().some((l) => l.pid === pid && l.msg === 'job stopped with an error' && String(l.reason).includes(sig))).toBe(true);
        expect(alive(pid)).toBe(false);
      }
    });
  }
});
