/**
 * Structured logs: pino JSON lines from every process, each carrying role,
 * rank, host, pid and the current step (read at emit time, so callers never pass
 * it). `pretty` renders the same events for a terminal; `file` tees the JSON.
 */
import { hostname } from 'node:os';
import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'json' | 'pretty';
export type Role = 'coordinator' | 'worker' | 'launcher' | 'cli';

export interface LogOptions {
  role: Role;
  rank?: number | null;
  format?: LogFormat;
  file?: string;
  level?: string;
  /** Where JSON lines go (default stdout). */
  destination?: DestinationStream;
}

/** Mutable per-process context; `step` is stamped on every line. */
export interface LogContext {
  step: number | null;
  rank: number | null;
}

export interface ShardfaceLogger {
  log: Logger;
  ctx: LogContext;
}

export function createLogger(opts: LogOptions): ShardfaceLogger {
  const ctx: LogContext = { step: null, rank: opts.rank ?? null };
  const streams: pino.StreamEntry[] = [];
  if ((opts.format ?? 'json') === 'pretty') {
    streams.push({ stream: pretty({ sync: true, colorize: process.stdout.isTTY, ignore: 'hostname,host,pid', translateTime: 'HH:MM:ss.l', destination: 1 }) });
  } else {
    streams.push({ stream: opts.destination ?? pino.destination({ dest: 1, sync: true }) });
  }
  if (opts.file) streams.push({ stream: pino.destination({ dest: opts.file, sync: true, mkdir: true }) });
  const log = pino(
    {
      level: opts.level ?? process.env.SHARDFACE_LOG_LEVEL ?? 'info',
      base: { role: opts.role, host: hostname(), pid: process.pid },
      mixin: () => ({ rank: ctx.rank, step: ctx.step }),
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    streams.length === 1 ? streams[0]!.stream : pino.multistream(streams),
  );
  return { log, ctx };
}
