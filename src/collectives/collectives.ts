/**
 * The collectives a training step uses for bulk data (backbone gradients), with
 * the transport left open: the ZeroMQ ring (ring.ts) or, for workers that share
 * a host, shared memory (shm-collectives.ts). Both give every rank bit-identical
 * results; see docs/architecture.md ("Data plane") for the summation orders.
 */
import type { Ring } from './ring.js';
import type { ReduceOp, RingArray } from './reduce.js';

export type CollectiveTransport = 'shm' | 'tcp';

export interface Collectives {
  readonly transport: CollectiveTransport;
  /** Reduces `a` across all ranks, in place. */
  allReduce(a: RingArray, op?: ReduceOp): Promise<void>;
  /** Every rank's array (equal lengths), concatenated in rank order, in a new array. */
  allGather<T extends RingArray>(a: T): Promise<T>;
  /** Block `rank` of `a` ({@link splitCounts}) reduced over all ranks, in a new array. */
  reduceScatter<T extends RingArray>(a: T, op?: 'sum' | 'mean'): Promise<T>;
  /**
   * A float32 buffer of `length` elements to fill and pass to the next
   * `allReduce` without a copy into the transport (the shared-memory slot
   * itself), or null when the transport has none of that size. It stays valid
   * until the next op on these collectives.
   */
  transferBuffer(length: number): Promise<Float32Array | null>;
  close(): Promise<void>;
}

/** The ring as {@link Collectives}: the TCP path. */
export function ringCollectives(ring: Ring): Collectives {
  return {
    transport: 'tcp',
    allReduce: (a, op) => ring.allReduce(a, op),
    allGather: (a) => ring.allGather(a),
    reduceScatter: (a, op) => ring.reduceScatter(a, op),
    transferBuffer: () => Promise.resolve(null),
    close: () => Promise.resolve(),
  };
}
