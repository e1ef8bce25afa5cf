/**
 * How a collective cuts an array: into one block per rank (the ring's unit of
 * ownership) and each block into chunks (the unit of pipelining, one message each).
 */

/** Lengths of `world` contiguous blocks covering `length` elements; the remainder goes to the lowest ranks. */
export function splitCounts(length: number, world: number): number[] {
  if (!Number.isInteger(length) || length < 0) throw new RangeError(`splitCounts: length must be an integer >= 0, got ${length}`);
  if (!Number.isInteger(world) || world < 1) throw new RangeError(`splitCounts: world must be an integer >= 1, got ${world}`);
  const base = Math.floor(length / world);
  const extra = length % world;
  return Array.from({ length: world }, (_, r) => base + (r < extra ? 1 : 0));
}

/** Start offsets of the blocks of {@link splitCounts}. */
export function blockOffsets(counts: number[]): number[] {
  const offsets: number[] = [];
  let at = 0;
  for (const c of counts) {
    offsets.push(at);
    at += c;
  }
  return offsets;
}

/** A run of elements: `length` elements from `offset`. */
export interface Piece {
  offset: number;
  length: number;
}

/**
 * Cuts [offset, offset + length) into chunks: at most `maxElements` each, but a
 * block is cut into up to {@link PIPELINE_CHUNKS} chunks (none under
 * `minElements`) so that even a mid-sized block pipelines across ring steps.
 * Always at least one chunk, possibly empty, so that every block of every op is
 * announced by a message and a peer with a different length is caught at once.
 * Sender and receiver derive the same cut from the same length and options.
 */
export function chunksOf(offset: number, length: number, maxElements: number, minElements = 0): Piece[] {
  if (length === 0) return [{ offset, length: 0 }];
  const size = Math.min(maxElements, Math.max(Math.min(minElements, maxElements), Math.ceil(length / PIPELINE_CHUNKS)));
  const pieces: Piece[] = [];
  for (let at = 0; at < length; at += size) pieces.push({ offset: offset + at, length: Math.min(size, length - at) });
  return pieces;
}

/** A block is cut into at least this many chunks when they stay above the minimum size. */
const PIPELINE_CHUNKS = 4;

/** Non-negative remainder: the rank `k` places to the right of `r` on a ring of `world`. */
export function mod(x: number, world: number): number {
  return ((x % world) + world) % world;
}
