/**
 * CURVE key files: what `shardface keys generate` writes and what
 * `--curve-keys DIR` reads.
 *
 *   DIR/coordinator.key   the coordinator's key pair (secret: mode 0600)
 *   DIR/coordinator.pub   its public key, which every worker needs
 *   DIR/worker.key        one key pair shared by all workers, or
 *   DIR/worker-<i>.key    one pair per worker (`--workers N`)
 *   DIR/*.pub             the public half of each pair
 *   DIR/authorized_keys   "<public key> <name>" per line: the clients the
 *                         coordinator and every worker's ring inbox accept
 *
 * A node needs coordinator.pub, authorized_keys and its own .key; only the
 * coordinator needs coordinator.key. Revoking a worker = deleting its line
 * from authorized_keys (and restarting the job).
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { curveKeyPair } from 'zeromq';
import { isCurveKey } from './z85.js';

export interface CurveKeyPair {
  publicKey: string;
  secretKey: string;
}

/** Everything one process needs for CURVE: its own pair, the coordinator's public key and the accepted clients. */
export interface CurveKeys {
  /** Which key pair this is (file name without .key), for logs. */
  name: string;
  own: CurveKeyPair;
  coordinatorKey: string;
  /** Accepted client public keys (Z85) → name. */
  authorized: Map<string, string>;
}

export class KeyFileError extends Error {
  override name = 'KeyFileError';
}

const AUTHORIZED_KEYS = 'authorized_keys';

function keyFile(pair: CurveKeyPair, name: string): string {
  return `# shardface CURVE key pair "${name}": keep this file secret (mode 0600)\npublic = ${pair.publicKey}\nsecret = ${pair.secretKey}\n`;
}

/** Writes a coordinator pair, worker pair(s) and authorized_keys into `dir`; refuses to overwrite unless `force`. Returns the files written. */
export function generateKeys(dir: string, opts: { workers?: number; force?: boolean } = {}): string[] {
  const workers = opts.workers ?? 0;
  const names = ['coordinator', ...(workers > 0 ? Array.from({ length: workers }, (_, i) => `worker-${i}`) : ['worker'])];
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!opts.force) {
    const clash = names.map((n) => join(dir, `${n}.key`)).find((f) => existsSync(f));
    if (clash) throw new KeyFileError(`${clash} already exists; pass --force to replace the keys in ${dir}`);
  }
  const written: string[] = [];
  const authorized: string[] = ["# public key, name: the clients the coordinator and the workers' ring inboxes accept"];
  for (const name of names) {
    const pair = curveKeyPair();
    const secret = join(dir, `${name}.key`);
    writeFileSync(secret, keyFile(pair, name), { mode: 0o600 });
    chmodSync(secret, 0o600); // mode applies only to new files
    const pub = join(dir, `${name}.pub`);
    writeFileSync(pub, `${pair.publicKey}\n`, { mode: 0o644 });
    written.push(secret, pub);
    if (name !== 'coordinator') authorized.push(`${pair.publicKey} ${name}`);
  }
  const auth = join(dir, AUTHORIZED_KEYS);
  writeFileSync(auth, authorized.join('\n') + '\n', { mode: 0o644 });
  written.push(auth);
  return written;
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new KeyFileError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

export function readKeyPair(file: string): CurveKeyPair {
  const mode = statSync(file, { throwIfNoEntry: false })?.mode;
  if (mode === undefined) throw new KeyFileError(`key file ${file} does not exist`);
  if ((mode & 0o077) !== 0) throw new KeyFileError(`key file ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  const fields: Record<string, string> = {};
  for (const line of readText(file).split('\n')) {
    const m = /^\s*(public|secret)\s*=\s*(\S+)\s*$/.exec(line);
    if (m) fields[m[1]!] = m[2]!;
  }
  if (!fields.public || !isCurveKey(fields.public)) throw new KeyFileError(`${file}: no valid "public = <40 Z85 characters>" line`);
  if (!fields.secret || !isCurveKey(fields.secret)) throw new KeyFileError(`${file}: no valid "secret = <40 Z85 characters>" line`);
  return { publicKey: fields.public, secretKey: fields.secret };
}

export function readPublicKey(file: string): string {
  const line = readText(file)
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith('#'));
  if (!line || !isCurveKey(line)) throw new KeyFileError(`${file}: expected one public key (40 Z85 characters)`);
  return line;
}

export function readAuthorizedKeys(file: string): Map<string, string> {
  const keys = new Map<string, string>();
  readText(file)
    .split('\n')
    .forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const [key, ...name] = line.split(/\s+/);
      if (!isCurveKey(key!)) throw new KeyFileError(`${file}:${i + 1}: ${JSON.stringify(key)} is not a CURVE public key (40 Z85 characters)`);
      keys.set(key!, name.join(' ') || `key ${keys.size}`);
    });
  if (keys.size === 0) throw new KeyFileError(`${file} lists no keys: no client could connect`);
  return keys;
}

/** The coordinator's keys from `dir`. */
export function loadCoordinatorKeys(dir: string): CurveKeys {
  const own = readKeyPair(join(dir, 'coordinator.key'));
  return { name: 'coordinator', own, coordinatorKey: own.publicKey, authorized: readAuthorizedKeys(join(dir, AUTHORIZED_KEYS)) };
}

/**
 * A worker's keys from `dir`. Its pair is `name`.key when given; else
 * worker.key (shared); else the only worker*.key in `dir`; else
 * worker-<localRank>.key (per-worker keys of a single machine).
 */
export function loadWorkerKeys(dir: string, opts: { name?: string; localRank?: number } = {}): CurveKeys {
  let name = opts.name;
  if (!name) {
    const pairs = (existsSync(dir) ? readdirSync(dir) : []).filter((f) => /^worker.*\.key$/.test(f)).map((f) => f.slice(0, -4));
    if (pairs.includes('worker')) name = 'worker';
    else if (pairs.length === 1) name = pairs[0];
    else if (opts.localRank !== undefined && pairs.includes(`worker-${opts.localRank}`)) name = `worker-${opts.localRank}`;
    else throw new KeyFileError(`${dir} holds ${pairs.length ? pairs.map((p) => `${p}.key`).join(', ') : 'no worker key'}; name this worker's key pair with --curve-name`);
  }
  return {
    name,
    own: readKeyPair(join(dir, `${name}.key`)),
    coordinatorKey: readPublicKey(join(dir, 'coordinator.pub')),
    authorized: readAuthorizedKeys(join(dir, AUTHORIZED_KEYS)),
  };
}
