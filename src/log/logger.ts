/**
 * Structured logs: pino JSON lines from every process, each carrying role,
 * rank, host, pid and the current step (read at emit time, so callers never pass
 * it). `pretty` renders the same events for a terminal; `file` tees the JSON.
 * Lines forwarded from child processes go through `prettyLine` in pretty mode,
 * so every process's lines look alike.
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
  /** false: write only to `file` (a terminal run shows a progress bar instead). Default true. */
  console?: boolean;
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

const PRETTY = { colorize: Boolean(process.stdout.isTTY), ignore: 'hostname,host,pid', translateTime: 'HH:MM:ss.l' };
let prettify: ((o: object) => string) | null = null;

/** One JSON log record rendered as createLogger's pretty format renders its own (with a newline). */
export function prettyLine(record: object): string {
  prettify ??= pretty.prettyFactory(PRETTY);
  return prettify(record);
}

export function createLogger(opts: LogOptions): ShardfaceLogger {
  const ctx: LogContext = { step: null, rank: opts.rank ?? null };
  const streams: pino.StreamEntry[] = [];
  if (opts.console === false) {
    // nothing on the console
  } else if ((opts.format ?? 'json') === 'pretty') {
    streams.push({ stream: pretty({ ...PRETTY, sync: true, destination: 1 }) });
  } else {
    streams.push({ stream: opts.destination ?? pino.destination({ dest: 1, sync: true }) });
  }
  if (opts.file) streams.push({ stream: pino.destination({ dest: opts.file, sync: true, mkdir: true }) });
  if (streams.length === 0) throw new Error('createLogger: console: false needs a file');
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
