/**
 * Initial classifier rows, N(0, 0.01²) (SPEC §2.1), drawn so that row j's value
 * depends only on (seed, j): any sharding of the same job starts from the same
 * matrix, and "n workers" can be compared with "1 worker" exactly. Rows come in
 * blocks of BLOCK from one stream each, so a shard draws only the blocks it
 * overlaps.
 */
import { Rng } from '../common/random.js';
import type { ClassRange } from './class-range.js';

const BLOCK = 1024;
export const CLASSIFIER_INIT_STD = 0.01;

export function initialShardWeights(range: ClassRange, dim: number, seed: number, std = CLASSIFIER_INIT_STD): Float32Array {
  const out = new Float32Array(range.count * dim);
  const end = range.start + range.count;
  const block = new Float32Array(BLOCK * dim);
  for (let b = Math.floor(range.start / BLOCK); b * BLOCK < end; b++) {
    Rng.derive(seed, 'classifier-init', b).fillNormal(block, 0, std);
    const lo = Math.max(range.start, b * BLOCK);
    const hi = Math.min(end, (b + 1) * BLOCK);
    out.set(block.subarray((lo - b * BLOCK) * dim, (hi - b * BLOCK) * dim), (lo - range.start) * dim);
  }
  return out;
}
