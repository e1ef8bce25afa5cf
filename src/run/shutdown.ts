/**
 * The coordinator's side of a graceful stop and of time-based checkpoints.
 *
 * Graceful stop: on the first SIGTERM or SIGINT — the coordinator's own, or one a worker reports (schedulers
 * signal every process of a job at about the same time, and sometimes only one pod) — the running step finishes,
 * every worker writes a checkpoint of the state after it, the manifest is written, and the job stops, all within
 * `timeoutMs` of the signal. A second signal to the coordinator stops at once. A step the numerical guard skipped
 * is never checkpointed: the newest complete checkpoint stays the one to resume from. See
 * docs/architecture.md#graceful-stop.
 */
import type { Coordinator } from '../coordinator/coordinator.js';
import type { ShardfaceLogger } from '../log/logger.js';

export interface GracefulStopOptions {
  coordinator: () => Coordinator | null;
  /** shutdownTimeoutMs: from the first signal to the stop, the final checkpoint included. */
  timeoutMs: number;
  log: ShardfaceLogger['log'];
  /** The newest complete checkpoint (its directory and step; null / 0 when there is none). */
  newest: () => { dir: string | null; step: number };
  /** Whether the numerical guard skipped the step that ended last. */
  lastStepSkipped: () => boolean;
  /** How a person continues the run (named in the stop's reason). */
  resumeHint: string;
  /** A line for a person at a terminal. */
  show?: (line: string) => void;
}

export class GracefulStop {
  /** The signal that stopped the run (null: none did). */
  signal: NodeJS.Signals | null = null;
  private ownSignals = 0;
  private waiting: { step: number; resolve: () => void } | null = null;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: GracefulStopOptions) {}

  /** The coordinator process received `sig`. */
  onOwnSignal(sig: NodeJS.Signals): void {
    this.ownSignals++;
    const why = `coordinator received ${sig}`;
    if (this.ownSignals > 1) {
      this.signal ??= sig;
      void this.o.coordinator()?.abort(`${why} again: stopping at once, without a final checkpoint; the newest complete checkpoint is ${this.o.newest().dir ?? 'none'}`);
      return;
    }
    this.begin(why, sig);
  }

  /** A worker reported that it received `sig` (event `signal`). */
  onWorkerSignal(rank: number, sig: unknown): void {
    if (sig !== 'SIGTERM' && sig !== 'SIGINT') return;
    this.begin(`worker rank ${rank} received ${sig}`, sig);
  }

  /** A checkpoint became complete (its manifest is written). */
  onCheckpoint(step: number): void {
    if (this.waiting?.step === step) this.waiting.resolve();
  }

  /** Ends the timer (the job has ended). */
  dispose(): void {
    clearTimeout(this.timer);
  }

  private begin(why: string, sig: NodeJS.Signals): void {
    const coordinator = this.o.coordinator();
    if (this.signal !== null || !coordinator) return;
    this.signal = sig;
    const step = coordinator.snapshot().step;
    const secs = this.o.timeoutMs / 1000;
    const line = `${why}: finishing step ${step}, then writing a final checkpoint and stopping (at most ${secs} s; a second signal stops at once)`;
    this.o.log.warn({ signal: sig, step, shutdownTimeoutMs: this.o.timeoutMs }, line);
    this.o.show?.(line);
    this.timer = setTimeout(
      () =>
        void coordinator.abort(
          `${why}, and the step and its final checkpoint did not complete within shutdownTimeoutMs (${secs} s); the newest complete checkpoint is ${this.o.newest().dir ?? 'none'}`,
        ),
      this.o.timeoutMs,
    );
    coordinator.stopAfterStep(why, (last) => this.finalCheckpoint(coordinator, why, last));
  }

  private async finalCheckpoint(coordinator: Coordinator, why: string, step: number): Promise<string> {
    let what: string;
    if (this.o.lastStepSkipped()) {
      what = `no final checkpoint: the numerical guard skipped step ${step}; the newest complete checkpoint is ${this.o.newest().dir ?? 'none'}`;
      this.o.log.warn({ step, checkpoint: this.o.newest().dir }, what);
    } else {
      if (this.o.newest().step !== step) {
        const written = new Promise<void>((resolve) => (this.waiting = { step, resolve }));
        await coordinator.requestCheckpoint();
        await written;
      }
      what = `final checkpoint ${this.o.newest().dir}`;
    }
    clearTimeout(this.timer);
    return `${why}: stopped after step ${step}; ${what}; continue with ${this.o.resumeHint}`;
  }
}

/**
 * checkpointMinutes: whether a step beginning now also writes a checkpoint. One clock, the coordinator's, so
 * every rank writes at the same step; it starts with the first step and restarts with each complete checkpoint.
 */
export class CheckpointClock {
  private last: number | null = null;

  constructor(
    private readonly minutes: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Asked as a step begins: the minutes since the last checkpoint when one is due, else null. */
  due(): number | null {
    if (this.minutes <= 0) return null;
    const t = this.now();
    this.last ??= t;
    const since = (t - this.last) / 60_000;
    return since >= this.minutes ? since : null;
  }

  /** A checkpoint became complete. */
  written(): void {
    this.last = this.now();
  }
}
