/**
 * A job across machines, with Linux network namespaces standing in for hosts:
 * the coordinator on 198.18.0.1, two workers on 198.18.0.2 and one on
 * 198.18.0.3, none told what to advertise. Then one host's link is cut and
 * the job must stop with an error naming the rank that went silent.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startCli, type Proc } from './helpers/processes.js';
import { createCluster, netnsUnavailable, type Cluster } from './helpers/netns.js';

const unavailable = netnsUnavailable();
if (unavailable) console.warn(`multihost-netns: skipped: ${unavailable}`);

describe.skipIf(unavailable !== null)(`multi-host job over network namespaces${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  let cluster: Cluster | null = null;
  const procs: Proc[] = [];
  afterAll(() => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    cluster?.destroy();
  });

  it('trains with no --advertise, then stops naming the rank whose link was cut', async () => {
    cluster = createCluster(3);
    const [head, a, b] = cluster.hosts as [Cluster['hosts'][0], Cluster['hosts'][0], Cluster['hosts'][0]];
    const dir = mkdtempSync(join(tmpdir(), 'shardface-netns-'));
    const config = join(dir, 'train.json');
    const timeoutS = 3;
    writeFileSync(
      config,
      JSON.stringify({
        workers: 3,
        batch: 8,
        imageSize: 16,
        embeddingSize: 16,
        data: 'synthetic:30',
        imagesPerIdentity: 4,
        heldOutIdentities: 0,
        steps: 100_000,
        logEvery: 1,
        backend: 'cpu-native',
        threads: 1,
      }),
    );
    writeFileSync(join(dir, 'token'), 'netns-secret');
    const runDir = join(dir, 'run');
    const coordinator = `tcp://${head.ip}:29500`;
    const coord = startCli(
      [
        'coordinator',
        '--config',
        config,
        '--workers',
        '3',
        '--bind',
        coordinator,
        '--token-file',
        join(dir, 'token'),
        '--run-dir',
        runDir,
        '--heartbeat-ms',
        '250',
        '--worker-timeout',
        String(timeoutS),
      ],
      {},
      ['ip', 'netns', 'exec', head.ns],
    );
    procs.push(coord);
    await coord.waitFor((l) => /waiting for 3 workers/.test(String(l.msg)));
    // interleave the hosts, so arrival order alone would not give a host consecutive ranks
    const workers = [a, b, a].map((h) => startCli(['worker', '--coordinator', coordinator, '--token-file', join(dir, 'token')], {}, ['ip', 'netns', 'exec', h.ns]));
    procs.push(...workers);
    const on = [a, b, a];

    await coord.waitFor((l) => l.msg === 'step' && Number(l.step) >= 3, 90_000);
    const joined = await Promise.all(workers.map((w) => w.waitFor((l) => l.msg === 'joined job')));
    const registering = workers.map((w) => w.json().find((l) => l.msg === 'registering')!);
    registering.forEach((r, i) => {
      expect(r.dataAddress).toMatch(new RegExp(`^tcp://${on[i]!.ip.replace(/\./g, '\\.')}:\\d+$`));
      expect(r.advertised).toBe('route to coordinator');
    });
    const ranks = joined.map((j) => Number(j.rank));
    expect([...ranks].sort()).toEqual([0, 1, 2]);
    // the two workers of host a hold consecutive ranks
    expect(Math.abs(ranks[0]! - ranks[2]!)).toBe(1);
    const cutRank = ranks[1]!;

    cluster.cut(b);
    const cutAt = Date.now();
    const exit = await coord.exit;
    const took = (Date.now() - cutAt) / 1000;
    expect(exit.code, coord.lines.slice(-10).join('\n')).toBe(1);
    expect(took).toBeLessThan(timeoutS + 4);
    const stopping = coord.json().find((l) => l.msg === 'stopping job');
    expect(String(stopping?.reason)).toMatch(new RegExp(`^worker rank ${cutRank} \\(host .*\\) silent for [\\d.]+ s \\(timeout ${timeoutS} s\\)`));
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary.ok).toBe(false);
    expect(summary.error).toMatch(new RegExp(`worker rank ${cutRank} `));
    expect(summary.steps).toBeGreaterThanOrEqual(3);
    // every worker ends too: the others on the coordinator's stop, the cut one when the coordinator goes silent
    const codes = await Promise.all(workers.map((w) => w.exit));
    codes.forEach((c) => expect(c.code).toBe(1));
  });
});

const procs: Proc[] = [];
afterAll(() => {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
});

describe('a worker advertising an address its peers cannot reach', () => {
  it('stops at the join timeout naming the ranks that never got ready and their addresses', async () => {
    const addr = `tcp://127.0.0.1:${await freePort()}`;
    // nothing listens on 127.0.0.2 (the inbox binds 127.0.0.1), so the ring never connects to this worker
    const good = startCli(['worker', '--coordinator', addr]);
    const bad = startCli(['worker', '--coordinator', addr, '--advertise', '127.0.0.2']);
    procs.push(good, bad);
    // the workers queue their hello until the coordinator listens: the join timeout then only waits on the ring
    await Promise.all([good, bad].map((w) => w.waitFor((l) => l.msg === 'registering')));
    const coord = startCli(['coordinator', '--workers', '2', '--bind', addr, '--kind', 'empty', '--steps', '1', '--join-timeout', '4']);
    procs.push(coord);
    const c = await coord.exit;
    await Promise.all([good.exit, bad.exit]);
    expect(c.code).toBe(1);
    const reason = String(coord.json().find((l) => l.msg === 'stopping job')?.reason);
    expect(reason).toMatch(/^workers did not join within 4000 ms \(\d\/2 workers ready; not ready: rank \d \(data address tcp:\/\/127\.0\.0\.[12]:\d+\)/);
    expect(reason).toContain('see --advertise');
  });
});
