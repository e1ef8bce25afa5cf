/**
 * Strangers on the network without CURVE (loopback use): a process that
 * knows the addresses, the job id and the protocol, but not the token or the
 * secrets handed out at registration. It cannot keep a dead rank alive, and
 * nothing it sends to the coordinator or to a ring inbox changes the run:
 * the checkpoint equals a clean run's, byte for byte.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode } from '../src/protocol/index.js';
import { startCli, startCoordinator } from './helpers/processes.js';
import { strangerSocket, trainWithExternalWorkers } from './helpers/strangers.js';

describe("a stranger's heartbeats", () => {
  it('do not keep a dead rank alive', async () => {
    const JOB = 'hb-stranger';
    const { coord, address: addr } = await startCoordinator(['--workers', '2', '--steps', '100000', '--step-delay-ms', '20', '--heartbeat-ms', '200', '--worker-timeout', '2', '--job', JOB]);
    const w = [0, 1].map((r) => startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--rank', String(r)]));
    await coord.waitFor((l) => l.msg === 'all workers ready; starting', 30_000);
    // Heartbeats for rank 1 from a stranger (the job id right, no session or a guessed one), every 50 ms.
    const s = strangerSocket(addr);
    const beat = setInterval(() => {
      s.post(encode('heartbeat', { job: JOB, step: 0, rank: 1 }, {}));
      s.post(encode('heartbeat', { job: JOB, step: 0, rank: 1 }, { session: '0'.repeat(32) }));
    }, 50);
    await new Promise((r) => setTimeout(r, 300));
    const killedAt = Date.now();
    w[1]!.child.kill('SIGKILL');
    const c = await coord.exit;
    clearInterval(beat);
    s.close();
    w[0]!.child.kill('SIGKILL');
    expect(c.code).toBe(1);
    expect(Date.now() - killedAt).toBeLessThan(2000 + 3000);
    expect(coord.json().find((l) => l.msg === 'stopping job')?.reason).toMatch(/worker rank 1 \(host .+, pid \d+\) silent for/);
    expect(coord.json().some((l) => l.msg === 'heartbeat dropped: not from the connection that holds the rank' && l.claimedRank === 1)).toBe(true);
  });
});

describe("a stranger's ring messages and gradients", () => {
  it('are dropped: the run ends with the same checkpoint as a run without the stranger', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-stranger-'));
    const clean = await trainWithExternalWorkers(dir, 'clean');
    let sent = 0;
    const attacked = await trainWithExternalWorkers(dir, 'attacked', async (job, addr, workers) => {
      const inboxes = await Promise.all(workers.map((p) => p.waitFor((l) => l.msg === 'registering').then((l) => String(l.dataAddress))));
      // Guess the ring ids (the predictable defaults, and no id at all), and impersonate rank 0 on the control plane.
      const sockets = inboxes.flatMap((a, r) => [strangerSocket(a, `${job}/ring/${1 - r}`), strangerSocket(a)]);
      const control = strangerSocket(addr);
      const left = (i: number) => (Math.floor(i / 2) === 0 ? 1 : 0);
      const done = Promise.all(workers.map((p) => p.exit));
      let finished = false;
      void done.then(() => (finished = true));
      for (let k = 0; !finished; k++) {
        for (let i = 0; i < sockets.length; i++) {
          const seq = 1 + (k % 8);
          const grad = new Float32Array(1 + (k % 4096)).fill(1e6);
          sockets[i]!.post(encode('ring', { job, step: 0, rank: left(i) }, { op: 'allreduce', seq, chunk: k % 4, slot: grad.length }, [{ name: 'data', data: grad }]));
          sockets[i]!.post(encode('ring', { job, step: 0, rank: left(i) }, { op: 'connect', seq: 0, chunk: 0, slot: 1 }));
          sent += 2;
        }
        control.post(encode('step-end', { job, step: 1 + (k % 3), rank: 0 }, { metrics: { loss: 0 } }));
        control.post(encode('softmax-reduced', { job, step: 1 + (k % 3), rank: 0 }, { loss: 0, extras: {} }, [{ name: 'logSumExp', data: new Float32Array(16) }]));
        await new Promise((r) => setTimeout(r, 5));
      }
      for (const s of [...sockets, control]) s.close();
    });
    expect(sent).toBeGreaterThan(100);
    const ckpt = (run: string, f: string) => readFileSync(join(run, 'ckpt', 'step-000003', f));
    for (const f of ['backbone.safetensors', 'classifier-shard-0.safetensors', 'classifier-shard-1.safetensors']) expect(ckpt(attacked.runDir, f).equals(ckpt(clean.runDir, f)), f).toBe(true);
    const loss = (run: string) =>
      readFileSync(join(run, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).loss);
    expect(loss(attacked.runDir)).toEqual(loss(clean.runDir));
    // the workers saw and dropped the stranger's messages, and said so without flooding their logs
    for (const w of attacked.workers) {
      const drops = w.json().filter((l) => /ring inbox dropped a message/.test(String(l.msg)));
      expect(drops.length).toBeGreaterThan(0);
      expect(drops.length).toBeLessThanOrEqual(10 * 3);
    }
    expect(attacked.coord.json().some((l) => l.msg === 'rejected message from an unregistered connection')).toBe(true);
  });
});
