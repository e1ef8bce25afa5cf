/**
 * A step-end the coordinator cannot accept (a NaN metric) used to leave it
 * waiting for that step for ever; now it stops the job, naming the rank. A
 * real coordinator process, and a hand-driven worker on a DEALER socket.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { decode, encode, type Message } from '../src/protocol/index.js';
import { type Proc, startCoordinator } from './helpers/processes.js';

const JOB = 'bad-step-end';

describe('a step-end with a non-finite metric', () => {
  let coord: Proc | undefined;
  afterAll(() => coord?.child.kill('SIGKILL'));

  it('stops the job with an error naming the rank instead of hanging', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-'));
    writeFileSync(join(dir, 'token'), 't0ken\n');
    let addr: string;
    ({ coord, address: addr } = await startCoordinator(['--workers', '1', '--steps', '3', '--job', JOB, '--token-file', join(dir, 'token')]));
    const s = new zmq.Dealer({ linger: 0, receiveTimeout: 20_000 });
    s.connect(addr);
    /** The next message of `type` (heartbeats and others skipped). */
    const next = async (type: string): Promise<Message> => {
      for (;;) {
        const r = decode(await s.receive());
        if (!r.ok) throw r.error;
        if (r.msg.header.type === type) return r.msg;
      }
    };
    try {
      await s.send(encode('hello', { job: JOB, step: 0, rank: -1 }, { host: 'test', pid: 1, token: 't0ken', dataAddress: 'tcp://127.0.0.1:1', device: 'cpu', backend: 'cpu', curveKey: '' }));
      await next('welcome');
      await s.send(encode('ready', { job: JOB, step: 0, rank: 0 }, { backend: 'cpu', device: 'cpu', threads: null, reason: 'test' }));
      const begin = await next('step-begin');
      await s.send(encode('step-end', { job: JOB, step: begin.header.step, rank: 0 }, { metrics: { loss: Number.NaN } }));
      const stop = await next('stop');
      expect(stop.header.body).toMatchObject({ ok: false });
      expect((stop.header.body as { reason: string }).reason).toMatch(/worker rank 0 sent a step-end the coordinator cannot accept: .*step-end: .*loss must be a finite number/);
      const exit = await coord.exit;
      expect(exit.code).not.toBe(0);
    } catch (e) {
      throw new Error(`${(e as Error).message}; coordinator: ${coord.lines.slice(-8).join('\n')}`);
    } finally {
      s.close();
    }
  }, 60_000);
});
