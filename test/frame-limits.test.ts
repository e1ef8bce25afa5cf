/**
 * Frames above --max-frame-mb are refused before they are read (the sender is
 * disconnected; the receiver's memory does not grow), and floods of bad
 * frames give a bounded number of log lines that never echo the payload.
 */
import { describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { encode, PROTOCOL_VERSION } from '../src/protocol/index.js';
import { Packr } from 'msgpackr';
import { startCli, startCoordinator } from './helpers/processes.js';
import { rssBytes } from './helpers/rss.js';

const MiB = 2 ** 20;
const packr = new Packr({ useRecords: false });

async function sendOnce(addr: string, frames: Uint8Array[]): Promise<void> {
  const s = new zmq.Dealer({ linger: 2000 });
  s.connect(addr);
  await s.send(frames);
  await new Promise((r) => setTimeout(r, 1500));
  s.close();
}

describe('frame size limit', () => {
  it('a 256 MiB frame to the coordinator and to a worker inbox is refused with bounded RSS; the job still runs', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '1', '--steps', '200', '--step-delay-ms', '50', '--max-frame-mb', '1', '--job', 'big-frames']);
    expect((await coord.waitFor((l) => l.msg === 'coordinator listening')).maxFrameBytes).toBe(MiB);
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--max-frame-mb', '1']);
    const reg = await w.waitFor((l) => l.msg === 'registering');
    await coord.waitFor((l) => l.msg === 'all workers ready; starting', 30_000);
    const before = { coord: rssBytes(coord.child.pid!), worker: rssBytes(w.child.pid!) };
    const big = Buffer.alloc(256 * MiB, 7);
    await sendOnce(addr, [encode('hello', { job: '', step: 0, rank: -1 }, { host: 'x', pid: 1, token: '', dataAddress: '', device: '', backend: '', curveKey: '' })[0]!, big]);
    await sendOnce(String(reg.dataAddress), [big]);
    const after = { coord: rssBytes(coord.child.pid!), worker: rssBytes(w.child.pid!) };
    console.log(
      `256 MiB frames refused: coordinator RSS ${(before.coord / MiB).toFixed(1)} → ${(after.coord / MiB).toFixed(1)} MiB, worker ${(before.worker / MiB).toFixed(1)} → ${(after.worker / MiB).toFixed(1)} MiB`,
    );
    expect(after.coord - before.coord).toBeLessThan(32 * MiB);
    expect(after.worker - before.worker).toBeLessThan(32 * MiB);
    const [c, x] = await Promise.all([coord.exit, w.exit]);
    expect(c.code, coord.lines.slice(-5).join('\n')).toBe(0);
    expect(x.code).toBe(0);
    // nothing of the big frame reached the coordinator's decoder
    expect(coord.json().some((l) => l.msg === 'rejected message from an unregistered connection')).toBe(false);
  });

  it('the training config refuses a limit below the largest frame the job sends', async () => {
    const { runCli } = await import('./helpers/processes.js');
    // a ring chunk (4 MiB) plus header room
    const small = await runCli(['train', '--max-frame-mb', '1', '--print-config']);
    expect(small.code).toBe(2);
    expect(small.stderr).toMatch(/maxFrameMb: 1 MiB is below the largest frame this job sends \(4\.06 MiB\)/);
    // the classifier exchange: 4 bytes × 2,000,000 rows of the global batch, plus header room
    const big = await runCli(['train', '--workers', '2', '--batch', '1000000', '--data', 'synthetic:100000', '--max-frame-mb', '4', '--print-config']);
    expect(big.code).toBe(2);
    expect(big.stderr).toMatch(/maxFrameMb: 4 MiB is below the largest frame this job sends \(7\.69 MiB\)/);
    expect((await runCli(['train', '--print-config'])).code).toBe(0);
  });
});

describe('a flood of bad frames', () => {
  it('gives at most a burst of log lines plus counted summaries, none echoing the payload', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '1', '--steps', '2', '--job', 'flood']);
    const MARK = 'PAYLOAD-MARKER-93731';
    const s = new zmq.Dealer({ linger: 0, receiveTimeout: 20_000 });
    s.connect(addr);
    const N = 2000;
    const kinds = [
      () => [Buffer.from(`${MARK} not msgpack \xc1`)],
      () => [packr.pack({ v: PROTOCOL_VERSION, type: `${MARK}-type`, job: MARK, step: 0, rank: -1, tensors: [], body: {} })],
      () => [packr.pack({ v: 99, type: 'hello', job: MARK, step: 0, rank: -1, tensors: [], body: { host: MARK } })],
      () => encode('hello', { job: MARK, step: 0, rank: -1 }, { host: MARK, pid: 1, token: MARK, dataAddress: MARK, device: MARK, backend: MARK, curveKey: MARK }),
    ];
    for (let i = 0; i < N; i++) await s.send(kinds[i % kinds.length]!());
    for (let i = 0; i < N; i++) await s.receive(); // every frame was answered (so all were processed)
    s.close();
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu']);
    const [c] = await Promise.all([coord.exit, w.exit]);
    expect(c.code).toBe(0);
    const lines = coord.json();
    const logged = lines.filter((l) => l.msg === 'rejected message from an unregistered connection').length;
    const suppressed = lines.filter((l) => typeof l.suppressed === 'number').reduce((a, l) => a + (l.suppressed as number), 0);
    expect(logged).toBeGreaterThan(0);
    expect(logged).toBeLessThanOrEqual(10 * 3);
    expect(logged + suppressed).toBe(N);
    expect(coord.lines.some((l) => l.includes(MARK))).toBe(false);
  });
});
