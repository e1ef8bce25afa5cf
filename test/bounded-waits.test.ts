/**
 * Every wait of a worker is bounded and obeys stop and signals: an
 * unreachable ring neighbour or coordinator is named within the timeout, and
 * a worker stuck connecting exits promptly on SIGTERM (and its partner on the
 * coordinator's stop that follows).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { freePort, startCli, startCoordinator } from './helpers/processes.js';

/** Runs `ip` (root only); false if it is not available. */
function ip(...args: string[]): boolean {
  try {
    execFileSync('ip', args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const NS = `shardface-test-${process.pid}`;
const canNetns = process.getuid?.() === 0 && ip('netns', 'add', NS);
if (canNetns) ip('netns', 'del', NS);

async function twoWorkers(job: string, timeoutS: number) {
  const { coord, address: addr } = await startCoordinator(['--workers', '2', '--steps', '5', '--heartbeat-ms', '200', '--worker-timeout', String(timeoutS), '--job', job]);
  // rank 1 advertises a loopback address nothing listens on: rank 0 cannot reach its right neighbour
  const w = [
    startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', '0']),
    startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', '1', '--advertise', '127.0.0.2']),
  ];
  await Promise.all(w.map((p) => p.waitFor((l) => l.msg === 'joined job', 30_000)));
  return { coord, w, joinedAt: Date.now() };
}

describe('an unreachable ring neighbour', () => {
  it("fails the worker within the worker timeout, naming the neighbour's rank and address", async () => {
    const { coord, w, joinedAt } = await twoWorkers('unreachable', 3);
    const [x0, x1, c] = await Promise.all([w[0]!.exit, w[1]!.exit, coord.exit]);
    expect(Date.now() - joinedAt).toBeLessThan(3000 + 4000);
    expect(x0.code).toBe(1);
    expect(x1.code).toBe(1);
    expect(c.code).toBe(1);
    // Both time out after 3 s: rank 0 connecting to its right neighbour, rank 1 waiting for its left one. Whichever
    // fails first stops the job, and the other is stopped by the coordinator; each failure names the peer it waited on.
    const failure = (r: number) => (w[r]!.json().find((l) => l.msg === 'worker failed')?.err as { message?: string } | undefined)?.message;
    const [f0, f1] = [failure(0), failure(1)];
    expect(f0 ?? f1, 'a worker failed by itself').toBeDefined();
    if (f0 !== undefined) expect(f0).toMatch(/rank 0: right neighbour rank 1 at tcp:\/\/127\.0\.0\.2:\d+ unreachable: no connection within 3000 ms/);
    else expect(f1).toMatch(/on rank 1: nothing from left neighbour rank 0 \(tcp:\/\/127\.0\.0\.1:\d+\) for 3000 ms/);
    expect(coord.json().find((l) => l.msg === 'stopping job')?.reason).toMatch(/worker rank [01] .* left at step 0: .*(unreachable|nothing from left neighbour)/);
  });

  it("SIGTERM to a worker stuck connecting ends it at once; the coordinator's stop then ends the other", async () => {
    const { coord, w } = await twoWorkers('stuck-connecting', 120);
    await new Promise((r) => setTimeout(r, 500)); // both are now inside the ring's connect
    const t0 = Date.now();
    w[0]!.child.kill('SIGTERM');
    const x0 = await w[0]!.exit;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(x0.code).toBe(143); // 128 + SIGTERM: stopped by a signal
    expect(w[0]!.json().find((l) => l.msg === 'job stopped with an error')?.reason, w[0]!.lines.slice(-6).join('\n')).toBe('received SIGTERM');
    const [x1, c] = await Promise.all([w[1]!.exit, coord.exit]);
    expect(Date.now() - t0).toBeLessThan(6000);
    expect(x1.code).toBe(1);
    expect(c.code).toBe(1);
    expect(coord.json().find((l) => l.msg === 'stopping job')?.reason).toMatch(/worker rank 0 .* left at step 0: received SIGTERM/);
    expect(w[1]!.json().find((l) => l.msg === 'job stopped with an error')?.reason).toMatch(/worker rank 0 .*received SIGTERM/);
  });

  it('SIGINT works the same', async () => {
    const { coord, w } = await twoWorkers('stuck-sigint', 120);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    w[1]!.child.kill('SIGINT');
    const x1 = await w[1]!.exit;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(x1.code).toBe(130); // 128 + SIGINT
    expect(w[1]!.json().find((l) => l.msg === 'job stopped with an error')?.reason).toBe('received SIGINT');
    await Promise.all([w[0]!.exit, coord.exit]);
    expect(Date.now() - t0).toBeLessThan(6000);
  });
});

describe('an unreachable or dead coordinator', () => {
  it('nothing listening: the worker gives up after --worker-timeout, naming the address', async () => {
    const addr = `tcp://127.0.0.1:${await freePort()}`;
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--worker-timeout', '1']);
    const t0 = Date.now();
    const x = await w.exit;
    expect(Date.now() - t0).toBeLessThan(6000);
    expect(x.code).toBe(1);
    expect(w.json().find((l) => l.msg === 'job stopped with an error')?.reason).toBe(`cannot reach the coordinator at ${addr}: no connection within 1.0 s`);
  });

  it('dies while the worker waits for the others to register: the worker notices the silence', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '2', '--heartbeat-ms', '200', '--job', 'dead-coordinator']);
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--worker-timeout', '2']);
    await coord.waitFor((l) => l.msg === 'worker registered');
    await new Promise((r) => setTimeout(r, 500));
    coord.child.kill('SIGKILL');
    const t0 = Date.now();
    const x = await w.exit;
    expect(Date.now() - t0).toBeLessThan(2000 + 3000);
    expect(x.code).toBe(1);
    expect(w.json().find((l) => l.msg === 'job stopped with an error')?.reason).toMatch(new RegExp(`coordinator at ${addr.replace(/[.]/g, '\\.')} silent for \\d+\\.\\d s \\(timeout 2\\.0 s\\)`));
  });
});

describe('a blackholed ring neighbour (198.18.0.0/15 inside a network namespace of this test)', () => {
  // Where the previous cases get a TCP reset, here the SYN vanishes: connect() itself would hang for minutes.
  it.skipIf(!canNetns)('fails within the worker timeout, naming rank and address', async () => {
    ip('netns', 'add', NS);
    try {
      const inNs = (...args: string[]) => ip('netns', 'exec', NS, 'ip', ...args);
      expect(inNs('link', 'set', 'lo', 'up')).toBe(true);
      // 198.18.0.1 sits behind a veth pair whose far end has no address, with a static neighbour entry:
      // SYNs leave and are silently dropped, never answered, never refused
      expect(inNs('link', 'add', 'sf0', 'type', 'veth', 'peer', 'name', 'sf1')).toBe(true);
      expect(inNs('addr', 'add', '198.18.0.254/15', 'dev', 'sf0')).toBe(true);
      expect(inNs('link', 'set', 'sf0', 'up')).toBe(true);
      expect(inNs('link', 'set', 'sf1', 'up')).toBe(true);
      expect(inNs('neigh', 'add', '198.18.0.1', 'lladdr', '02:00:00:00:00:01', 'dev', 'sf0')).toBe(true);
      const prefix = ['ip', 'netns', 'exec', NS];
      const addr = 'tcp://127.0.0.1:29517';
      const coord = startCli(['coordinator', '--bind', addr, '--workers', '2', '--steps', '5', '--heartbeat-ms', '200', '--worker-timeout', '3', '--job', 'blackhole'], {}, prefix);
      await coord.waitFor((l) => l.msg === 'coordinator listening');
      const w = [
        startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', '0'], {}, prefix),
        startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', '1', '--advertise', '198.18.0.1'], {}, prefix),
      ];
      await Promise.all(w.map((p) => p.waitFor((l) => l.msg === 'joined job', 30_000)));
      const t0 = Date.now();
      const [x0, , c] = await Promise.all([w[0]!.exit, w[1]!.exit, coord.exit]);
      expect(Date.now() - t0).toBeLessThan(3000 + 4000);
      expect(x0.code).toBe(1);
      expect(c.code).toBe(1);
      // Both deadlines are the worker timeout, so either end can name the broken link first: rank 0, whose
      // connection to the blackholed neighbour never comes up, or rank 1, which never hears from rank 0.
      const messages = w.map((p) => (p.json().find((l) => l.msg === 'worker failed')?.err as { message?: string } | undefined)?.message ?? '');
      const named = [
        /rank 0: right neighbour rank 1 at tcp:\/\/198\.18\.0\.1:\d+ unreachable: no connection within 3000 ms/.test(messages[0]!),
        /connect #\d+ on rank 1: nothing from left neighbour rank 0 \(tcp:\/\/127\.0\.0\.1:\d+\) for 3000 ms/.test(messages[1]!),
      ];
      expect(named.some(Boolean), messages.join(' | ')).toBe(true);
    } finally {
      ip('netns', 'del', NS);
    }
  });
});
