/**
 * CURVE on the control and data planes, with real processes: only clients
 * whose key is in authorized_keys get through the handshake; one that does
 * but holds a wrong token is refused and learns no job id; workers with
 * their own keys run the job.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { decode, encode } from '../src/protocol/index.js';
import { readKeyPair, readPublicKey, loadWorkerKeys, readAuthorizedKeys } from '../src/protocol/keys.js';
import { z85Decode, z85Encode } from '../src/protocol/z85.js';
import { type Proc, runCli, startCli, startCoordinator } from './helpers/processes.js';

const JOB = 'curve-job-7f3a';
const dir = mkdtempSync(join(tmpdir(), 'shardface-curve-'));
const keys = join(dir, 'keys');
const foreign = join(dir, 'foreign');
const tokenFile = join(dir, 'token');
writeFileSync(tokenFile, 'curve-secret\n');

const hello = (token: string, curveKey = '') =>
  encode('hello', { job: '', step: 0, rank: -1 }, { host: 'stranger', pid: 1, token, dataAddress: 'tcp://127.0.0.1:1', device: 'cpu', backend: 'cpu', curveKey });

/** Sends `frames` from a DEALER with the given socket options; resolves with the reply, or null if none came within `ms`. */
async function ask(addr: string, frames: Uint8Array[], opts: Partial<zmq.Dealer>, ms = 1500): Promise<Uint8Array[] | null> {
  const s = new zmq.Dealer({ linger: 0, receiveTimeout: ms, ...opts });
  s.connect(addr);
  try {
    await s.send(frames);
    return await s.receive();
  } catch (e) {
    if ((e as { code?: string }).code === 'EAGAIN') return null;
    throw e;
  } finally {
    s.close();
  }
}

describe('keys generate', () => {
  it('writes a coordinator pair, one pair per worker and authorized_keys, secrets mode 0600, and refuses to overwrite', async () => {
    const r = await runCli(['keys', 'generate', keys, '--workers', '2']);
    expect(r.code, r.stderr).toBe(0);
    for (const name of ['coordinator', 'worker-0', 'worker-1']) {
      expect(statSync(join(keys, `${name}.key`)).mode & 0o777).toBe(0o600);
      const pair = readKeyPair(join(keys, `${name}.key`));
      expect(readPublicKey(join(keys, `${name}.pub`))).toBe(pair.publicKey);
      // the pair is a real CURVE pair: libzmq derives the same public key from the secret
      expect(z85Encode(z85Decode(pair.secretKey))).toBe(pair.secretKey);
    }
    const auth = readAuthorizedKeys(join(keys, 'authorized_keys'));
    expect([...auth.values()].sort()).toEqual(['worker-0', 'worker-1']);
    expect(auth.has(readPublicKey(join(keys, 'coordinator.pub')))).toBe(false);
    const again = await runCli(['keys', 'generate', keys]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists; pass --force/);
    expect((await runCli(['keys', 'generate', foreign])).code).toBe(0);
  });

  it('Z85 matches the RFC 32 test vector', () => {
    const bytes = Uint8Array.from([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b]);
    expect(z85Encode(bytes)).toBe('HelloWorld');
    expect([...z85Decode('HelloWorld')]).toEqual([...bytes]);
    expect(() => z85Decode('Hello Worl')).toThrow(/not a Z85 character/);
  });

  it('a key file readable by others, or a worker key that cannot be chosen, is a clear error', async () => {
    const loose = join(dir, 'loose');
    expect((await runCli(['keys', 'generate', loose])).code).toBe(0);
    const { chmodSync } = await import('node:fs');
    chmodSync(join(loose, 'worker.key'), 0o644);
    expect(() => loadWorkerKeys(loose)).toThrow(/readable by others \(mode 644\); chmod 600/);
    expect(() => loadWorkerKeys(keys)).toThrow(/worker-0.key, worker-1.key; name this worker's key pair with --curve-name/);
    expect(loadWorkerKeys(keys, { localRank: 1 }).name).toBe('worker-1');
    const r = await runCli(['worker', '--coordinator', 'tcp://127.0.0.1:9', '--curve-keys', loose]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--curve-keys: .*worker.key is readable by others/);
  });
});

describe('a coordinator with --curve-keys', () => {
  let coord: Proc;
  let addr: string;
  const serverKey = () => readPublicKey(join(keys, 'coordinator.pub'));
  const worker0 = () => readKeyPair(join(keys, 'worker-0.key'));
  const stranger = () => readKeyPair(join(foreign, 'worker.key'));

  beforeAll(async () => {
    ({ coord, address: addr } = await startCoordinator(['--workers', '2', '--steps', '40', '--step-delay-ms', '50', '--job', JOB, '--token-file', tokenFile, '--curve-keys', keys]));
  });
  afterAll(() => {
    coord.child.kill('SIGKILL');
  });

  it('gives a client without CURVE nothing, not even an error', async () => {
    expect(await ask(addr, hello('curve-secret'), {})).toBeNull();
  });

  it('refuses a CURVE client whose key is not authorised (and logs it)', async () => {
    const k = stranger();
    expect(await ask(addr, hello('curve-secret'), { curveServerKey: serverKey(), curvePublicKey: k.publicKey, curveSecretKey: k.secretKey })).toBeNull();
    await coord.waitFor((l) => l.msg === 'connection refused: CURVE key not authorised' && l.why === 'client key not in authorized_keys');
  });

  it('gives a client that expects another coordinator key nothing', async () => {
    const k = worker0();
    expect(await ask(addr, hello('curve-secret'), { curveServerKey: readPublicKey(join(foreign, 'coordinator.pub')), curvePublicKey: k.publicKey, curveSecretKey: k.secretKey })).toBeNull();
  });

  it('an authorised key with a wrong token is refused and learns no job id', async () => {
    const k = worker0();
    const reply = await ask(addr, hello('guess'), { curveServerKey: serverKey(), curvePublicKey: k.publicKey, curveSecretKey: k.secretKey }, 10_000);
    expect(reply).not.toBeNull();
    expect(Buffer.concat(reply!).includes(JOB)).toBe(false);
    const r = decode(reply!);
    expect(r.ok && r.msg.header.type).toBe('error');
    if (r.ok && r.msg.header.type === 'error') {
      expect(r.msg.header.body.code).toBe('bad-token');
      expect(r.msg.header.job).toBe('');
    }
  });

  it('a worker whose key is not authorised fails at once with a clear error', async () => {
    // the right coordinator.pub and authorized_keys, but a key pair of its own that nobody listed
    const mixed = join(dir, 'mixed');
    mkdirSync(mixed, { mode: 0o700 });
    for (const f of ['coordinator.pub', 'authorized_keys']) copyFileSync(join(keys, f), join(mixed, f));
    copyFileSync(join(foreign, 'worker.key'), join(mixed, 'worker.key'));
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--token-file', tokenFile, '--curve-keys', mixed, '--worker-timeout', '20']);
    const t0 = Date.now();
    const x = await w.exit;
    expect(x.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(w.json().find((l) => l.msg === 'job stopped with an error')?.reason).toMatch(/coordinator at tcp:\/\/127\.0\.0\.1:\d+ refused this worker's CURVE key/);
  });

  it("a worker holding another coordinator's public key gives up after --worker-timeout, saying why", async () => {
    const w = startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--token-file', tokenFile, '--curve-keys', foreign, '--worker-timeout', '2']);
    const t0 = Date.now();
    const x = await w.exit;
    expect(x.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(w.json().find((l) => l.msg === 'job stopped with an error')?.reason).toMatch(
      /cannot reach the coordinator at tcp:\/\/127\.0\.0\.1:\d+: no CURVE handshake within 2\.0 s \(unreachable, or a wrong coordinator\.pub\)/,
    );
  });

  it("workers with their own authorised keys run the job; a stranger's key is refused at their ring inboxes", async () => {
    const workers = [0, 1].map((i) =>
      startCli(['worker', '--coordinator', addr, '--backend', 'cpu', '--token-file', tokenFile, '--curve-keys', keys, '--curve-name', `worker-${i}`, '--rank', String(i)]),
    );
    const reg = await workers[0]!.waitFor((l) => l.msg === 'registering');
    await workers[0]!.waitFor((l) => l.msg === 'joined job' && l.curve === true);
    const k = stranger();
    const ring = encode('ring', { job: JOB, step: 0, rank: 1 }, { op: 'allreduce', seq: 1, chunk: 0, slot: 1 }, [{ name: 'data', data: new Float32Array(1) }]);
    await ask(String(reg.dataAddress), ring, { curveServerKey: readPublicKey(join(keys, 'worker-0.pub')), curvePublicKey: k.publicKey, curveSecretKey: k.secretKey }, 500);
    await workers[0]!.waitFor((l) => l.msg === 'ring inbox refused a connection: CURVE key not authorised');
    const [c, ...w] = await Promise.all([coord.exit, ...workers.map((p) => p.exit)]);
    expect(c.code, coord.lines.slice(-5).join('\n')).toBe(0);
    w.forEach((x) => expect(x.code).toBe(0));
    expect(coord.json().find((l) => l.msg === 'coordinator listening')).toMatchObject({ curve: true, authorizedKeys: 2 });
  });
});

it('train --curve-keys: the coordinator and local workers (one key pair each, chosen by local rank) train over CURVE', async () => {
  const runDir = join(dir, 'run');
  const r = await runCli([
    'train',
    '--workers',
    '2',
    '--batch',
    '8',
    '--image-size',
    '16',
    '--embedding-size',
    '16',
    '--data',
    'synthetic:20',
    '--images-per-identity',
    '4',
    '--held-out-identities',
    '0',
    '--steps',
    '2',
    '--backend',
    'cpu-native',
    '--run-dir',
    runDir,
    '--curve-keys',
    keys,
  ]);
  expect(r.code, r.stderr.slice(-2000)).toBe(0);
  expect(JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'))).toMatchObject({ ok: true, steps: 2 });
  const joined = readFileSync(join(runDir, 'workers.log'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"joined job"'));
  expect(joined).toHaveLength(2);
  joined.forEach((l) => expect(JSON.parse(l).curve).toBe(true));
});

it('the README documents the key files', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  expect(readme).toMatch(/shardface keys generate/);
  expect(readme).toMatch(/authorized_keys/);
});
