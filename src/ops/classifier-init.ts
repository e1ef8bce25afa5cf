/**
 * Initial classifier rows, N(0, 0.01²) (docs/methods.md#class-ranges), drawn so that row j's value
 * depends only on (seed, j): any sharding of the same job starts from the same
 * matrix, and "n workers" can be compared with "1 worker" exactly. Rows come in
 * blocks of BLOCK from one stream each, so a shard draws only the blocks it
 * overlaps.
 *
 * The normals come from Marsaglia & Tsang's ziggurat (128 layers) over each
 * block's Rng stream: one 32-bit draw and a compare for ~99% of the values,
 * instead of Box–Muller's log, sqrt, sin and cos per pair. That is ~10× faster
 * (a 1M-row shard at D = 512 took ~30 s with Box–Muller) and still plain
 * JavaScript, so every machine draws the same matrix, native addon or not.
 */
import { deriveSeed } from '../common/random.js';
import type { ClassRange } from './class-range.js';

const BLOCK = 1024;
export const CLASSIFIER_INIT_STD = 0.01;

export function initialShardWeights(range: ClassRange, dim: number, seed: number, std = CLASSIFIER_INIT_STD): Float32Array {
  const out = new Float32Array(range.count * dim);
  const end = range.start + range.count;
  const block = new Float32Array(BLOCK * dim);
  for (let b = Math.floor(range.start / BLOCK); b * BLOCK < end; b++) {
    const lo = Math.max(range.start, b * BLOCK);
    const hi = Math.min(end, (b + 1) * BLOCK);
    // the stream always covers the whole block, so a row's values do not depend on where the shard starts
    fillNormalZiggurat(deriveSeed(seed, 'classifier-init', b), block, std);
    out.set(block.subarray((lo - b * BLOCK) * dim, (hi - b * BLOCK) * dim), (lo - range.start) * dim);
  }
  return out;
}

// ---- ziggurat tables (Marsaglia & Tsang 2000, "The Ziggurat Method for Generating Random Variables") ----
const R = 3.442619855899; // right edge of the base layer
const M1 = 2147483648; // 2^31
const kn = new Int32Array(128); // all < 2^31
const wn = new Float64Array(128);
const fn = new Float64Array(128);
{
  const vn = 9.91256303526217e-3; // area of each layer
  let dn = R;
  let tn = dn;
  const q = vn / Math.exp(-0.5 * dn * dn);
  kn[0] = Math.floor((dn / q) * M1);
  kn[1] = 0;
  wn[0] = q / M1;
  wn[127] = dn / M1;
  fn[0] = 1;
  fn[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(vn / dn + Math.exp(-0.5 * dn * dn)));
    kn[i + 1] = Math.floor((dn / tn) * M1);
    tn = dn;
    fn[i] = Math.exp(-0.5 * dn * dn);
    wn[i] = dn / M1;
  }
}

// The stream: common/random.ts's Rng (mulberry32) inlined over a local int32 state, so the
// hot loop allocates nothing; int32() is exactly `(new Rng(seed).next() * 2^32) | 0`.
let state = 0;

function int32(): number {
  state = (state + 0x6d2b79f5) | 0;
  let t = Math.imul(state ^ (state >>> 15), state | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return t ^ (t >>> 14);
}

/** Uniform in (0, 1]. */
function uniformOpen(): number {
  return 1 - (int32() >>> 0) / 4294967296;
}

/** The rare case: outside the layer's inner rectangle (the wedge, or the tail beyond R). */
function zigguratSlow(hz: number): number {
  for (;;) {
    const iz = hz & 127;
    const x = hz * wn[iz]!;
    if (iz === 0) {
      let t: number, y: number;
      do {
        t = -Math.log(uniformOpen()) / R;
        y = -Math.log(uniformOpen());
      } while (y + y < t * t);
      return hz > 0 ? R + t : -R - t;
    }
    if (fn[iz]! + (1 - uniformOpen()) * (fn[iz - 1]! - fn[iz]!) < Math.exp(-0.5 * x * x)) return x;
    hz = int32();
    if (Math.abs(hz) < kn[hz & 127]!) return hz * wn[hz & 127]!;
  }
}

/** Fills `out` with N(0, std²) draws from the stream of `new Rng(seed)`. */
export function fillNormalZiggurat(seed: number, out: Float32Array, std = 1): Float32Array {
  // int32() inlined over a local copy of the state (the hot loop touches no module variable)
  let st = seed | 0;
  for (let i = 0; i < out.length; i++) {
    st = (st + 0x6d2b79f5) | 0;
    let t = Math.imul(st ^ (st >>> 15), st | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const hz = t ^ (t >>> 14);
    const iz = hz & 127;
    const k = kn[iz]!;
    if (hz < k && hz > -k) {
      out[i] = std * (hz * wn[iz]!);
    } else {
      state = st;
      out[i] = std * zigguratSlow(hz);
      st = state;
    }
  }
  return out;
}
