/**
 * Frees received message buffers while they are still young.
 *
 * zeromq.js hands every received frame over as a Buffer backed by ZeroMQ's own
 * memory and reports its size to V8 as external memory. Those Buffers die
 * within a few milliseconds, but V8 notices only at a garbage collection, and
 * a chunk-streaming process allocates so few JavaScript objects that the young
 * generation almost never fills; instead, every ~64 MB of received data V8
 * starts a full mark-compact because of "external memory pressure". Measured
 * on the 2-core VM (10M-float all-reduce, 2 ranks): the mark-compacts were
 * about half of each process's user CPU (22 ms per op); a scavenge every
 * 16 MB received (≈0.1 ms each, the young generation being nearly empty)
 * brought it to 11 ms and removed most mark-compacts.
 *
 * The scavenge needs V8's `gc` function. Where the process was not started with
 * --expose-gc, it is obtained by setting that flag at run time and reading `gc`
 * from a fresh VM context — the flag adds that function and changes nothing else.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

type GcFunction = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async' }) => void;

let cached: GcFunction | null | undefined;

function gcFunction(): GcFunction | null {
  if (cached !== undefined) return cached;
  cached = null;
  try {
    const existing = (globalThis as { gc?: GcFunction }).gc;
    if (typeof existing === 'function') cached = existing;
    else {
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('typeof gc === "function" ? gc : null') as GcFunction | null;
      if (typeof gc === 'function') cached = gc;
    }
  } catch {
    cached = null;
  }
  return cached;
}

/** Counts received bytes and runs a minor GC every `everyBytes` (0 = never). */
export class Scavenger {
  private pending = 0;
  private readonly gc: GcFunction | null;

  constructor(private readonly everyBytes: number) {
    this.gc = everyBytes > 0 ? gcFunction() : null;
  }

  received(bytes: number): void {
    if (!this.gc) return;
    this.pending += bytes;
    if (this.pending >= this.everyBytes) {
      this.pending = 0;
      this.gc({ type: 'minor' });
    }
  }
}
