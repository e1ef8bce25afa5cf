/**
 * Ring collectives between workers over the data plane.
 *
 * Every rank r pushes to its right neighbour r+1 and pulls from its left
 * neighbour r−1 (mod n) through its own inbox; a PUSH→PULL pair delivers in
 * order, so rank r sees exactly the sequence of messages its left neighbour sent.
 * All ranks call the collectives in the same order; each call gets the next
 * sequence number `seq`, carried in every message and checked on receipt.
 *
 * The algorithms are the bandwidth-optimal rings: all-reduce is a reduce-scatter
 * followed by an all-gather, each rank sending 2(n−1)/n of the array. Blocks
 * (one per rank, {@link splitCounts}) are cut into chunks of `chunkBytes`, one
 * message each, and pipelined: a chunk is forwarded as soon as it is reduced,
 * while at most `inFlight` chunks run ahead of what this rank has received.
 *
 * Memory: a chunk leaving this rank for the first time is sent as a view of the
 * caller's array (ZeroMQ sends it without copying); a chunk received arrives in a
 * buffer owned by ZeroMQ, is reduced in place there and forwarded from there, so
 * no op copies the whole array. Because ZeroMQ reads a sent view lazily, an op
 * returns only once every view it sent has provably reached the right
 * neighbour (see `fin` below), so the caller may overwrite its arrays at once.
 * Arrays of at most 64 KiB are sent as copies instead and skip the fin.
 *
 * Reduction order (float sums are not associative): block b is summed starting
 * at rank b+1, then b+2, …, ending at its owner b:
 *   ((x[b+1] + x[b+2]) + x[b+3]) + … + x[b]   (indices mod n, float32 after each add),
 * 'mean' divides that float32 sum once by n, on the owner; every other rank
 * copies the owner's bytes, so all ranks hold bit-identical results.
 *
 * Wire format: message type `ring`, body {op, seq, chunk, slot}, one tensor
 * `data` — `chunk` is the message's index within the op on this link (checks
 * order), `slot` the element count of the array the data belongs to (checks that
 * all ranks passed equal lengths). An op that has sent views of the caller's
 * memory whose arrival nothing later in the op proves ends with a `fin` message
 * (op 'fin', no tensor) to the right: "I have received everything of this op";
 * the view sent first to rank r+1 has reached r−1 by then. A rank that fails
 * sends an `error` message to its right so the failure travels round the ring
 * instead of leaving the others to time out. `barrier` (and the check in
 * `connect`) pass counts round the ring: n−1 hops.
 *
 * Who may send: the inbox is a ROUTER and the link a DEALER with a routing id
 * (`ids`): an inbox takes messages only from its left neighbour's id and drops
 * anything else (reported through `onStranger`), so a stranger who reaches the
 * port cannot inject chunks. The coordinator hands out unguessable ids; with
 * CURVE the inbox also admits only authorised keys (protocol/sockets.ts).
 *
 * Bounded waits: `connect` must reach the right neighbour and hear the left
 * one within `connectTimeoutMs`, else it fails naming that neighbour's rank
 * and address; an `AbortSignal` (the worker's stop, SIGTERM) ends it at once.
 * Within ops a receive waits at most `timeoutMs` (−1: no limit, liveness left
 * to the coordinator's heartbeats), and closing the inbox ends it.
 *
 * Tuning (2-core VM, see bench/collectives.ts): 4 MiB chunks, 4 in flight,
 * blocks cut into >= 4 chunks of >= 64 KiB; the sums run in WebAssembly SIMD
 * (simd.ts); a minor GC every 16 MiB received keeps V8 from running full
 * mark-compacts for ZeroMQ's external buffers (scavenge.ts).
 */
import { decode, encode, frameBytes, type Envelope } from '../protocol/codec.js';
import { dtypeOf, type AnyTypedArray } from '../protocol/dtype.js';
import { dataLink, PLAIN_TRANSPORT, type DataInbox, type DataLink, type Transport } from '../protocol/sockets.js';
import { CollectiveError } from './errors.js';
import { Scavenger } from './scavenge.js';
import { kernelsFor, type ReduceOp, type RingArray } from './reduce.js';
import { blockOffsets, chunksOf, mod, splitCounts, type Piece } from './split.js';

export { bindInbox } from './inbox.js';
export { splitCounts } from './split.js';

export interface RingOptions {
  /** Job id; messages of another job are rejected. */
  job: string;
  rank: number;
  world: number;
  /** Data-plane address of every rank (tcp://host:port), index = rank. */
  peers: string[];
  /** This rank's inbox (ROUTER), already bound by the caller to peers[rank]. The ring sets its receiveTimeout and never closes it. */
  inbox: DataInbox;
  /** Pipelining granularity: the most bytes per message (blocks are also cut into at least 4 chunks of >= 64 KiB). Default 4 MiB. Must be equal on all ranks. */
  chunkBytes?: number;
  /** Chunks this rank may send ahead of what it has received. Default 4. May differ between ranks. */
  inFlight?: number;
  /** A left neighbour silent this long fails the op. Default 60 s. */
  timeoutMs?: number;
  /** Run a minor GC after this many bytes received, so received buffers die young (see scavenge.ts); 0 = never. Default 16 MiB. */
  scavengeBytes?: number;
  /** CURVE keys and frame limit of the link (the inbox was made with the same). Default: plain TCP. */
  transport?: Transport;
  /** CURVE public key of every rank's inbox, index = rank (CURVE only). */
  peerKeys?: string[];
  /** Routing ids: this rank's link, and the left neighbour's (the only one the inbox accepts). Default {@link defaultRingIds}. */
  ids?: { send: string; accept: string };
  /** `connect` fails when the right neighbour cannot be reached, or the left one is not heard from, within this. Default `timeoutMs`, else 60 s. */
  connectTimeoutMs?: number;
  /** Aborting ends a pending `connect` (with code 'closed'). */
  signal?: AbortSignal;
  /** Told about every message dropped because it came from another connection than the left neighbour's. */
  onStranger?: (info: { from: string; frames: number; bytes: number }) => void;
}

/** Predictable ids, for rings whose members trust their network (tests, benchmarks); workers get random ones from the coordinator. */
function defaultRingIds(job: string, rank: number, world: number): { send: string; accept: string } {
  return { send: `${job}/ring/${rank}`, accept: `${job}/ring/${mod(rank - 1, world)}` };
}

export const DEFAULT_CHUNK_BYTES = 4 << 20;
/** Smallest chunk a block is cut into for pipelining (a single chunk may be smaller). */
export const MIN_CHUNK_BYTES = 64 << 10;
export const DEFAULT_IN_FLIGHT = 4;
export const DEFAULT_TIMEOUT_MS = 60_000;
export const DEFAULT_SCAVENGE_BYTES = 16 << 20;
/** Ops on arrays up to this size send copies of the caller's memory and skip the fin hop. */
const SMALL_OP_BYTES = 64 << 10;

type OpName = 'connect' | 'allreduce' | 'allgather' | 'reducescatter' | 'broadcast' | 'barrier';

/** What one op moves on this rank's two links. */
interface Plan {
  op: OpName;
  seq: number;
  /** `slot` of every data message: element count of the array each rank passed. */
  length: number;
  dtype: 'float32' | 'int32';
  /** Message j carries this view of the caller's memory, or (null) the next buffer `receive` handed on. */
  sends: (RingArray | null)[];
  /** Message i received: its element count, and the rank whose array it comes from (for errors). */
  receives: { length: number; origin: number }[];
  /** Handles received chunk i; returns it if it is to be forwarded. */
  receive(i: number, data: RingArray): RingArray | null;
  /** True when `sends` holds views whose arrival nothing later in the op proves: end with a `fin`. */
  fin: boolean;
}

export class Ring {
  readonly job: string;
  readonly rank: number;
  readonly world: number;
  private readonly left: number;
  private readonly right: number;
  private readonly peers: string[];
  private readonly inbox: DataInbox | null;
  private readonly link: DataLink | null;
  private readonly chunkElements: number;
  private readonly minChunkElements: number;
  private readonly inFlight: number;
  private readonly timeoutMs: number;
  private readonly env: Envelope;
  private readonly scavenger: Scavenger;
  private readonly accept: string;
  private readonly onStranger: RingOptions['onStranger'];
  /** Rejects when close() is called, ending any pending receive at once. */
  private readonly closing: Promise<never>;
  private rejectClosing!: (e: Error) => void;
  private seq = 0;
  /** Ops run one at a time, in call order. */
  private tail: Promise<unknown> = Promise.resolve();
  /** ZeroMQ allows one send in progress per socket: sends are chained. */
  private sending: Promise<void> = Promise.resolve();
  private sendFailure: Error | null = null;
  private failure: CollectiveError | null = null;
  /** Bytes of every frame this rank sent to its right neighbour / received from its left one, headers included (for metrics). */
  bytesSent = 0;
  bytesReceived = 0;

  private constructor(opts: RingOptions, link: DataLink | null) {
    this.job = opts.job;
    this.rank = opts.rank;
    this.world = opts.world;
    this.left = mod(opts.rank - 1, opts.world);
    this.right = mod(opts.rank + 1, opts.world);
    this.peers = opts.peers;
    this.inbox = opts.world > 1 ? opts.inbox : null;
    this.link = link;
    const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.chunkElements = Math.max(1, Math.floor(chunkBytes / 4));
    this.minChunkElements = MIN_CHUNK_BYTES / 4;
    this.inFlight = opts.inFlight ?? DEFAULT_IN_FLIGHT;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.env = { job: opts.job, step: 0, rank: opts.rank };
    this.scavenger = new Scavenger(opts.world > 1 ? (opts.scavengeBytes ?? DEFAULT_SCAVENGE_BYTES) : 0);
    this.accept = (opts.ids ?? defaultRingIds(opts.job, opts.rank, opts.world)).accept;
    this.onStranger = opts.onStranger;
    this.closing = new Promise<never>((_, reject) => (this.rejectClosing = reject));
    this.closing.catch(() => undefined);
  }

  /**
   * Connects to the right neighbour and checks the whole ring with one round of
   * `connect` messages (so a wrong address or a peer of another job fails here,
   * not in the first step). World 1: no sockets at all.
   */
  static async connect(opts: RingOptions): Promise<Ring> {
    const { rank, world, peers } = opts;
    if (!Number.isInteger(world) || world < 1) throw new CollectiveError('usage', `Ring: world must be an integer >= 1, got ${world}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new CollectiveError('usage', `Ring: rank ${rank} out of range for world ${world}`);
    if (peers.length !== world) throw new CollectiveError('usage', `Ring: ${peers.length} peer addresses for world ${world}`);
    if (opts.chunkBytes !== undefined && !(opts.chunkBytes >= 4)) throw new CollectiveError('usage', `Ring: chunkBytes must be >= 4, got ${opts.chunkBytes}`);
    if (opts.inFlight !== undefined && !(Number.isInteger(opts.inFlight) && opts.inFlight >= 1)) throw new CollectiveError('usage', `Ring: inFlight must be an integer >= 1, got ${opts.inFlight}`);
    if (world === 1) return new Ring(opts, null);
    const transport = opts.transport ?? PLAIN_TRANSPORT;
    const right = mod(rank + 1, world);
    if (transport.curve && !opts.peerKeys?.[right]) throw new CollectiveError('usage', `Ring: CURVE is on but rank ${right}'s inbox key is unknown`);
    const ids = opts.ids ?? defaultRingIds(opts.job, rank, world);
    const link = dataLink(transport, opts.peerKeys?.[right], { routingId: ids.send });
    const ring = new Ring(opts, link);
    const connectTimeoutMs = opts.connectTimeoutMs ?? (ring.timeoutMs > 0 ? ring.timeoutMs : DEFAULT_TIMEOUT_MS);
    const onAbort = () => void ring.close();
    opts.signal?.addEventListener('abort', onAbort);
    try {
      if (opts.signal?.aborted) throw new CollectiveError('closed', `connect on rank ${rank}: stopped before connecting`);
      // Listen before connecting: the socket's event observer starts when first asked for, and misses earlier events.
      const up = ring.linkUp(link, connectTimeoutMs, opts.signal);
      link.connect(peers[right]!);
      await up;
      await ring.run('connect', (seq) => ring.countRound('connect', seq, connectTimeoutMs));
    } catch (e) {
      link.close();
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    return ring;
  }

  /** Resolves once the link to the right neighbour has completed its handshake; fails naming it after `ms`, on a refused key, or on abort. */
  private linkUp(link: DataLink, ms: number, signal: AbortSignal | undefined): Promise<void> {
    const who = `rank ${this.rank}: right neighbour rank ${this.right} at ${this.peers[this.right]}`;
    return new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        if (!link.closed) {
          // a closed socket's observer is gone (ENOTSOCK)
          link.events.off('handshake', ok);
          link.events.off('handshake:error:auth', refused);
        }
        if (e) reject(e);
        else resolve();
      };
      const ok = () => done();
      const refused = () => done(new CollectiveError('transport', `${who} refused this worker's CURVE key`));
      const aborted = () => done(new CollectiveError('closed', `${who}: stopped while connecting`));
      const timer = setTimeout(() => done(new CollectiveError('timeout', `${who} unreachable: no connection within ${ms} ms`)), ms);
      link.events.on('handshake', ok);
      link.events.on('handshake:error:auth', refused);
      signal?.addEventListener('abort', aborted);
      if (signal?.aborted) aborted();
    });
  }

  /** Reduces `a` across all ranks, in place. 'mean' is for float32 only. */
  allReduce(a: RingArray, op: ReduceOp = 'sum'): Promise<void> {
    return this.run('allreduce', async (seq) => {
      const kernels = kernelsFor(checkArray(a, 'allReduce'), checkOp(op, ['sum', 'mean', 'max'], 'allReduce'));
      const n = this.world;
      if (n === 1) return;
      const divisor = op === 'mean' ? n : 1;
      const blocks = this.blocks(a.length);
      // Steps 0..n−2 reduce-scatter, n−1..2n−3 all-gather. At step s rank r sends
      // block r−s−1 and receives block r−s−2 (what its left neighbour sends).
      const steps = 2 * (n - 1);
      const { sends, receives } = this.ringSchedule(a, blocks, steps);
      await this.stream({
        op: 'allreduce',
        seq,
        length: a.length,
        dtype: dtypeOf(a) as 'float32' | 'int32',
        sends,
        receives,
        // The all-gather starts from views of this rank's finished block in `a`,
        // whose arrival nothing later proves: end with a fin.
        fin: true,
        receive: (i, data) => {
          const { step, piece } = receives[i]!;
          const own = a.subarray(piece.offset, piece.offset + piece.length);
          if (step < n - 2) {
            kernels.combine(data, own);
            return data;
          }
          if (step === n - 2) {
            kernels.finishInto(own, data, own, divisor);
            return own;
          }
          own.set(data);
          return step < steps - 1 ? data : null;
        },
      });
    });
  }

  /** Every rank's array (equal lengths), concatenated in rank order, in a new array. */
  allGather<T extends RingArray>(a: T): Promise<T> {
    return this.run('allgather', async (seq) => {
      checkArray(a, 'allGather');
      const n = this.world;
      const L = a.length;
      const out = new (a.constructor as new (length: number) => T)(n * L);
      out.set(a, this.rank * L);
      if (n === 1) return out;
      // At step s rank r sends block r−s and receives block r−s−1.
      const sends: (RingArray | null)[] = [];
      const receives: { length: number; origin: number; piece: Piece; step: number }[] = [];
      for (let s = 0; s < n - 1; s++) {
        for (const piece of this.chunks(0, L)) {
          sends.push(s === 0 ? a.subarray(piece.offset, piece.offset + piece.length) : null);
          const origin = mod(this.rank - s - 1, n);
          receives.push({ length: piece.length, origin, step: s, piece: { offset: origin * L + piece.offset, length: piece.length } });
        }
      }
      await this.stream({
        op: 'allgather',
        seq,
        length: L,
        dtype: dtypeOf(a) as 'float32' | 'int32',
        sends,
        receives,
        fin: true,
        receive: (i, data) => {
          const { piece, step } = receives[i]!;
          out.set(data, piece.offset);
          return step < n - 2 ? data : null;
        },
      });
      return out;
    });
  }

  /**
   * Splits `a` into `world` blocks ({@link splitCounts}) and returns block `rank`
   * reduced over all ranks, in a new array (world 1: a view of `a`). `a` is not modified.
   */
  reduceScatter<T extends RingArray>(a: T, op: 'sum' | 'mean' = 'sum'): Promise<T> {
    return this.run('reducescatter', async (seq) => {
      const kernels = kernelsFor(checkArray(a, 'reduceScatter'), checkOp(op, ['sum', 'mean'], 'reduceScatter'));
      const n = this.world;
      if (n === 1) return a.subarray(0) as T;
      const divisor = op === 'mean' ? n : 1;
      const counts = splitCounts(a.length, n);
      const mine = blockOffsets(counts)[this.rank]!;
      const out = new (a.constructor as new (length: number) => T)(counts[this.rank]!);
      const blocks = this.blocks(a.length);
      const { sends, receives } = this.ringSchedule(a, blocks, n - 1);
      await this.stream({
        op: 'reducescatter',
        seq,
        length: a.length,
        dtype: dtypeOf(a) as 'float32' | 'int32',
        sends,
        receives,
        fin: true,
        receive: (i, data) => {
          const { step, piece } = receives[i]!;
          const own = a.subarray(piece.offset, piece.offset + piece.length);
          if (step < n - 2) {
            kernels.combine(data, own);
            return data;
          }
          kernels.finishInto(out.subarray(piece.offset - mine, piece.offset - mine + piece.length), data, own, divisor);
          return null;
        },
      });
      return out;
    });
  }

  /** Copies `root`'s array into every rank's `a` (equal lengths), in place; a chain root → root+1 → … → root−1. */
  broadcast(a: RingArray, root: number): Promise<void> {
    return this.run('broadcast', async (seq) => {
      checkArray(a, 'broadcast');
      const n = this.world;
      if (!Number.isInteger(root) || root < 0 || root >= n) throw new CollectiveError('usage', `broadcast: root ${root} out of range for world ${n}`);
      if (n === 1) return;
      const position = mod(this.rank - root, n);
      const pieces = this.chunks(0, a.length);
      const sends = position === n - 1 ? [] : pieces.map((p) => (position === 0 ? a.subarray(p.offset, p.offset + p.length) : null));
      const receives = position === 0 ? [] : pieces.map((p) => ({ length: p.length, origin: root }));
      await this.stream({
        op: 'broadcast',
        seq,
        length: a.length,
        dtype: dtypeOf(a) as 'float32' | 'int32',
        sends,
        receives,
        fin: true,
        receive: (i, data) => {
          a.set(data, pieces[i]!.offset);
          return position < n - 1 ? data : null;
        },
      });
    });
  }

  /** Resolves once every rank has called barrier(): n−1 hops round the ring. */
  barrier(): Promise<void> {
    return this.run('barrier', (seq) => (this.world === 1 ? Promise.resolve() : this.countRound('barrier', seq)));
  }

  /** Closes the link to the right neighbour (not the inbox, which belongs to the caller). Later ops fail with code 'closed'. */
  async close(): Promise<void> {
    if (this.failure?.code !== 'closed') this.failure = new CollectiveError('closed', `ring of rank ${this.rank} is closed`);
    this.rejectClosing(this.failure);
    this.link?.close();
  }

  // ---------------------------------------------------------------- machinery

  /**
   * The ring's step schedule: at step s this rank sends block r−s−1 (only step
   * 0's data is known up front; later sends are forwarded as they arrive) and
   * receives block r−s−2 from its left neighbour.
   */
  private ringSchedule(a: RingArray, blocks: Piece[][], steps: number): { sends: (RingArray | null)[]; receives: { length: number; origin: number; step: number; piece: Piece }[] } {
    const n = this.world;
    const sends: (RingArray | null)[] = [];
    const receives: { length: number; origin: number; step: number; piece: Piece }[] = [];
    for (let s = 0; s < steps; s++) {
      for (const piece of blocks[mod(this.rank - s - 1, n)]!) sends.push(s === 0 ? a.subarray(piece.offset, piece.offset + piece.length) : null);
      for (const piece of blocks[mod(this.rank - s - 2, n)]!) receives.push({ length: piece.length, origin: this.left, step: s, piece });
    }
    return { sends, receives };
  }

  /** Runs ops one at a time in call order; the first failure breaks the ring. */
  private run<T>(op: OpName, body: (seq: number) => Promise<T>): Promise<T> {
    const seq = op === 'connect' ? 0 : ++this.seq;
    const result = this.tail.then(async () => {
      if (this.failure) {
        if (this.failure.code === 'closed') throw new CollectiveError('closed', `${op} #${seq} on rank ${this.rank}: the ring is closed`);
        throw new CollectiveError('broken', `${op} #${seq} on rank ${this.rank}: the ring is broken by an earlier failure (${this.failure.message})`);
      }
      try {
        return await body(seq);
      } catch (e) {
        const err = e instanceof CollectiveError ? e : new CollectiveError('transport', `${op} #${seq} on rank ${this.rank}: ${(e as Error).message}`);
        if (err.code === 'usage') throw err; // bad arguments here: nothing was sent, the ring is intact
        if (!this.failure) {
          this.failure = err;
          this.abortRight(err);
        }
        throw err;
      }
    });
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Blocks of the ring ops, each cut into chunks. */
  private blocks(length: number): Piece[][] {
    const counts = splitCounts(length, this.world);
    const offsets = blockOffsets(counts);
    return counts.map((c, b) => this.chunks(offsets[b]!, c));
  }

  private chunks(offset: number, length: number): Piece[] {
    return chunksOf(offset, length, this.chunkElements, this.minChunkElements);
  }

  /** Moves one op's messages: receive, hand to the plan, forward, keep at most `inFlight` ahead. */
  private async stream(plan: Plan): Promise<void> {
    const { op, seq, receives } = plan;
    // A small op sends copies instead of views (cheap), so it needs no fin.
    // Decided from the array length, which is the same on every rank.
    const small = plan.length * 4 <= SMALL_OP_BYTES;
    const sends = small ? plan.sends.map((v) => v && v.slice()) : plan.sends;
    const fin = plan.fin && !small;
    const forward: (RingArray | undefined)[] = [];
    let forwardHead = 0;
    let sent = 0;
    let received = 0;
    const pump = (): void => {
      while (sent < sends.length && (receives.length === 0 || sent < received + this.inFlight)) {
        let data = sends[sent];
        if (data === null) {
          if (forwardHead === forward.length) return;
          data = forward[forwardHead]!;
          forward[forwardHead++] = undefined;
        }
        this.post(encode('ring', this.env, { op, seq, chunk: sent, slot: plan.length }, [{ name: 'data', data }]));
        sent++;
      }
    };
    pump();
    while (received < receives.length) {
      const expected = receives[received]!;
      const data = await this.receiveData(plan, received, expected.length, expected.origin);
      const onward = plan.receive(received, data);
      this.scavenger.received(data.byteLength);
      if (onward) forward.push(onward);
      received++;
      pump();
    }
    if (sent !== sends.length) throw new Error(`internal: ${op} #${seq} sent ${sent} of ${sends.length} messages`);
    if (fin) {
      this.post(encode('ring', this.env, { op: 'fin', seq, chunk: sent, slot: 0 }));
      await this.receiveControl(op, 'fin', seq);
    }
    await this.flushed();
  }

  /**
   * One round of counts: rank r sends 1; whoever receives k < n−1 sends k+1.
   * Receiving n−1 means the n−1 ranks to the left (that is, all) have arrived.
   */
  private async countRound(op: 'connect' | 'barrier', seq: number, timeoutMs = this.timeoutMs): Promise<void> {
    const n = this.world;
    this.post(encode('ring', this.env, { op, seq, chunk: 0, slot: 1 }));
    for (let k = 1; k < n; k++) {
      const msg = await this.receiveControl(op, op, seq, timeoutMs);
      if (msg.slot !== k) throw this.protocolError(op, seq, `expected count ${k} from rank ${this.left}, got ${msg.slot}`);
      if (k < n - 1) this.post(encode('ring', this.env, { op, seq, chunk: k, slot: k + 1 }));
    }
    await this.flushed();
  }

  private post(frames: Uint8Array[]): void {
    const link = this.link!;
    this.bytesSent += frameBytes(frames);
    this.sending = this.sending
      .then(() => link.send(frames))
      .catch((e: Error) => {
        this.sendFailure ??= e;
      });
  }

  private async flushed(): Promise<void> {
    await this.sending;
    if (this.sendFailure) throw new CollectiveError('transport', `rank ${this.rank}: sending to rank ${this.right} (${this.peers[this.right]}) failed: ${this.sendFailure.message}`);
  }

  /** Tells the right neighbour that this ring is broken, so the failure travels instead of timing out. */
  private abortRight(err: CollectiveError): void {
    if (!this.link || err.code === 'closed') return;
    try {
      this.post(encode('error', this.env, { code: `collective-${err.code}`, message: err.message }));
    } catch {
      // best effort: the socket may already be closed
    }
  }

  private protocolError(op: string, seq: number, what: string): CollectiveError {
    return new CollectiveError('protocol', `${op} #${seq} on rank ${this.rank}: ${what}`);
  }

  /**
   * The next message from the left neighbour's connection, within `timeoutMs`
   * (−1: no limit). Messages from any other connection are dropped and reported.
   */
  private async receiveFromLeft(op: string, seq: number, timeoutMs: number): Promise<Uint8Array[]> {
    const inbox = this.inbox!;
    const deadline = timeoutMs >= 0 ? Date.now() + timeoutMs : Infinity;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 && deadline !== Infinity) break;
      let id: Uint8Array | undefined;
      let frames: Uint8Array[];
      try {
        inbox.receiveTimeout = deadline === Infinity ? -1 : Math.max(1, Math.ceil(left));
        [id, ...frames] = await Promise.race([inbox.receive(), this.closing]);
      } catch (e) {
        if (inbox.closed || this.failure?.code === 'closed') throw new CollectiveError('closed', `${op} #${seq} on rank ${this.rank}: the ring was closed while waiting for rank ${this.left}`);
        if ((e as { code?: string }).code === 'EAGAIN') break;
        throw new CollectiveError('transport', `${op} #${seq} on rank ${this.rank}: receive failed: ${(e as Error).message}`);
      }
      if (id !== undefined && Buffer.from(id).toString() === this.accept) {
        this.bytesReceived += frameBytes(frames);
        return frames;
      }
      this.onStranger?.({ from: id ? Buffer.from(id.subarray(0, 8)).toString('hex') : '', frames: frames.length, bytes: frames.reduce((a, f) => a + f.byteLength, 0) });
    }
    throw new CollectiveError('timeout', `${op} #${seq} on rank ${this.rank}: nothing from left neighbour rank ${this.left} (${this.peers[this.left]}) for ${timeoutMs} ms`);
  }

  /** The next message from the left neighbour, decoded and checked to be a `ring` message of this op. */
  private async receiveRing(op: string, seq: number, timeoutMs = this.timeoutMs): Promise<{ body: { op: string; seq: number; chunk: number; slot: number }; tensors: Record<string, AnyTypedArray> }> {
    const frames = await this.receiveFromLeft(op, seq, timeoutMs);
    const res = decode(frames, { job: this.job, world: this.world });
    if (!res.ok) {
      const from = res.partial?.rank !== undefined ? `rank ${res.partial.rank}` : 'an unknown sender';
      throw this.protocolError(op, seq, `bad message from ${from}: ${res.error.message}`);
    }
    const { header, tensors } = res.msg;
    if (header.rank !== this.left) throw this.protocolError(op, seq, `message from rank ${header.rank}, but only the left neighbour rank ${this.left} sends to this inbox`);
    if (header.type === 'error') throw new CollectiveError('aborted', `${op} #${seq} on rank ${this.rank}: rank ${this.left} aborted: ${header.body.message}`);
    if (header.type !== 'ring') throw this.protocolError(op, seq, `unexpected '${header.type}' message from rank ${this.left}`);
    const body = header.body;
    if (body.seq !== seq) throw this.protocolError(op, seq, `rank ${this.left} sent ${body.op} #${body.seq} where ${op} #${seq} was due (collectives called in a different order?)`);
    return { body, tensors };
  }

  private async receiveControl(op: string, expectOp: string, seq: number, timeoutMs = this.timeoutMs): Promise<{ slot: number }> {
    const { body } = await this.receiveRing(op, seq, timeoutMs);
    if (body.op !== expectOp) throw this.protocolError(op, seq, `rank ${this.left} sent '${body.op}' where '${expectOp}' was due (collectives called in a different order?)`);
    return body;
  }

  private async receiveData(plan: Plan, index: number, length: number, origin: number): Promise<RingArray> {
    const { op, seq } = plan;
    const { body, tensors } = await this.receiveRing(op, seq);
    if (body.op !== op) throw this.protocolError(op, seq, `rank ${this.left} sent '${body.op}' where '${op}' was due (collectives called in a different order?)`);
    if (body.slot !== plan.length)
      throw new CollectiveError('mismatch', `${op} #${seq}: rank ${origin} passed ${body.slot} elements but rank ${this.rank} passed ${plan.length}; all ranks must pass arrays of equal length`);
    if (body.chunk !== index) throw this.protocolError(op, seq, `chunk ${body.chunk} from rank ${this.left} where chunk ${index} was due`);
    const data = tensors['data'];
    if (!data) throw this.protocolError(op, seq, `chunk ${index} from rank ${this.left} has no tensor 'data'`);
    if (dtypeOf(data) !== plan.dtype) throw this.protocolError(op, seq, `chunk ${index} from rank ${this.left} is ${dtypeOf(data)}, this rank's array is ${plan.dtype}`);
    if (data.length !== length) throw this.protocolError(op, seq, `chunk ${index} from rank ${this.left} has ${data.length} elements, ${length} expected`);
    return data as RingArray;
  }
}

function checkArray<T>(a: T, op: string): T & RingArray {
  if (!(a instanceof Float32Array) && !(a instanceof Int32Array)) throw new CollectiveError('usage', `${op}: expected a Float32Array or Int32Array, got ${Object.prototype.toString.call(a)}`);
  return a as T & RingArray;
}

function checkOp<O extends string>(op: O, allowed: string[], name: string): O {
  if (!allowed.includes(op)) throw new CollectiveError('usage', `${name}: op must be one of ${allowed.join('|')}, got ${JSON.stringify(op)}`);
  return op;
}
