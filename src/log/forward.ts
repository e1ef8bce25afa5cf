/**
 * Lines from child processes (workers started here), made into log records.
 * A worker's own lines are already JSON with role, rank and step; anything
 * else it prints (a library's warning on stderr, a crash trace) is wrapped in
 * a record of the same shape, stamped with the rank and step that worker last
 * reported, so a pipe carries one format whatever printed the line.
 */
import { hostname } from 'node:os';

export interface ChildRef {
  /** The child's index among the processes this parent started (its local rank). */
  index: number;
  pid: number | undefined;
}

export interface ForwardedLine {
  /** The record as one JSON line (the child's own bytes when it was JSON already). */
  line: string;
  record: Record<string, unknown>;
  /** True when the child printed something that was not a log record. */
  wrapped: boolean;
}

const HOST = hostname();

export class LineForwarder {
  private readonly last = new Map<number, { rank: unknown; step: unknown }>();

  constructor(private readonly role = 'worker') {}

  forward(raw: string, from: ChildRef, stream: 'stdout' | 'stderr'): ForwardedLine {
    const record = parseRecord(raw);
    if (record) {
      this.last.set(from.index, { rank: record.rank ?? null, step: record.step ?? null });
      return { line: raw, record, wrapped: false };
    }
    const seen = this.last.get(from.index);
    const wrapped: Record<string, unknown> = {
      level: stream === 'stderr' ? 40 : 30,
      time: new Date().toISOString(),
      role: this.role,
      host: HOST,
      pid: from.pid ?? null,
      rank: seen?.rank ?? null,
      step: seen?.step ?? null,
      localRank: from.index,
      stream,
      msg: raw,
    };
    return { line: JSON.stringify(wrapped), record: wrapped, wrapped: true };
  }
}

/** A pino-style log record (an object with a numeric level and a role), or null. */
function parseRecord(raw: string): Record<string, unknown> | null {
  if (!raw.startsWith('{')) return null;
  try {
    const o = JSON.parse(raw) as unknown;
    if (o && typeof o === 'object' && !Array.isArray(o) && typeof (o as { level?: unknown }).level === 'number' && typeof (o as { role?: unknown }).role === 'string')
      return o as Record<string, unknown>;
  } catch {
    // not JSON after all
  }
  return null;
}
