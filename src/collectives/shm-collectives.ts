/**
 * Collectives for the workers of one host through a shared-memory segment
 * (shm-segment.ts), hierarchical when the job spans hosts.
 *
 * All-reduce: the array is cut into L slices (splitCounts(n, L), the ring's
 * blocks), local rank l owning slice l; an array that fits a slot goes in one
 * piece, a larger one in pieces of a chunk of every slice, one slot's worth each:
 *   1. every local rank copies the slices its peers own (not its own) into its
 *      slot, at the array's own offsets when the array fits (a caller that
 *      filled {@link ShmCollectives.transferBuffer}, the slot itself, copies nothing);
 *   2. local rank l sums slice l: its own array's slice l and the peers' slots
 *      read in place, into its slot (for the peers) and, in the same pass, into
 *      its array;
 *   3. with H > 1 hosts, rank l all-reduces that slice of its slot with the rank l
 *      of every other host over `cross`, the ZeroMQ ring among equal local ranks,
 *      and copies it into its array;
 *   4. every rank copies slice p out of slot p, for every peer p.
 * Per rank that reads and writes 4(L−1)/L + 1 + 2/L array-sizes of memory (L = 2:
 * 4; copying the whole array into the slot and all of it out again moved 5 + 1/L),
 * 2.5 from the transfer buffer; the large copies and the sum into the slot use
 * non-temporal stores (shm.cc), which skip reading each destination line before
 * overwriting it: the collectives are bound by memory bandwidth.
 * All-gather: each writes its array into its slot, each copies all slots out
 * (then, across hosts, a ring all-gather of the host's block). Reduce-scatter
 * (one host): each writes the blocks its peers own into its slot, rank l sums
 * block l of its own array and every peer's slot.
 *
 * Summation order: slice l is summed starting at slot l+1, then l+2, …, ending
 * at l, rounding after every add: the order the TCP ring uses for block l, so
 * on one host the result is bit for bit the TCP ring's, whatever the size.
 * Every rank copies the owner's bytes, so all ranks agree bit for bit.
 *
 * Synchronisation: each rank publishes a stage counter in the header; a step
 * waits for every peer's counter (futex, bounded slices so the event loop
 * stays alive). Before a rank overwrites its slot it waits until every peer has
 * finished reading the previous op (the "done" stage). A peer whose process is
 * gone fails the op at once naming its rank; one whose counter has not moved for
 * `timeoutMs` fails it too. A rank that fails flags the segment, so its local
 * peers fail at once instead of timing out.
 */
import { CollectiveError } from './errors.js';
import type { Collectives } from './collectives.js';
import type { ReduceOp, RingArray } from './reduce.js';
import type { Ring } from './ring.js';
import { pidAlive, type ShmSegment } from './shm-segment.js';
import { blockOffsets, mod, splitCounts } from './split.js';

export interface ShmCollectivesOptions {
  segment: ShmSegment;
  rank: number;
  world: number;
  /** Ranks on this host (L): ranks hostIndex·L … hostIndex·L + L − 1. */
  local: number;
  localRank: number;
  hosts: number;
  /** Ring among the ranks with this local rank on every host (H > 1), else null. */
  cross: Ring | null;
  /** The job's ring, for ops the hierarchy does not cover (reduce-scatter over several hosts). */
  ring: Ring;
  /** A peer whose stage counter is stale this long fails the op; −1: never (liveness left to its pid). */
  timeoutMs: number;
  /** Bytes of one all-reduce piece (all local ranks' parts together); default: the whole array, when it fits a slot. */
  pieceBytes?: number;
  /** Called by close() (closes the cross-host ring and its inbox). */
  onClose?: () => Promise<void>;
}

/**
 * Copies and sums of at least this many bytes stream (non-temporal stores, shm.cc): the
 * data is read next by another core or not at all soon, and streaming skips reading
 * every destination line before overwriting it.
 */
const STREAM_MIN_BYTES = 64 << 10;

/** Longest a single futex wait blocks the event loop. */
const SLICE_MS = 20;

export class ShmCollectives implements Collectives {
  readonly transport = 'shm' as const;
  private readonly seg: ShmSegment;
  private readonly o: ShmCollectivesOptions;
  private stageNo = 0;
  /** Stage every peer must reach before this rank may write its slot again. */
  private doneStage = 0;
  private seq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private failure: CollectiveError | null = null;
  private closedHere = false;

  constructor(opts: ShmCollectivesOptions) {
    this.o = opts;
    this.seg = opts.segment;
  }

  /** Whether a copy of this many 4-byte elements streams (non-temporal stores, shm.cc). */
  private streams(elements: number): boolean {
    return elements * 4 >= STREAM_MIN_BYTES;
  }

  /**
   * Elements of one piece of an all-reduce (over all local ranks). By default an array
   * that fits a slot goes in one piece: its copies stream past the caches anyway, so
   * smaller pieces only add two rounds of waits each (measured: one piece of 2 × 10M
   * floats took 0.8 of the time of 4 MiB pieces, 4 ranks on 2 cores 0.9).
   */
  private get pieceElements(): number {
    return Math.max(1, Math.floor((this.o.pieceBytes ?? Infinity) / 4));
  }

  /** Elements of one slot. */
  get slotElements(): number {
    return this.seg.slotBytes / 4;
  }

  transferBuffer(length: number): Promise<Float32Array | null> {
    return this.run('buffer', async () => {
      if (!(Number.isInteger(length) && length >= 0) || length > this.slotElements) return null;
      await this.slotFree('buffer');
      return this.seg.slotF32(this.o.localRank, length);
    });
  }

  allReduce(a: RingArray, op: ReduceOp = 'sum'): Promise<void> {
    return this.run('allreduce', async (what) => {
      const code = checkOp(a, op, ['sum', 'mean', 'max'], 'allReduce');
      if (a.buffer === this.seg.buffer && !this.isOwnSlot(a)) {
        // A view of the segment other than this rank's transfer buffer would alias the slots: go through a copy.
        const copy = a.slice();
        await this.reduceAll(what, copy, code, op);
        a.set(copy);
      } else await this.reduceAll(what, a, code, op);
    });
  }

  private async reduceAll(what: string, a: RingArray, code: 0 | 1, op: ReduceOp): Promise<void> {
    const { world, hosts, localRank: me, local, cross } = this.o;
    const n = a.length;
    const cap = this.slotElements;
    // Slices of the whole array, as the ring's blocks: the summation order of an element depends on its slice only.
    const counts = splitCounts(n, local);
    const offsets = blockOffsets(counts);
    // Arrays that fit a slot sit at their own offsets in it, so pieces never share slot memory and need no wait
    // between them; larger ones go through the slot piece by piece, each piece once every peer has read the last.
    const inPlace = n <= cap;
    const inSlot = this.isOwnSlot(a);
    const chunk = Math.max(1, Math.min(counts[0]!, inPlace ? Math.ceil(this.pieceElements / local) : Math.floor(cap / local)));
    const pieces = Math.max(1, Math.ceil(counts[0]! / chunk));
    const divisor = op === 'mean' && hosts === 1 ? world : 1;
    const at = (p: number, k: number) => offsets[p]! + k * chunk;
    const len = (p: number, k: number) => Math.max(0, Math.min(chunk, counts[p]! - k * chunk));
    const pos = (p: number, k: number) => (inPlace ? at(p, k) : p * chunk);
    const slots = Array.from({ length: local }, (_, p) => this.slot(a, p, inPlace ? n : chunk * local));
    const mine = slots[me]!;
    const copy = this.seg.addonCopy;
    const stream = (elements: number) => this.streams(elements);
    await this.slotFree(what);
    for (let k = 0; k < pieces; k++) {
      if (!inPlace && k > 0) await this.slotFree(what);
      // 1. Only the slices the peers sum go through the slot; this rank's own slice is read from `a` in place.
      if (!inSlot) for (let p = 0; p < local; p++) if (p !== me) copy(mine.subarray(pos(p, k), pos(p, k) + len(p, k)), a.subarray(at(p, k), at(p, k) + len(p, k)), stream(len(p, k)));
      await this.stage(what, n);
      // 2. Sum slice `me` in the ring's order, into the slot (for the peers) and, on one host, into `a` in the same pass.
      const from = pos(me, k);
      const m = len(me, k);
      const own = a.subarray(at(me, k), at(me, k) + m);
      const inputs = Array.from({ length: local }, (_, j) => {
        const q = mod(me + 1 + j, local);
        return q === me ? own : slots[q]!.subarray(from, from + m);
      });
      const sum = mine.subarray(from, from + m);
      this.seg.addonReduce(sum, inputs, code, divisor, inSlot || cross ? null : own, !inSlot && stream(m));
      if (cross) {
        await cross.allReduce(sum, op === 'mean' ? 'sum' : op);
        if (op === 'mean') for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! / world;
      }
      await this.stage(what, n);
      // 3. Gather the peers' sums.
      for (let p = 0; p < local; p++) {
        if (p === me) {
          if (cross && !inSlot) copy(own, sum, false);
          continue;
        }
        copy(a.subarray(at(p, k), at(p, k) + len(p, k)), slots[p]!.subarray(pos(p, k), pos(p, k) + len(p, k)), stream(len(p, k)));
      }
      this.finish();
    }
  }

  allGather<T extends RingArray>(a: T): Promise<T> {
    return this.run('allgather', async (what) => {
      checkArray(a, 'allGather');
      const { local, localRank: me, world } = this.o;
      const len = a.length;
      if (len > this.slotElements) return this.o.ring.allGather(a);
      await this.slotFree(what);
      this.seg.addonCopy(this.slot(a, me, len), a, this.streams(len));
      await this.stage(what, len);
      // Plain copies into the new array: its pages are zeroed (so cached) as they fault in, and streaming past them measured slower.
      const block = new (a.constructor as new (length: number) => T)(local * len);
      for (let p = 0; p < local; p++) block.set(p === me ? a : this.slot(a, p, len), p * len);
      this.finish();
      if (!this.o.cross) return block;
      const out = await this.o.cross.allGather(block);
      if (out.length !== world * len) throw new CollectiveError('protocol', `${what}: the cross-host gather returned ${out.length} elements, ${world * len} expected`);
      return out;
    });
  }

  reduceScatter<T extends RingArray>(a: T, op: 'sum' | 'mean' = 'sum'): Promise<T> {
    return this.run('reducescatter', async (what) => {
      const code = checkOp(a, op, ['sum', 'mean'], 'reduceScatter');
      const { local, localRank: me, world } = this.o;
      if (this.o.cross || a.length > this.slotElements) return this.o.ring.reduceScatter(a, op);
      const len = a.length;
      const counts = splitCounts(len, world);
      const offsets = blockOffsets(counts);
      await this.slotFree(what);
      // Only the blocks the peers sum go through the slot; this rank's own block is read from `a` in place.
      const mine = this.slot(a, me, len);
      for (let p = 0; p < local; p++) if (p !== me) this.seg.addonCopy(mine.subarray(offsets[p], offsets[p]! + counts[p]!), a.subarray(offsets[p], offsets[p]! + counts[p]!), this.streams(counts[p]!));
      await this.stage(what, len);
      const from = offsets[me]!;
      const to = from + counts[me]!;
      const out = new (a.constructor as new (length: number) => T)(counts[me]!);
      const inputs = Array.from({ length: local }, (_, k) => {
        const q = mod(me + 1 + k, local);
        return (q === me ? a : this.slot(a, q, len)).subarray(from, to);
      });
      this.seg.addonReduce(out, inputs, code, op === 'mean' ? world : 1);
      this.finish();
      return out;
    });
  }

  async close(): Promise<void> {
    if (this.closedHere) return;
    this.closedHere = true;
    this.failure ??= new CollectiveError('closed', `shared-memory collectives of rank ${this.o.rank} are closed`);
    try {
      this.seg.markClosed();
    } catch {
      // the mapping is gone already
    }
    await this.o.onClose?.().catch(() => undefined);
    await this.tail.catch(() => undefined);
  }

  // ---------------------------------------------------------------- machinery

  private isOwnSlot(a: RingArray): boolean {
    return a instanceof Float32Array && a.buffer === this.seg.buffer && a.byteOffset === this.seg.slotOffset(this.o.localRank) && a.length <= this.slotElements;
  }

  /** Slot p's first `len` elements, typed like `a`. */
  private slot<T extends RingArray>(a: T, p: number, len: number): T {
    return (a instanceof Float32Array ? this.seg.slotF32(p, len) : this.seg.slotI32(p, len)) as T;
  }

  /** Publishes the next stage (with this op's element count) and waits for every local peer to reach it. */
  private async stage(what: string, len: number): Promise<void> {
    this.seg.setLength(len);
    const stage = ++this.stageNo;
    this.seg.publishStage(stage);
    for (let p = 0; p < this.o.local; p++) {
      if (p === this.o.localRank) continue;
      await this.waitFor(p, stage, what);
      const theirs = this.seg.length(p);
      if (theirs !== len)
        throw new CollectiveError('mismatch', `${what}: rank ${this.rankOf(p)} passed ${theirs} elements but rank ${this.o.rank} passed ${len}; all ranks must pass arrays of equal length`);
    }
  }

  /** This rank is done reading the peers' slots for this op. */
  private finish(): void {
    const stage = ++this.stageNo;
    this.seg.publishStage(stage);
    this.doneStage = stage;
  }

  /** Waits until every peer has finished reading the last op, so this rank's slot may be overwritten. */
  private async slotFree(what: string): Promise<void> {
    if (this.doneStage === 0) return;
    for (let p = 0; p < this.o.local; p++) if (p !== this.o.localRank) await this.waitFor(p, this.doneStage, what);
  }

  private rankOf(localRank: number): number {
    return this.o.rank - this.o.localRank + localRank;
  }

  private async waitFor(p: number, stage: number, what: string): Promise<void> {
    const seg = this.seg;
    let seen = seg.stage(p);
    let since = Date.now();
    for (;;) {
      const v = seg.waitStage(p, stage, SLICE_MS);
      if (v >= stage) return;
      if (this.closedHere) throw new CollectiveError('closed', `${what} on rank ${this.o.rank}: closed while waiting for rank ${this.rankOf(p)}`);
      const aborted = seg.aborted();
      if (aborted >= 0 && aborted !== this.o.localRank) throw new CollectiveError('aborted', `${what} on rank ${this.o.rank}: rank ${this.rankOf(aborted)} (same host) aborted`);
      if (seg.closed(p)) throw new CollectiveError('aborted', `${what} on rank ${this.o.rank}: rank ${this.rankOf(p)} (same host) closed its collectives mid-op`);
      const pid = seg.pid(p);
      if (!pidAlive(pid)) throw new CollectiveError('aborted', `${what} on rank ${this.o.rank}: rank ${this.rankOf(p)} (pid ${pid}, same host) died`);
      const now = Date.now();
      if (v !== seen) {
        seen = v;
        since = now;
      } else if (this.o.timeoutMs >= 0 && now - since > this.o.timeoutMs) {
        throw new CollectiveError('timeout', `${what} on rank ${this.o.rank}: rank ${this.rankOf(p)} (same host) made no progress for ${this.o.timeoutMs} ms`);
      }
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  /** Runs ops one at a time in call order; the first failure breaks these collectives (and tells the local peers). */
  private run<T>(op: string, body: (what: string) => Promise<T>): Promise<T> {
    const seq = ++this.seq;
    const what = `${op} #${seq} (shm)`;
    const result = this.tail.then(async () => {
      if (this.failure) {
        if (this.failure.code === 'closed') throw new CollectiveError('closed', `${what} on rank ${this.o.rank}: the collectives are closed`);
        throw new CollectiveError('broken', `${what} on rank ${this.o.rank}: broken by an earlier failure (${this.failure.message})`);
      }
      try {
        return await body(what);
      } catch (e) {
        const err = e instanceof CollectiveError ? e : new CollectiveError('transport', `${what} on rank ${this.o.rank}: ${(e as Error).message}`);
        if (err.code === 'usage') throw err;
        this.failure ??= err;
        if (err.code !== 'closed') this.seg.markAborted();
        throw err;
      }
    });
    this.tail = result.catch(() => undefined);
    return result;
  }
}

function checkArray(a: unknown, op: string): void {
  if (!(a instanceof Float32Array) && !(a instanceof Int32Array)) throw new CollectiveError('usage', `${op}: expected a Float32Array or Int32Array, got ${Object.prototype.toString.call(a)}`);
}

/** Validates array and op; returns the native op code (0 sum or mean, 1 max). */
function checkOp(a: RingArray, op: string, allowed: string[], name: string): 0 | 1 {
  checkArray(a, name);
  if (!allowed.includes(op)) throw new CollectiveError('usage', `${name}: op must be one of ${allowed.join('|')}, got ${JSON.stringify(op)}`);
  if (op === 'mean' && !(a instanceof Float32Array)) throw new CollectiveError('usage', "'mean' is defined for float32 arrays only (an int32 mean would round)");
  return op === 'max' ? 1 : 0;
}
