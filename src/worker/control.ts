/**
 * The worker's end of the control plane: one DEALER socket to the coordinator,
 * a receive loop that validates every message, and typed waits for the few
 * messages a step expects. A `stop` from the coordinator (or its silence)
 * rejects whatever is pending, so no step hangs on a dead job.
 */
import {
  controlClient,
  decode,
  encode,
  frameBytes,
  type Bodies,
  type ControlClient,
  type Message,
  type MessageOf,
  type MessageType,
  type OutTensor,
} from '../protocol/index.js';
import type { ShardfaceLogger } from '../log/logger.js';

export class JobStopped extends Error {
  constructor(
    readonly reason: string,
    readonly ok: boolean,
  ) {
    super(reason);
    this.name = 'JobStopped';
  }
}

type Waiter = { type: MessageType; step: number | null; resolve: (m: Message) => void; reject: (e: Error) => void };

export class ControlChannel {
  private readonly socket: ControlClient;
  private readonly queue: Message[] = [];
  private waiters: Waiter[] = [];
  private stopped: JobStopped | null = null;
  private lastHeard = Date.now();
  job = '';
  rank = -1;
  /** Bytes of every message sent to / received from the coordinator on this channel (for metrics). */
  bytesSent = 0;
  bytesReceived = 0;
  world: number | undefined;

  constructor(
    private readonly address: string,
    private readonly logger: ShardfaceLogger,
  ) {
    this.socket = controlClient();
  }

  get silenceMs(): number {
    return Date.now() - this.lastHeard;
  }

  connect(): void {
    this.socket.connect(this.address);
    void this.receiveLoop();
  }

  async send<T extends MessageType>(type: T, body: Bodies[T], tensors: OutTensor[] = [], step = this.logger.ctx.step ?? 0): Promise<void> {
    const frames = encode(type, { job: this.job, step, rank: this.rank }, body, tensors);
    this.bytesSent += frameBytes(frames);
    await this.socket.send(frames);
  }

  /** Next message of `type` (optionally for `step`); rejects with JobStopped on stop. */
  waitFor<T extends MessageType>(type: T, step: number | null = null): Promise<MessageOf<T>> {
    const i = this.queue.findIndex((m) => m.header.type === type && (step === null || m.header.step === step));
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0] as MessageOf<T>);
    if (this.stopped) return Promise.reject(this.stopped);
    return new Promise((resolve, reject) => this.waiters.push({ type, step, resolve: resolve as (m: Message) => void, reject }));
  }

  /** Marks the job stopped from this side (coordinator silent, local failure). */
  fail(reason: string): void {
    this.deliverStop(new JobStopped(reason, false));
  }

  close(): void {
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
    this.onStop?.(s);
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
          this.logger.log.warn({ code: res.error.code }, `bad message from coordinator: ${res.error.message}`);
          continue;
        }
        const msg = res.msg;
        const h = msg.header;
        if (this.job && h.job !== this.job) {
          this.logger.log.warn({ code: 'wrong-job' }, `message for job ${h.job}, this worker is in job ${this.job}`);
          continue;
        }
        if (h.type === 'heartbeat') continue;
        if (h.type === 'stop') {
          this.deliverStop(new JobStopped(h.body.reason, h.body.ok));
          continue;
        }
        if (h.type === 'error' && !this.waiters.some((w) => w.type === 'error')) {
          // An error reply to something we sent; while registering it is fatal.
          this.logger.log.error({ code: h.body.code }, `coordinator: ${h.body.message}`);
          if (this.rank < 0) this.deliverStop(new JobStopped(`coordinator refused registration: ${h.body.code}: ${h.body.message}`, false));
          continue;
        }
        const w = this.waiters.findIndex((x) => x.type === h.type && (x.step === null || x.step === h.step));
        if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(msg);
        else this.queue.push(msg);
      }
    } catch (e) {
      this.deliverStop(new JobStopped(`control socket closed: ${(e as Error).message}`, false));
    }
  }
}
