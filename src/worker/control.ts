/**
 * The worker's end of the control plane: one DEALER socket to the coordinator,
 * a receive loop that validates every message, and typed waits for the few
 * messages a step expects. A `stop` from the coordinator (or its silence, or a
 * signal) rejects whatever is pending — sends included — so no step hangs on a
 * dead job.
 *
 * Until the heartbeat thread takes over (after welcome), the channel watches
 * the coordinator itself: no connection within `timeoutMs`, or silence for
 * that long once registered (a registered worker hears the coordinator's
 * heartbeats), stops the worker with an error naming the address.
 */
import { randomBytes } from 'node:crypto';
import { controlClient, decode, encode, frameBytes, type Bodies, type ControlClient, type Message, type MessageOf, type MessageType, type OutTensor, type Transport } from '../protocol/index.js';
import type { ShardfaceLogger } from '../log/logger.js';
import { RateLimitedLog } from '../log/rate-limit.js';

export class JobStopped extends Error {
  constructor(
    readonly reason: string,
    readonly ok: boolean,
    /** The coordinator restarts the job from its newest checkpoint: this worker registers again instead of exiting. */
    readonly restart = false,
  ) {
    super(reason);
    this.name = 'JobStopped';
  }
}

type Waiter = { types: readonly MessageType[]; step: number | null; resolve: (m: Message) => void; reject: (e: Error) => void };

export class ControlChannel {
  private readonly socket: ControlClient;
  private readonly queue: Message[] = [];
  private waiters: Waiter[] = [];
  private stopped: JobStopped | null = null;
  private readonly stoppedPromise: Promise<never>;
  private rejectStopped!: (e: JobStopped) => void;
  private lastHeard = Date.now();
  private connected = false;
  private watchdog: NodeJS.Timeout | null = null;
  private readonly badFrames: RateLimitedLog;
  job = '';
  rank = -1;
  /** Set once welcome arrived: until then an error reply is the coordinator refusing this worker (a requested rank is set before). */
  welcomed = false;
  /** Bytes of every message sent to / received from the coordinator on this channel (for metrics). */
  bytesSent = 0;
  bytesReceived = 0;
  world: number | undefined;

  constructor(
    private readonly address: string,
    private readonly logger: ShardfaceLogger,
    private readonly transport: Transport,
  ) {
    // A random routing id: the coordinator binds this worker's rank to it, so it must not be guessable.
    this.socket = controlClient(transport, { routingId: `w-${randomBytes(16).toString('hex')}` });
    this.badFrames = new RateLimitedLog(logger.log, 'bad messages from the coordinator');
    this.stoppedPromise = new Promise<never>((_, reject) => (this.rejectStopped = reject));
    this.stoppedPromise.catch(() => undefined);
    this.socket.events.on('handshake', () => {
      this.connected = true;
    });
    this.socket.events.on('handshake:error:auth', () => this.fail(`the coordinator at ${this.address} refused this worker's CURVE key (not in its authorized_keys?)`));
  }

  get silenceMs(): number {
    return Date.now() - this.lastHeard;
  }

  connect(): void {
    this.socket.connect(this.address);
    void this.receiveLoop();
  }

  /** Stops the worker if the coordinator is unreachable or silent for `timeoutMs`; ends with {@link stopWatching}. */
  watch(timeoutMs: number): void {
    const started = Date.now();
    this.lastHeard = started;
    this.watchdog = setInterval(
      () => {
        const silent = this.silenceMs;
        if (silent <= timeoutMs) return;
        const secs = (timeoutMs / 1000).toFixed(1);
        if (!this.connected)
          this.fail(
            `cannot reach the coordinator at ${this.address}: no ${this.transport.curve ? 'CURVE handshake' : 'connection'} within ${secs} s${this.transport.curve ? ' (unreachable, or a wrong coordinator.pub)' : ''}`,
          );
        else this.fail(`coordinator at ${this.address} silent for ${(silent / 1000).toFixed(1)} s (timeout ${secs} s)`);
      },
      Math.max(50, Math.min(1000, timeoutMs / 4)),
    );
    this.watchdog.unref();
  }

  stopWatching(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  /** Sends, or rejects with the stop if the job stops first (a send to an unreachable coordinator never completes). */
  async send<T extends MessageType>(type: T, body: Bodies[T], tensors: OutTensor[] = [], step = this.logger.ctx.step ?? 0): Promise<void> {
    if (this.stopped) throw this.stopped;
    const frames = encode(type, { job: this.job, step, rank: this.rank }, body, tensors);
    this.bytesSent += frameBytes(frames);
    await Promise.race([this.socket.send(frames), this.stoppedPromise]);
  }

  /** Next message of `type` (optionally for `step`); rejects with JobStopped on stop. */
  waitFor<T extends MessageType>(type: T, step: number | null = null): Promise<MessageOf<T>> {
    return this.waitForAny([type], step);
  }

  /** Next message of any of `types`, in arrival order (between steps: the next step-begin or a checkpoint request). */
  waitForAny<T extends MessageType>(types: readonly T[], step: number | null = null): Promise<MessageOf<T>> {
    const wanted = types as readonly MessageType[];
    const i = this.queue.findIndex((m) => wanted.includes(m.header.type) && (step === null || m.header.step === step));
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0] as MessageOf<T>);
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => this.waiters.push({ types: wanted, step, resolve: resolve as (m: Message) => void, reject }));
  }

  /** Marks the job stopped from this side (coordinator silent, local failure, a signal). */
  fail(reason: string): void {
    if (!this.stopped) this.stoppedHere = true;
    this.deliverStop(new JobStopped(reason, false));
  }

  /** True when the stop came from this side, not from the coordinator (which then still needs to hear why). */
  stoppedHere = false;

  /** A last message after the stop (bye): best effort, given up after `ms`. */
  async sendLast<T extends MessageType>(type: T, body: Bodies[T], ms = 500): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
    await Promise.race([this.socket.send(encode(type, { job: this.job, step: this.logger.ctx.step ?? 0, rank: this.rank }, body)).catch(() => undefined), late]);
    clearTimeout(timer);
  }

  close(): void {
    this.stopWatching();
    this.badFrames.flush();
    this.socket.close();
  }

  /** Called once when the job stops (coordinator's stop, its silence, a signal). */
  onStop: ((s: JobStopped) => void) | null = null;

  /** Why the job stopped, if it has. */
  get stopReason(): JobStopped | null {
    return this.stopped;
  }

  private deliverStop(s: JobStopped): void {
    if (this.stopped) return;
    this.stopped = s;
    this.stopWatching();
    this.onStop?.(s);
    this.rejectStopped(s);
    for (const w of this.waiters) w.reject(s);
    this.waiters = [];
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.socket) {
        this.lastHeard = Date.now();
        this.bytesReceived += frameBytes(frames);
        const res = decode(frames, { world: this.world });
        if (!res.ok) {
          this.badFrames.warn({ code: res.error.code, frames: frames.length }, 'bad message from the coordinator');
          continue;
        }
        const msg = res.msg;
        const h = msg.header;
        if (this.job && h.job !== this.job && !(h.type === 'error' && h.job === '')) {
          this.badFrames.warn({ code: 'wrong-job' }, 'message for another job');
          continue;
        }
        if (h.type === 'heartbeat') {
          // registered, not yet welcomed (waiting for the others, e.g. a restart's replacement): the heartbeat thread
          // starts with welcome, so answer here, or the coordinator would take the wait for silence
          if (!this.welcomed && !this.stopped) void this.socket.send(encode('heartbeat', { job: h.job, step: 0, rank: this.rank }, {})).catch(() => undefined);
          continue;
        }
        if (h.type === 'stop') {
          this.deliverStop(new JobStopped(h.body.reason, h.body.ok, h.body.restart === true));
          continue;
        }
        if (h.type === 'error' && !this.waiters.some((w) => w.types.includes('error'))) {
          // An error reply to something we sent; while registering it is fatal.
          this.logger.log.error({ code: h.body.code }, `coordinator: ${h.body.message}`);
          if (!this.welcomed) this.deliverStop(new JobStopped(`coordinator refused registration: ${h.body.code}: ${h.body.message}`, false));
          continue;
        }
        const w = this.waiters.findIndex((x) => x.types.includes(h.type) && (x.step === null || x.step === h.step));
        if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(msg);
        else this.queue.push(msg);
      }
    } catch (e) {
      this.deliverStop(new JobStopped(`control socket closed: ${(e as Error).message}`, false));
    }
  }
}
