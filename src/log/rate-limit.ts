/**
 * Rate-limited warnings for things a peer can trigger at will (bad frames,
 * refused connections, strangers' messages): the first `burst` lines of each
 * interval are logged, the rest only counted, and one summary line per
 * interval says how many were suppressed. Callers log codes and sizes, never
 * the offending bytes.
 */
import type { Logger } from 'pino';

export interface RateLimitOptions {
  /** Lines logged per interval before suppression starts. Default 10. */
  burst?: number;
  /** Interval length in ms. Default 10 s. */
  intervalMs?: number;
}

export class RateLimitedLog {
  private readonly burst: number;
  private readonly intervalMs: number;
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Lines suppressed so far, over the whole life of this log (for tests and metrics). */
  totalSuppressed = 0;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
    opts: RateLimitOptions = {},
  ) {
    this.burst = opts.burst ?? 10;
    this.intervalMs = opts.intervalMs ?? 10_000;
  }

  warn(fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - this.windowStart >= this.intervalMs) {
      this.flush();
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow < this.burst) {
      this.inWindow++;
      this.log.warn(fields, msg);
      return;
    }
    this.suppressed++;
    this.totalSuppressed++;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.windowStart + this.intervalMs - now);
      this.timer.unref();
    }
  }

  /** Writes the summary line for the current interval, if anything was suppressed. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.suppressed === 0) return;
    this.log.warn({ suppressed: this.suppressed, intervalMs: this.intervalMs }, `${this.suppressed} more ${this.what} in the last ${this.intervalMs / 1000} s (not logged one by one)`);
    this.suppressed = 0;
  }
}
