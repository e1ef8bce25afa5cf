/**
 * The coordinator process: membership, ranks, heartbeats, the step clock and
 * the softmax reduction of the sharded classifier. It is the only address a
 * user gives; workers learn everything else from it.
 *
 * Every received frame is decoded and validated; a bad message gets an
 * `error` reply naming what was wrong, plus a rate-limited log line, and never
 * stops the loop. A worker that goes silent, or leaves, stops the job with an
 * error naming its rank, host and last step — unless the job may restart
 * (`maxRestarts`): then every worker is stopped for a restart, the membership
 * starts over (the survivors and a replacement register again, exactly like
 * the first time: token, CURVE key, fresh sessions and ring ids) and the next
 * round begins from the newest checkpoint (docs/architecture.md#restarts).
 *
 * Who may say what: a connection (ZeroMQ routing id) becomes a member only by
 * a hello with the right token; from then on its messages are its rank's, and
 * a header naming another rank is refused. A heartbeat thread's connection is
 * bound to a rank by the session secret that rank got in its welcome.
 * Anything from any other connection is a stranger's: it learns nothing about
 * the job (error replies to it carry no job id, world size or config), and
 * its heartbeats keep no one alive.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  bindServer,
  controlServer,
  decode,
  PLAIN_TRANSPORT,
  encode,
  ProtocolError,
  type Bodies,
  type ControlServer,
  type MessageOf,
  type MessageType,
  type OutTensor,
  type StepKind,
  type Transport,
} from '../protocol/index.js';
import type { ShardfaceLogger } from '../log/logger.js';
import { RateLimitedLog } from '../log/rate-limit.js';
import { Membership, memberView, type Member, type MemberView } from './membership.js';
import { classRange } from '../ops/class-range.js';
import { SoftmaxReduction } from './softmax-reduction.js';
import { TargetReduction } from './target-reduction.js';
import type { JobState, JobStateReducer } from '../ops/job-state.js';

export interface JobSpec {
  kind: StepKind;
  steps: number;
  numClasses: number;
  seed: number;
  /** The first step to run (a resumed run: the checkpoint's step + 1); default 1. */
  startStep?: number;
  /** Opaque to the coordinator; forwarded to every worker in `welcome`. */
  config: Record<string, unknown>;
}

export interface CoordinatorOptions {
  bind: string;
  workers: number;
  job: string;
  token: string;
  heartbeatMs: number;
  workerTimeoutMs: number;
  /** How long to wait for all workers to register and become ready. */
  joinTimeoutMs: number;
  spec: JobSpec;
  logger: ShardfaceLogger;
  /** Called when all ranks finished a step, with each rank's metrics (index = rank). */
  onStepEnd?: (step: number, metrics: Record<string, number>[], loss: number | null) => void | Promise<void>;
  /** Called with events workers send (checkpoints written, evaluation results…). */
  onEvent?: (rank: number, name: string, fields: Record<string, unknown>) => void;
  /**
   * A training method's job-wide state (CurricularFace's t), run here once per
   * step from the reduced quantities it reads and broadcast as `extras`.
   */
  jobState?: JobStateReducer;
  /** CURVE keys and the frame size limit; default: plain TCP, default limit. */
  transport?: Transport;
  /** Asked as each step begins: whether every worker also writes a checkpoint at its end (checkpointMinutes: one clock for all ranks). */
  checkpointDue?: (step: number) => boolean;
  /** How many times a worker's failure may restart the job from its newest checkpoint (default 0: the failure stops it). */
  maxRestarts?: number;
  /** Where a restart continues: asked once per restart, after every worker was stopped. Required for maxRestarts > 0. */
  restartPoint?: () => RestartPoint;
  /** A worker declared lost while its process may still run (silent): a local launcher kills it, so it is replaced. */
  onWorkerLost?: (pid: number) => void;
}

/** Where the job continues after a restart. */
export interface RestartPoint {
  /** The checkpoint's step (0: none verifies, the job starts over); the next round begins at step + 1. */
  step: number;
  /** The checkpoint directory, for the logs; null for none. */
  dir: string | null;
  /** The job-wide state saved with it (CurricularFace's t); merged over the reducer's initial state. */
  lossState: Record<string, number>;
  /** The job configuration the next round's workers get in welcome (e.g. with `resumeFrom` the checkpoint). */
  config: Record<string, unknown>;
}

/** Longest error text sent back: enough for a reason, too short to echo a payload. */
const MAX_REPLY_CHARS = 240;
const clip = (s: string) => (s.length > MAX_REPLY_CHARS ? `${s.slice(0, MAX_REPLY_CHARS)}…` : s);

/** Constant-time token comparison (the digests have equal length whatever was sent). */
function tokenMatches(sent: string, expected: string): boolean {
  const h = (x: string) => createHash('sha256').update(x).digest();
  return timingSafeEqual(h(sent), h(expected));
}

export interface JobResult {
  ok: boolean;
  reason: string;
  lastStep: number;
}

export type Phase = 'joining' | 'starting' | 'running' | 'stopping' | 'done';

/** A read-only copy of the job's state, for monitoring. */
export interface JobSnapshot {
  job: string;
  phase: Phase;
  step: number;
  steps: number;
  /** Workers the job needs. */
  world: number;
  heartbeatMs: number;
  workers: MemberView[];
  /** Times the job restarted from a checkpoint after a worker failed. */
  restarts: number;
}

export class Coordinator {
  private readonly socket: ControlServer;
  /** This round's members: a restart starts a fresh membership, which everyone joins again. */
  private members: Membership;
  private readonly log: ShardfaceLogger['log'];
  private phase: Phase = 'joining';
  private step = 0;
  private stepEnds = new Map<number, Record<string, number>>();
  private stepLoss: number | null = null;
  private reduction: SoftmaxReduction | null = null;
  private targets: TargetReduction | null = null;
  private jobState: JobState;
  /** The job-wide state as the current step found it: a step that any rank skipped leaves it so. */
  private jobStateBefore: JobState = {};
  private finish!: (r: JobResult) => void;
  private readonly finished: Promise<JobResult>;
  private timers: NodeJS.Timeout[] = [];
  private boundAddress = '';
  /** Connections of workers' heartbeat threads (bound to a rank by its session), answered with the coordinator's own heartbeats. */
  private readonly heartbeatLinks = new Map<string, { id: Uint8Array; rank: number }>();
  private readonly transport: Transport;
  private releaseZap: () => void = () => {};
  /** Rejected messages and strangers' messages: rate-limited, never echoing payloads. */
  private readonly rejects: RateLimitedLog;
  private readonly strangers: RateLimitedLog;
  /** A graceful stop under way: what runs once the current step has ended, instead of the next step. */
  private drain: ((lastStep: number) => Promise<string>) | null = null;
  /** Restarts so far; the round now running is number `restarts` (0 = the first). */
  private restarts = 0;
  /** This round's first step and the configuration its workers get. */
  private round: { startStep: number; config: Record<string, unknown> };
  /** The last step every rank completed. */
  private lastCompleted: number;
  /** During a restart until the first step after it completes: for the recovery's log line. */
  private recovering: { rank: number; failedAt: number; checkpointStep: number; stepsLost: number } | null = null;
  /** pid → rank of every member of the rounds before this one: their processes' exits are expected, or replaced. */
  private readonly formerRanks = new Map<number, number>();
  private roundTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: CoordinatorOptions) {
    this.transport = opts.transport ?? PLAIN_TRANSPORT;
    this.socket = controlServer(this.transport);
    this.members = new Membership(opts.workers);
    this.log = opts.logger.log;
    this.rejects = new RateLimitedLog(this.log, 'rejected messages');
    this.strangers = new RateLimitedLog(this.log, 'refused connections or messages from strangers');
    this.finished = new Promise((resolve) => (this.finish = resolve));
    this.jobState = opts.jobState?.initial ?? {};
    this.round = { startStep: opts.spec.startStep ?? 1, config: opts.spec.config };
    this.lastCompleted = this.round.startStep - 1;
    if ((opts.maxRestarts ?? 0) > 0 && !opts.restartPoint) throw new Error('maxRestarts > 0 needs a restartPoint');
  }

  /** The job-wide state (CurricularFace: { curricularT }) as of the last completed update; saved with checkpoints. */
  get lossState(): Record<string, number> {
    return { ...this.jobState };
  }

  /** The job as monitoring sees it (status page, metrics): a copy, so readers cannot change it. */
  snapshot(): JobSnapshot {
    const { job, spec, heartbeatMs } = this.opts;
    return {
      job,
      phase: this.phase,
      step: this.step,
      steps: spec.steps,
      world: this.opts.workers,
      heartbeatMs,
      workers: this.members.members().map(memberView),
      restarts: this.restarts,
    };
  }

  /** The address actually bound (resolves port 0 / wildcard). */
  get address(): string {
    return this.boundAddress;
  }

  async bind(): Promise<string> {
    this.releaseZap = await bindServer(this.socket, this.opts.bind, this.transport, {
      onRefused: (peer, why) => this.strangers.warn({ peer, why }, 'connection refused: CURVE key not authorised'),
      onAccepted: (peer, name) => this.log.debug({ peer, key: name }, 'CURVE client accepted'),
    });
    this.boundAddress = this.socket.lastEndpoint ?? this.opts.bind;
    const curve = this.transport.curve ? { curve: true, authorizedKeys: this.transport.curve.authorized.size } : { curve: false };
    this.log.info(
      { bind: this.boundAddress, workers: this.opts.workers, job: this.opts.job, kind: this.opts.spec.kind, steps: this.opts.spec.steps, maxFrameBytes: this.transport.maxFrameBytes, ...curve },
      'coordinator listening',
    );
    if (!this.transport.curve && !/^tcp:\/\/(127\.|localhost|\[::1\])/.test(this.boundAddress))
      this.log.warn({ bind: this.boundAddress }, 'control plane is not encrypted and reachable beyond this machine: use --curve-keys (see `shardface keys generate`)');
    return this.boundAddress;
  }

  /** Runs the job to the end (or failure). Never throws for a worker's fault. */
  async run(): Promise<JobResult> {
    if (!this.boundAddress) await this.bind();
    this.timers.push(setInterval(() => this.tick(), Math.max(50, Math.min(this.opts.heartbeatMs, 1000))));
    this.timers.push(
      setInterval(() => {
        void this.broadcast('heartbeat', {});
        for (const l of this.heartbeatLinks.values()) void this.sendTo(l.id, 'heartbeat', {}, l.rank);
      }, this.opts.heartbeatMs),
    );
    this.timers.push(
      setTimeout(() => {
        // the first round's deadline (a restart's round has its own, see restart())
        if (this.restarts === 0 && (this.phase === 'joining' || this.phase === 'starting')) {
          const notReady = this.members.ranked().filter((m) => !m.ready);
          // Registered but not ready: usually the ring cannot connect, i.e. a peer's advertised data address is unreachable.
          const missing =
            this.phase === 'joining'
              ? `${this.members.size}/${this.opts.workers} workers registered`
              : `${this.opts.workers - notReady.length}/${this.opts.workers} workers ready; not ready: ${notReady.map((m) => `rank ${m.rank} (data address ${m.dataAddress})`).join(', ')} — can every worker reach these addresses? see --advertise`;
          void this.abort(`workers did not join within ${this.opts.joinTimeoutMs} ms (${missing})`);
        }
      }, this.opts.joinTimeoutMs),
    );
    void this.receiveLoop();
    const result = await this.finished;
    for (const t of this.timers) clearInterval(t);
    if (this.roundTimer) clearTimeout(this.roundTimer);
    this.socket.close();
    this.releaseZap();
    this.rejects.flush();
    this.strangers.flush();
    return result;
  }

  /** Stops every worker and ends the job (SIGINT/SIGTERM, or a fatal problem). */
  async abort(reason: string): Promise<void> {
    if (this.phase === 'done' || this.phase === 'stopping') return;
    this.phase = 'stopping';
    this.log.error({ reason }, 'stopping job');
    await this.broadcast('stop', { reason, ok: false });
    this.end({ ok: false, reason, lastStep: this.step });
  }

  /**
   * A graceful stop (the first SIGTERM/SIGINT): the running step finishes, then `after(step)` runs in place of the
   * next step — messages keep flowing meanwhile, so it can ask for a checkpoint ({@link requestCheckpoint}) and
   * wait for its files — and the job ends with the reason it returns. Before the first step it is an abort; a
   * job already stopping, or a stop already asked for, is left as it is. The last step ends the job as usual.
   */
  stopAfterStep(reason: string, after: (lastStep: number) => Promise<string>): void {
    if (this.phase === 'done' || this.phase === 'stopping' || this.drain) return;
    if (this.phase !== 'running') return void this.abort(reason);
    this.drain = after;
  }

  /** During a graceful stop: every worker writes a checkpoint of its state after the step that just ended. */
  async requestCheckpoint(): Promise<void> {
    await this.broadcast('checkpoint', {});
  }

  /**
   * A launcher saw a local worker process exit: stop the job now instead of
   * waiting for the heartbeat timeout, naming the rank it held. Returns the
   * rank a replacement process must take when the job restarts (maxRestarts),
   * else null (the job stops).
   */
  processExited(pid: number | undefined, how: string): number | null {
    if (this.phase === 'done' || this.phase === 'stopping') return null;
    const m = this.members.members().find((x) => x.pid === pid);
    if (m) {
      m.gone = true;
      return this.workerFailed(m, `worker rank ${m.rank ?? m.requestedRank ?? '(unassigned)'} (host ${m.host}, pid ${m.pid}) exited with ${how}; last completed step ${m.lastStep}`);
    }
    // a process of an earlier round that has not registered again (the one that failed, or one that could not stop cleanly): replace it
    const former = pid === undefined ? undefined : this.formerRanks.get(pid);
    if (former !== undefined && this.phase === 'joining') {
      this.formerRanks.delete(pid!);
      this.log.warn(
        { event: 'replacing', rank: former, pid, how, restart: this.restarts },
        `worker process ${pid} (rank ${former} before the restart) exited with ${how}; starting a replacement for rank ${former}`,
      );
      return former;
    }
    void this.abort(`worker process ${pid} (not yet registered) exited with ${how}; last completed step ${this.lastCompleted}`);
    return null;
  }

  /**
   * A member failed (exited, silent, or said bye with an error). With a
   * restart left, and ranks known, the job restarts; otherwise it stops with
   * `reason`. Returns the rank to replace when it restarts.
   */
  private workerFailed(m: Member, reason: string): number | null {
    const max = this.opts.maxRestarts ?? 0;
    const rank = m.rank ?? m.requestedRank;
    // a failure before the first round's ranks exist is a job that cannot start: no restart loop for that
    const restartable = max > 0 && rank !== null && (this.phase === 'starting' || this.phase === 'running' || (this.phase === 'joining' && this.restarts > 0));
    if (!restartable) {
      void this.abort(reason);
      return null;
    }
    if (this.restarts >= max) {
      void this.abort(`${reason}; no restart left (maxRestarts ${max}, all used)`);
      return null;
    }
    void this.restart(rank, reason);
    return rank;
  }

  /**
   * Stops every member for a restart, starts a fresh membership and waits
   * for the next round's workers; they are welcomed (and authenticated) like
   * the first round's, and the round begins after the restart point's step.
   */
  private async restart(rank: number, reason: string): Promise<void> {
    const failedAt = Date.now();
    this.restarts++;
    const max = this.opts.maxRestarts ?? 0;
    this.log.error(
      { event: 'worker-failed', rank, reason, restart: this.restarts, maxRestarts: max, lastCompletedStep: this.lastCompleted },
      `worker rank ${rank} failed: ${reason}; restart ${this.restarts} of ${max} from the newest checkpoint`,
    );
    this.phase = 'joining';
    const previous = this.members.members();
    for (const x of previous) if (x.rank !== null || x.requestedRank !== null) this.formerRanks.set(x.pid, (x.rank ?? x.requestedRank)!);
    for (const x of previous) if (x.gone && x.rank !== null && x.rank !== rank) this.log.error({ event: 'worker-failed', rank: x.rank }, `worker rank ${x.rank} is gone too`);
    // a member declared lost whose process may still run: let a local launcher end it (then replace it)
    for (const x of previous) if (x.gone) this.opts.onWorkerLost?.(x.pid);
    // nothing of the interrupted step may complete now
    this.reduction = null;
    this.targets = null;
    await this.broadcast('stop', { reason: `restarting: ${reason}`, ok: false, restart: true });
    this.members = new Membership(this.opts.workers);
    this.heartbeatLinks.clear();
    this.stepEnds.clear();
    const point = this.opts.restartPoint!();
    this.jobState = { ...(this.opts.jobState?.initial ?? {}), ...point.lossState };
    this.round = { startStep: point.step + 1, config: point.config };
    const stepsLost = Math.max(0, this.lastCompleted - point.step);
    this.lastCompleted = point.step;
    this.recovering = { rank, failedAt, checkpointStep: point.step, stepsLost };
    this.log.warn(
      { event: 'checkpoint-reloaded', rank, checkpoint: point.dir, checkpointStep: point.step, stepsLost, restart: this.restarts },
      point.dir
        ? `restart ${this.restarts}: continuing from the checkpoint of step ${point.step} (${point.dir}); ${stepsLost} steps to redo; waiting for ${this.opts.workers} workers (rank ${rank}: a replacement)`
        : `restart ${this.restarts}: no checkpoint verifies; starting over from step 1 (${stepsLost} steps lost); waiting for ${this.opts.workers} workers`,
    );
    // the next round must assemble in time like the first: a replacement that never comes stops the job, naming the missing ranks
    if (this.roundTimer) clearTimeout(this.roundTimer);
    const round = this.restarts;
    this.roundTimer = setTimeout(() => {
      if (this.restarts !== round || (this.phase !== 'joining' && this.phase !== 'starting')) return;
      const present = new Set(this.members.members().map((x) => x.rank ?? x.requestedRank));
      const missing = Array.from({ length: this.opts.workers }, (_, r) => r).filter((r) => !present.has(r));
      void this.abort(
        `restart ${round}: workers did not join again within ${this.opts.joinTimeoutMs} ms (${this.members.size}/${this.opts.workers} registered; missing rank(s) ${missing.join(', ') || 'none'})`,
      );
    }, this.opts.joinTimeoutMs);
  }

  private end(r: JobResult): void {
    this.phase = 'done';
    // Give queued stop messages a moment to leave before the socket closes.
    setTimeout(() => this.finish(r), 100);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [id, ...frames] of this.socket) {
        if (this.phase === 'done') break;
        await this.handle(id!, frames);
      }
    } catch (e) {
      if (this.phase !== 'done') await this.abort(`control socket failed: ${(e as Error).message}`);
    }
  }

  private async handle(id: Uint8Array, frames: Uint8Array[]): Promise<void> {
    const key = Buffer.from(id).toString('hex');
    const member = this.members.get(key);
    if (!member) {
      const link = this.heartbeatLinks.get(key);
      return link ? this.fromHeartbeatLink(link, frames) : this.fromStranger(id, key, frames);
    }
    const res = decode(frames, { world: this.opts.workers });
    if (!res.ok) {
      await this.reject(id, member, res.error);
      // the step cannot end without this worker's step-end: stop instead of waiting for ever
      if (member?.rank !== null && member !== undefined && /(^|: )step-end: /.test(res.error.message))
        await this.abort(`worker rank ${member.rank} sent a step-end the coordinator cannot accept: ${res.error.message}`);
      return;
    }
    const msg = res.msg;
    const h = msg.header;
    if (h.job !== this.opts.job && !(h.type === 'hello' && h.job === ''))
      return this.reject(id, member, new ProtocolError('wrong-job', `message for job ${JSON.stringify(h.job)}, this is job ${JSON.stringify(this.opts.job)}`));
    member.lastSeen = Date.now();
    if (h.type !== 'hello' && member.rank !== null && h.rank !== member.rank)
      return this.reject(id, member, new ProtocolError('bad-field', `header.rank ${h.rank} but this worker is rank ${member.rank}`));
    switch (h.type) {
      case 'hello':
        return this.onHello(id, key, msg as MessageOf<'hello'>);
      case 'heartbeat':
        return;
      case 'error':
        this.rejects.warn({ from: member.rank, code: clip((msg as MessageOf<'error'>).header.body.code) }, `worker reported: ${clip((msg as MessageOf<'error'>).header.body.message)}`);
        return;
    }
    if (member.rank === null) return this.reject(id, member, new ProtocolError('unexpected-type', `${h.type} before ranks are assigned`));
    switch (h.type) {
      case 'ready':
        return this.onReady(member, msg as MessageOf<'ready'>);
      case 'softmax-stats':
        return this.onSoftmaxStats(member, msg as MessageOf<'softmax-stats'>);
      case 'target-stats':
        return this.onTargetStats(member, msg as MessageOf<'target-stats'>);
      case 'step-end':
        return this.onStepEnd(member, msg as MessageOf<'step-end'>);
      case 'event': {
        const b = (msg as MessageOf<'event'>).header.body;
        this.opts.onEvent?.(member.rank, b.name, b.fields);
        return;
      }
      case 'bye':
        return this.onBye(member, msg as MessageOf<'bye'>);
      default:
        return this.reject(id, member, new ProtocolError('unexpected-type', `workers do not send ${h.type} to the coordinator`));
    }
  }

  /**
   * A connection that is neither a member nor a bound heartbeat link: it may
   * register (hello with the right token) or bind a heartbeat link (session);
   * anything else is refused, telling it nothing about the job.
   */
  private async fromStranger(id: Uint8Array, key: string, frames: Uint8Array[]): Promise<void> {
    const res = decode(frames);
    if (!res.ok) return this.reject(id, undefined, res.error);
    const msg = res.msg;
    if (msg.header.type === 'hello') return this.onHello(id, key, msg as MessageOf<'hello'>);
    if (msg.header.type === 'heartbeat') return this.onSideHeartbeat(id, key, msg as MessageOf<'heartbeat'>);
    return this.reject(id, undefined, new ProtocolError('unexpected-type', `${msg.header.type} before registration: send hello first`));
  }

  /** Logged (rate-limited) and answered; replies to non-members carry no job id and no text of theirs beyond a clipped reason. */
  private async reject(id: Uint8Array, member: Member | undefined, err: ProtocolError): Promise<void> {
    if (member) this.rejects.warn({ code: err.code, from: { rank: member.rank, host: member.host, pid: member.pid } }, `rejected message: ${clip(err.message)}`);
    else this.rejects.warn({ code: err.code, from: shortId(id) }, 'rejected message from an unregistered connection');
    await this.sendTo(id, 'error', { code: err.code, message: clip(err.message) }, member?.rank ?? -1, [], member !== undefined);
  }

  private async onHello(id: Uint8Array, key: string, msg: MessageOf<'hello'>): Promise<void> {
    const hello = msg.header.body;
    if (!tokenMatches(hello.token, this.opts.token)) {
      return this.reject(id, undefined, new ProtocolError('bad-token', `worker ${clip(hello.host)}:${hello.pid} presented a wrong token`));
    }
    if (msg.header.job !== '' && msg.header.job !== this.opts.job)
      return this.reject(id, undefined, new ProtocolError('wrong-job', `message for job ${JSON.stringify(clip(msg.header.job))}, which this coordinator does not run`));
    if (this.phase !== 'joining') return this.reject(id, undefined, new ProtocolError('unexpected-type', `job already started; ${hello.host}:${hello.pid} cannot join`));
    const r = this.members.join(id, key, msg.header.rank, hello, Date.now());
    if (!r.ok) return this.reject(id, undefined, new ProtocolError(r.code, r.message));
    if (this.recovering && msg.header.rank === this.recovering.rank)
      this.log.info({ event: 'replacement-joined', rank: this.recovering.rank, workerHost: hello.host, workerPid: hello.pid, restart: this.restarts }, `rank ${this.recovering.rank} joined again`);
    this.log.info(
      { workerHost: hello.host, workerPid: hello.pid, dataAddress: hello.dataAddress, requestedRank: msg.header.rank, device: hello.device, registered: this.members.size, of: this.opts.workers },
      'worker registered',
    );
    if (this.members.size === this.opts.workers) await this.welcomeAll();
  }

  private async welcomeAll(): Promise<void> {
    this.phase = 'starting';
    const ranked = this.members.assignRanks();
    const peers = ranked.map((m) => m.dataAddress);
    const hosts = ranked.map((m) => m.host);
    const peerKeys = ranked.map((m) => m.curveKey);
    // Unguessable routing ids for the ring links: an inbox takes messages only from its left neighbour's.
    const ringIds = ranked.map(() => `ring-${randomBytes(16).toString('hex')}`);
    const n = this.opts.workers;
    const { spec } = this.opts;
    for (const m of ranked) {
      const range = classRange(spec.numClasses, this.opts.workers, m.rank!);
      await this.sendTo(
        m.id,
        'welcome',
        {
          rank: m.rank!,
          world: this.opts.workers,
          peers,
          hosts,
          peerKeys,
          session: (m.session = randomBytes(16).toString('hex')),
          ringIds: { send: ringIds[m.rank!]!, accept: ringIds[(m.rank! + n - 1) % n]! },
          classRange: range,
          numClasses: spec.numClasses,
          heartbeatMs: this.opts.heartbeatMs,
          seed: spec.seed,
          config: { ...this.round.config, kind: spec.kind, steps: spec.steps, workerTimeoutMs: this.opts.workerTimeoutMs, restarts: this.restarts },
        },
        m.rank!,
      );
    }
    this.log.info({ ranks: ranked.map((m) => ({ rank: m.rank, host: m.host, pid: m.pid, device: m.device })) }, 'ranks assigned');
  }

  /**
   * Heartbeats from a worker's heartbeat thread arrive on a socket of their own
   * (so a long synchronous step cannot silence them). The first one carries
   * the rank's session secret and binds the connection to the rank; one
   * without it is dropped unanswered, so a stranger cannot keep a dead rank alive.
   */
  private async onSideHeartbeat(id: Uint8Array, key: string, msg: MessageOf<'heartbeat'>): Promise<void> {
    const { rank, job } = msg.header;
    const m = this.members.ranked().find((x) => x.rank === rank);
    const session = msg.header.body.session;
    if (!m || job !== this.opts.job || !m.session || session === undefined || !tokenMatches(session, m.session)) {
      this.strangers.warn({ from: shortId(id), claimedRank: rank }, 'heartbeat dropped: not from the connection that holds the rank');
      return;
    }
    this.heartbeatLinks.set(key, { id, rank });
    m.lastSeen = Date.now();
  }

  /** A bound heartbeat link may send heartbeats for its own rank, nothing else. */
  private async fromHeartbeatLink(link: { id: Uint8Array; rank: number }, frames: Uint8Array[]): Promise<void> {
    const res = decode(frames, { job: this.opts.job, world: this.opts.workers });
    if (!res.ok || res.msg.header.type !== 'heartbeat' || res.msg.header.rank !== link.rank) {
      this.strangers.warn({ from: shortId(link.id), rank: link.rank, code: res.ok ? 'unexpected-type' : res.error.code }, 'dropped a message on a heartbeat link');
      return;
    }
    const m = this.members.ranked().find((x) => x.rank === link.rank);
    if (m) m.lastSeen = Date.now();
  }

  private async onReady(m: Member, msg: MessageOf<'ready'>): Promise<void> {
    m.ready = true;
    const b = msg.header.body;
    this.log.info({ worker: m.rank, backend: b.backend, device: b.device, threads: b.threads, why: b.reason }, 'worker ready');
    if (this.members.ranked().every((x) => x.ready)) {
      this.phase = 'running';
      const first = this.round.startStep;
      this.log.info({ steps: this.opts.spec.steps, ...(first > 1 ? { startStep: first } : {}), ...(this.restarts > 0 ? { restart: this.restarts } : {}) }, 'all workers ready; starting');
      await this.beginStep(first);
    }
  }

  private async beginStep(step: number): Promise<void> {
    if (step > this.opts.spec.steps) {
      this.phase = 'stopping';
      await this.broadcast('stop', { reason: 'job complete', ok: true });
      this.log.info({ steps: this.opts.spec.steps }, 'job complete');
      this.end({ ok: true, reason: 'job complete', lastStep: this.step });
      return;
    }
    this.step = step;
    this.opts.logger.ctx.step = step;
    this.stepEnds.clear();
    this.stepLoss = null;
    this.jobStateBefore = this.jobState;
    this.reduction = new SoftmaxReduction(this.opts.workers);
    this.targets = this.opts.jobState?.input === 'target-cosines' ? new TargetReduction(this.opts.workers) : null;
    const checkpoint = this.opts.checkpointDue?.(step) === true;
    await this.broadcast('step-begin', { kind: this.opts.spec.kind, ...(checkpoint ? { checkpoint } : {}) });
  }

  private async onSoftmaxStats(m: Member, msg: MessageOf<'softmax-stats'>): Promise<void> {
    if (msg.header.step !== this.step || !this.reduction) return this.reject(m.id, m, new ProtocolError('bad-field', `softmax-stats for step ${msg.header.step} during step ${this.step}`));
    const added = this.reduction.add(m.rank!, msg);
    if (!added.ok) {
      await this.reject(m.id, m, new ProtocolError(added.code, added.message));
      if (added.fatal) await this.abort(added.message);
      return;
    }
    if (!this.reduction.complete) return;
    const out = this.reduction.reduce();
    this.stepLoss = out.loss;
    const tensors: OutTensor[] = [{ name: 'logSumExp', data: out.logSumExp }];
    await this.broadcast('softmax-reduced', { loss: out.loss, extras: this.lossState }, tensors);
  }

  /** The target-cosine exchange: all rows' target cosines → the job-wide state's update, before any logit is modulated. */
  private async onTargetStats(m: Member, msg: MessageOf<'target-stats'>): Promise<void> {
    const reducer = this.opts.jobState;
    if (reducer?.input !== 'target-cosines') {
      await this.reject(m.id, m, new ProtocolError('unexpected-type', 'target-stats, but this job keeps no state fed by target cosines (the coordinator was not started with loss curricular)'));
      return this.abort(`worker rank ${m.rank} sent target-stats, but the coordinator was not configured for CurricularFace`);
    }
    if (msg.header.step !== this.step || !this.targets) return this.reject(m.id, m, new ProtocolError('bad-field', `target-stats for step ${msg.header.step} during step ${this.step}`));
    const added = this.targets.add(m.rank!, msg);
    if (!added.ok) {
      await this.reject(m.id, m, new ProtocolError(added.code, added.message));
      if (added.fatal) await this.abort(added.message);
      return;
    }
    if (!this.targets.complete) return;
    let out: { targetCos: Float32Array; mean: number };
    try {
      out = this.targets.reduce();
    } catch (e) {
      return this.abort((e as Error).message);
    }
    this.targets = null;
    this.jobState = reducer.update(this.jobState, { meanTargetCos: out.mean });
    await this.broadcast('target-reduced', { extras: this.lossState }, [{ name: 'targetCos', data: out.targetCos }]);
  }

  private async onStepEnd(m: Member, msg: MessageOf<'step-end'>): Promise<void> {
    if (msg.header.step !== this.step) return this.reject(m.id, m, new ProtocolError('bad-field', `step-end for step ${msg.header.step} during step ${this.step}`));
    m.lastStep = this.step;
    this.stepEnds.set(m.rank!, msg.header.body.metrics);
    if (this.stepEnds.size < this.opts.workers) return;
    const metrics = this.members.ranked().map((x) => this.stepEnds.get(x.rank!)!);
    if (metrics.some((x) => x.skipped === 1)) this.jobState = this.jobStateBefore;
    this.lastCompleted = this.step;
    if (this.recovering) {
      const r = this.recovering;
      this.recovering = null;
      const secondsToResume = (Date.now() - r.failedAt) / 1000;
      this.log.warn(
        { event: 'resumed', rank: r.rank, restart: this.restarts, checkpointStep: r.checkpointStep, stepsLost: r.stepsLost, secondsToResume },
        `restart ${this.restarts}: step ${this.step} done ${secondsToResume.toFixed(1)} s after rank ${r.rank} failed (${r.stepsLost} steps redone)`,
      );
    }
    await this.opts.onStepEnd?.(this.step, metrics, this.stepLoss);
    if (this.phase !== 'running') return;
    // not awaited: the receive loop must go on (the final checkpoint's files arrive through it)
    if (this.drain && this.step < this.opts.spec.steps) return void this.finishDrain(this.drain);
    await this.beginStep(this.step + 1);
  }

  private async finishDrain(after: (lastStep: number) => Promise<string>): Promise<void> {
    let reason: string;
    try {
      reason = await after(this.step);
    } catch (e) {
      return this.abort(`graceful stop failed: ${(e as Error).message}`);
    }
    if (this.phase !== 'running') return; // stopped meanwhile (a second signal, a timeout, a failed worker)
    this.phase = 'stopping';
    this.log.warn({ reason, lastStep: this.step }, 'stopping job');
    await this.broadcast('stop', { reason, ok: false });
    this.end({ ok: false, reason, lastStep: this.step });
  }

  private async onBye(m: Member, msg: MessageOf<'bye'>): Promise<void> {
    m.gone = true;
    const b = msg.header.body;
    if (this.phase === 'done' || this.phase === 'stopping') return;
    this.workerFailed(m, `worker rank ${m.rank ?? m.requestedRank} (host ${m.host}, pid ${m.pid}) left at step ${m.lastStep}: ${b.reason}`);
  }

  /** Liveness check: a worker silent past the timeout stops the job. */
  private tick(): void {
    if (this.phase === 'done' || this.phase === 'stopping') return;
    const now = Date.now();
    for (const m of this.members.silent(now, this.opts.workerTimeoutMs)) {
      m.gone = true;
      const rank = m.rank ?? m.requestedRank;
      const who = rank !== null ? `worker rank ${rank}` : `worker ${m.pid}`;
      this.workerFailed(
        m,
        `${who} (host ${m.host}, pid ${m.pid}) silent for ${((now - m.lastSeen) / 1000).toFixed(1)} s (timeout ${this.opts.workerTimeoutMs / 1000} s); last completed step ${m.lastStep}`,
      );
      return;
    }
  }

  /** `toMember` false: the peer has not registered, and the header carries no job id. */
  private async sendTo<T extends MessageType>(id: Uint8Array, type: T, body: Bodies[T], rank: number, tensors: OutTensor[] = [], toMember = true): Promise<void> {
    try {
      await this.socket.send([id, ...encode(type, { job: toMember ? this.opts.job : '', step: toMember ? this.step : 0, rank }, body, tensors)]);
    } catch (e) {
      this.log.warn({ type, err: (e as Error).message }, 'send failed');
    }
  }

  private async broadcast<T extends MessageType>(type: T, body: Bodies[T], tensors: OutTensor[] = []): Promise<void> {
    for (const m of this.members.members()) if (!m.gone) await this.sendTo(m.id, type, body, m.rank ?? -1, tensors);
  }
}

/** A routing id for logs: short, and never the peer's bytes verbatim beyond 8 of them. */
function shortId(id: Uint8Array): string {
  return Buffer.from(id.subarray(0, 8)).toString('hex');
}
