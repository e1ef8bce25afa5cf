/** Options and helpers shared by several sub-commands. */
import { readFileSync } from 'node:fs';
import { UsageError, type OptionSpec } from './args.js';
import { createLogger, type LogFormat, type Role, type ShardfaceLogger } from '../log/logger.js';
import { DEFAULT_MAX_FRAME_BYTES, KeyFileError, loadCoordinatorKeys, loadWorkerKeys, type Transport } from '../protocol/index.js';

export const LOG_OPTIONS: Record<string, OptionSpec> = {
  'log-format': { kind: 'string', default: 'json', help: 'json (machines) or pretty (terminals)' },
  'log-file': { kind: 'string', help: 'also append JSON log lines to this file' },
  help: { kind: 'boolean', help: 'show this help' },
};

export function loggerFrom(o: Record<string, unknown>, role: Role, rank: number | null = null): ShardfaceLogger {
  const format = (o['log-format'] as string | undefined) ?? 'json';
  if (format !== 'json' && format !== 'pretty') throw new UsageError(`--log-format must be json or pretty, got ${JSON.stringify(format)}`);
  return createLogger({ role, rank, format: format as LogFormat, file: o['log-file'] as string | undefined });
}

/** The shared secret workers must present: from a file, else $SHARDFACE_TOKEN, else none. */
export function readToken(file: unknown): string {
  if (typeof file === 'string') {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`cannot read --token-file ${file}: ${(e as Error).message}`);
    }
  }
  return process.env.SHARDFACE_TOKEN ?? '';
}

/** Transport security and limits, shared by coordinator, worker, launch. */
export const TRANSPORT_OPTIONS: Record<string, OptionSpec> = {
  'curve-keys': { kind: 'string', help: 'directory from `shardface keys generate`: encrypt and authenticate every connection with CURVE' },
  'max-frame-mb': { kind: 'number', default: DEFAULT_MAX_FRAME_BYTES / 2 ** 20, help: 'largest frame accepted from a peer, MiB (larger: the peer is disconnected unread)' },
};

/** The process's transport from --curve-keys / --max-frame-mb; workers pick their key pair as loadWorkerKeys describes. */
export function transportFrom(o: Record<string, unknown>, role: 'coordinator' | 'worker', curveName?: string): Transport {
  const mb = Number(o['max-frame-mb'] ?? DEFAULT_MAX_FRAME_BYTES / 2 ** 20);
  if (!(mb >= 1 && mb <= 4096)) throw new UsageError(`--max-frame-mb must be a number in [1, 4096], got ${mb}`);
  return { curve: curveKeysFrom(o['curve-keys'], role, curveName), maxFrameBytes: Math.floor(mb * 2 ** 20) };
}

function curveKeysFrom(dir: unknown, role: 'coordinator' | 'worker', curveName?: string): Transport['curve'] {
  if (typeof dir !== 'string' || dir === '') return null;
  try {
    if (role === 'coordinator') return loadCoordinatorKeys(dir);
    const local = process.env.SHARDFACE_LOCAL_RANK;
    return loadWorkerKeys(dir, { name: curveName, localRank: local !== undefined ? Number(local) : undefined });
  } catch (e) {
    if (e instanceof KeyFileError) throw new UsageError(`--curve-keys: ${e.message}`);
    throw e;
  }
}
