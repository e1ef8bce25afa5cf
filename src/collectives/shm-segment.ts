/**
 * A shared-memory segment that the workers of one host map together: a header
 * of counters and one slot per local rank (the transfer buffers the same-host
 * collectives read and write in place, shm-collectives.ts).
 *
 * Layout (little-endian int32 words; slots start at HEADER_BYTES, each
 * `slotBytes` long, page-aligned):
 *   word 0 magic, 1 layout version, 2 local ranks L, 3 state (1 = ready),
 *   4 slot pages, 5 creator pid, 6 the local rank that aborted + 1 (0: none);
 *   per local rank l, a 64-byte line from word 16·(l+1):
 *     +0 pid, +1 stage counter, +2 element count of its current op, +3 closed.
 *
 * Names are `/shardface-<job>-<32 hex random>`: local rank 0 creates the segment
 * (O_EXCL, mode 0600, pages reserved up front) and the name reaches its peers
 * only over the ring, so a stranger on the host can neither guess nor pre-create
 * it. Once every peer has mapped it the name is unlinked, so nothing is left in
 * /dev/shm even when a process is SIGKILLed later; a segment left by a run that
 * died before that point is recognised by its dead creator and removed by the
 * next run on the host ({@link removeStaleSegments}), never reused.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, statfsSync } from 'node:fs';
import { loadAddon, type NativeAddon } from '../ops/native/addon.js';

export const HEADER_BYTES = 4096;
const MAGIC = 0x3153_4653; // 'SFS1'
const LAYOUT_VERSION = 1;
const PAGE = 4096;
const W_MAGIC = 0;
const W_VERSION = 1;
const W_LOCAL = 2;
const W_STATE = 3;
const W_PAGES = 4;
const W_CREATOR = 5;
const W_ABORTED = 6;
/** The most local ranks a header has room for. */
export const MAX_LOCAL_RANKS = HEADER_BYTES / 64 - 1;

export const SHM_DIR = '/dev/shm';
const PREFIX = 'shardface-';

export class ShmUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShmUnavailable';
  }
}

/** The addon's shared-memory functions, or why there are none. */
export function shmAddon(): NativeAddon {
  let addon: NativeAddon;
  try {
    addon = loadAddon();
  } catch (e) {
    throw new ShmUnavailable(`the native addon is not available (${(e as Error).message})`);
  }
  if (typeof addon.shmCreate !== 'function') throw new ShmUnavailable('the native addon was built without shared-memory support (rebuild: npm run build:native)');
  return addon;
}

function safeJob(job: string): string {
  return job.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40);
}

export function segmentName(job: string, nonce: string): string {
  return `/${PREFIX}${safeJob(job)}-${nonce}`;
}

/** 16 random bytes as hex: the part of a segment name nobody else can guess. */
export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

/** Bytes a segment for `local` ranks with slots of `slotBytes` takes. */
export function segmentBytes(local: number, slotBytes: number): number {
  return HEADER_BYTES + local * roundUp(slotBytes);
}

function roundUp(bytes: number): number {
  return Math.max(PAGE, Math.ceil(bytes / PAGE) * PAGE);
}

export class ShmSegment {
  readonly words: Int32Array;
  readonly slotBytes: number;
  private constructor(
    readonly name: string,
    readonly buffer: ArrayBuffer,
    readonly local: number,
    readonly localRank: number,
    private readonly addon: NativeAddon,
  ) {
    this.words = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.slotBytes = this.words[W_PAGES]! * PAGE;
  }

  /**
   * Creates the segment for `local` ranks (as local rank 0). Fails with
   * {@link ShmUnavailable} (the reason in words) when /dev/shm lacks the space
   * or shared memory cannot be created.
   */
  static create(job: string, nonce: string, local: number, slotBytes: number): ShmSegment {
    const addon = shmAddon();
    if (local < 1 || local > MAX_LOCAL_RANKS) throw new ShmUnavailable(`${local} local ranks; a segment holds at most ${MAX_LOCAL_RANKS}`);
    const bytes = segmentBytes(local, slotBytes);
    let free: number;
    try {
      const fs = statfsSync(SHM_DIR);
      free = fs.bavail * fs.bsize;
    } catch (e) {
      throw new ShmUnavailable(`${SHM_DIR} is not available (${(e as Error).message})`);
    }
    if (free < bytes) throw new ShmUnavailable(`${SHM_DIR} has ${mib(free)} MiB free, the segment needs ${mib(bytes)} MiB (${local} slots of ${mib(roundUp(slotBytes))} MiB)`);
    const name = segmentName(job, nonce);
    let buffer: ArrayBuffer;
    try {
      buffer = addon.shmCreate(name, bytes);
    } catch (e) {
      throw new ShmUnavailable(`cannot create ${SHM_DIR}${name}: ${(e as Error).message}`);
    }
    const w = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    w[W_MAGIC] = MAGIC;
    w[W_VERSION] = LAYOUT_VERSION;
    w[W_LOCAL] = local;
    w[W_PAGES] = roundUp(slotBytes) / PAGE;
    w[W_CREATOR] = process.pid;
    w[W_ABORTED] = 0;
    const seg = new ShmSegment(name, buffer, local, 0, addon);
    seg.join();
    addon.shmStore(w, W_STATE, 1);
    return seg;
  }

  /** Maps the segment `name` created by `creatorPid` as local rank `localRank`; checks it is that run's, intact and ready. */
  static open(name: string, creatorPid: number, local: number, localRank: number): ShmSegment {
    const addon = shmAddon();
    let buffer: ArrayBuffer;
    try {
      buffer = addon.shmOpen(name);
    } catch (e) {
      throw new ShmUnavailable(`cannot open ${SHM_DIR}${name}: ${(e as Error).message}`);
    }
    const w = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    const problem =
      w[W_MAGIC] !== MAGIC || w[W_VERSION] !== LAYOUT_VERSION
        ? 'not a shardface segment of this version'
        : w[W_CREATOR] !== creatorPid
          ? `created by pid ${w[W_CREATOR]}, not by local rank 0 (pid ${creatorPid})`
          : w[W_LOCAL] !== local
            ? `made for ${w[W_LOCAL]} local ranks, this host has ${local}`
            : w[W_STATE] !== 1
              ? 'not initialised'
              : buffer.byteLength < segmentBytes(local, w[W_PAGES]! * PAGE)
                ? 'truncated'
                : null;
    if (problem) throw new ShmUnavailable(`${SHM_DIR}${name} is unusable: ${problem}`);
    const seg = new ShmSegment(name, buffer, local, localRank, addon);
    seg.join();
    return seg;
  }

  private join(): void {
    const base = line(this.localRank);
    this.words[base + 2] = 0;
    this.words[base + 3] = 0;
    this.words[base] = process.pid;
    this.addon.shmStore(this.words, base + 1, 0);
  }

  /** Removes the name from /dev/shm (the mappings stay); idempotent. */
  unlink(): void {
    this.addon.shmUnlink(this.name);
  }

  /** Slot `l` as float32 / int32 elements (views of shared memory). */
  slotF32(l: number, length = this.slotBytes / 4): Float32Array {
    return new Float32Array(this.buffer, HEADER_BYTES + l * this.slotBytes, length);
  }
  slotI32(l: number, length = this.slotBytes / 4): Int32Array {
    return new Int32Array(this.buffer, HEADER_BYTES + l * this.slotBytes, length);
  }
  /** Byte offset of slot `l` within the segment. */
  slotOffset(l: number): number {
    return HEADER_BYTES + l * this.slotBytes;
  }

  pid(l: number): number {
    return Atomics.load(this.words, line(l));
  }
  stage(l: number): number {
    return Atomics.load(this.words, line(l) + 1);
  }
  /** Publishes this rank's stage (after its writes) and wakes whoever waits on it. */
  publishStage(stage: number): void {
    this.addon.shmStore(this.words, line(this.localRank) + 1, stage);
  }
  /** Waits up to `ms` for local rank l's stage to reach `stage`; returns its stage. */
  waitStage(l: number, stage: number, ms: number): number {
    return this.addon.shmWait(this.words, line(l) + 1, stage, ms);
  }
  setLength(n: number): void {
    Atomics.store(this.words, line(this.localRank) + 2, n);
  }
  length(l: number): number {
    return Atomics.load(this.words, line(l) + 2);
  }
  closed(l: number): boolean {
    return Atomics.load(this.words, line(l) + 3) !== 0;
  }
  markClosed(): void {
    Atomics.store(this.words, line(this.localRank) + 3, 1);
    this.wakeAll();
  }
  /** The local rank that aborted (its failure travels to its peers), or -1. */
  aborted(): number {
    return Atomics.load(this.words, W_ABORTED) - 1;
  }
  markAborted(): void {
    Atomics.compareExchange(this.words, W_ABORTED, 0, this.localRank + 1);
    this.wakeAll();
  }
  /** Wakes every waiter on this rank's counter without moving it, so they look at the flags. */
  private wakeAll(): void {
    const at = line(this.localRank) + 1;
    this.addon.shmStore(this.words, at, Atomics.load(this.words, at));
  }
  get addonReduce(): NativeAddon['shmReduce'] {
    return this.addon.shmReduce.bind(this.addon);
  }
  get addonCopy(): NativeAddon['shmCopy'] {
    return this.addon.shmCopy.bind(this.addon);
  }
}

function line(l: number): number {
  return 16 * (l + 1);
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** True when process `pid` exists (EPERM: it exists, but is someone else's). */
export function pidAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes this user's shardface segments in /dev/shm whose creator and every
 * joined rank are dead: the remains of a run killed between creating a segment
 * and unlinking it. Returns the names removed. A live run's segment is left alone.
 */
export function removeStaleSegments(): { name: string; creator: number }[] {
  let addon: NativeAddon;
  let entries: string[];
  try {
    addon = shmAddon();
    entries = readdirSync(SHM_DIR).filter((f) => f.startsWith(PREFIX));
  } catch {
    return [];
  }
  const removed: { name: string; creator: number }[] = [];
  for (const entry of entries) {
    const name = `/${entry}`;
    let w: Int32Array;
    try {
      w = new Int32Array(addon.shmOpen(name), 0, HEADER_BYTES / 4);
    } catch {
      continue; // another user's, or gone meanwhile
    }
    const local = w[W_MAGIC] === MAGIC ? Math.min(w[W_LOCAL]!, MAX_LOCAL_RANKS) : 0;
    const pids = [w[W_CREATOR]!, ...Array.from({ length: local }, (_, l) => w[line(l)]!)].filter((p) => p > 0);
    if (pids.some(pidAlive)) continue;
    if (addon.shmUnlink(name)) removed.push({ name, creator: w[W_CREATOR] ?? 0 });
  }
  return removed;
}
