/** Options and helpers shared by several sub-commands. */
import { readFileSync } from 'node:fs';
import { UsageError, type OptionSpec } from './args.js';
import { createLogger, type LogFormat, type Role, type ShardfaceLogger } from '../log/logger.js';

export const LOG_OPTIONS: Record<string, OptionSpec> = {
  'log-format': { kind: 'string', default: 'json', help: 'json (machines) or pretty (terminals)' },
  'log-file': { kind: 'string', help: 'also append JSON log lines to this file' },
  help: { kind: 'boolean', help: 'show this help' },
};

export function loggerFrom(o: Record<string, unknown>, role: Role, rank: number | null = null): ShardfaceLogger {
  const format = String(o['log-format'] ?? 'json');
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
