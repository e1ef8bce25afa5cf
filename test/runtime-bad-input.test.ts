import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { Packr } from 'msgpackr';
import { decode, encode, PROTOCOL_VERSION } from '../src/protocol/index.js';
import { type Proc, startCli, startCoordinator } from './helpers/processes.js';

const packr = new Packr({ useRecords: false });
const JOB = 'bad-input-test';
const hello = (token: string) => ({ host: 'test', pid: 1, token, dataAddress: 'tcp://127.0.0.1:1', device: 'cpu', backend: 'cpu', curveKey: '' });

describe('a live coordinator given bad input', () => {
  let coord: Proc;
  let addr: string;
  const dir = mkdtempSync(join(tmpdir(), 'shardface-'));
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 's3cret\n');

  beforeAll(async () => {
    ({ coord, address: addr } = await startCoordinator(['--workers', '1', '--steps', '3', '--job', JOB, '--token-file', tokenFile]));
  });
  afterAll(() => {
    coord.child.kill('SIGKILL');
  });

  /** Sends frames from a fresh DEALER and returns the coordinator's error reply. */
  async function send(frames: Uint8Array[]): Promise<{ code: string; message: string }> {
    const s = new zmq.Dealer({ linger: 0, receiveTimeout: 20_000 });
    s.connect(addr);
    await s.send(frames);
    const reply = await s.receive();
    s.close();
    // a peer that has not registered learns nothing about the job, not even its id
    expect(Buffer.concat(reply).includes(JOB)).toBe(false);
    const r = decode(reply);
    if (!r.ok || r.msg.header.type !== 'error') throw new Error(`expected an error reply, got ${r.ok ? r.msg.header.type : r.error.message}`);
    return r.msg.header.body as { code: string; message: string };
  }

  const cases: [string, () => Uint8Array[], string, RegExp][] = [
    ['an undecodable header', () => [new Uint8Array([0xc1, 0x00, 0x13])], 'undecodable-header', /not msgpack/],
    [
      'a wrong protocol version',
      () => [packr.pack({ v: PROTOCOL_VERSION + 7, type: 'hello', job: JOB, step: 0, rank: -1, tensors: [], body: hello('s3cret') })],
      'version-mismatch',
      new RegExp(`version ${PROTOCOL_VERSION + 7}`),
    ],
    ['an unknown type', () => [packr.pack({ v: PROTOCOL_VERSION, type: 'gossip', job: JOB, step: 0, rank: -1, tensors: [], body: {} })], 'unknown-type', /gossip/],
    [
      'a tensor frame of the wrong length',
      () => {
        const f = encode('softmax-stats', { job: JOB, step: 1, rank: 0 }, { rows: 4, batch: 4 }, [{ name: 'rowMax', data: new Float32Array(4) }]);
        return [f[0]!, f[1]!.subarray(0, 12)];
      },
      'tensor-length',
      /12 bytes/,
    ],
    ['a wrong job id', () => encode('hello', { job: 'someone-elses-job', step: 0, rank: -1 }, hello('s3cret')), 'wrong-job', /someone-elses-job/],
    ['a rank out of range', () => encode('hello', { job: JOB, step: 0, rank: 4 }, hello('s3cret')), 'rank-out-of-range', /rank 4/],
    ['a wrong token', () => encode('hello', { job: JOB, step: 0, rank: -1 }, hello('guess')), 'bad-token', /wrong token/],
    ['a message before registering', () => encode('step-end', { job: JOB, step: 1, rank: 0 }, { metrics: {} }), 'unexpected-type', /hello first/],
  ];
  for (const [what, frames, code, message] of cases) {
    it(`answers ${what} with ${code}`, async () => {
      const e = await send(frames());
      expect(e.code).toBe(code);
      expect(e.message).toMatch(message);
      // the log line travels through a pipe and may arrive after the reply
      await coord.waitFor((l) => l.code === code && /rejected message/.test(String(l.msg)), 10_000);
    });
  }

  it('still serves a correct worker afterwards', async () => {
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--token-file', tokenFile]);
    const [c, x] = await Promise.all([coord.exit, w.exit]);
    expect(c.code, coord.lines.slice(-5).join('\n')).toBe(0);
    expect(x.code).toBe(0);
  });
});

describe('a worker the coordinator refuses', () => {
  it("exits non-zero with the coordinator's reason", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-'));
    writeFileSync(join(dir, 't'), 'right');
    writeFileSync(join(dir, 'w'), 'wrong');
    const { coord, address: addr } = await startCoordinator(['--workers', '1', '--job', 'refuse', '--token-file', join(dir, 't')]);
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--token-file', join(dir, 'w')]);
    const x = await w.exit;
    coord.child.kill('SIGTERM');
    expect(x.code).toBe(1);
    expect(w.json().some((l) => /bad-token/.test(String(l.reason ?? l.msg)))).toBe(true);
  });
});
