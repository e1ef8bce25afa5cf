/**
 * Deterministic, seedable random numbers. Every random draw in shardface
 * (sampling, shuffling, initialisation, synthetic data) derives from a job seed
 * plus named coordinates (step, rank, purpose), so any draw can be reproduced
 * in isolation without replaying a stream.
 */

/** 32-bit mix (murmur3 finaliser). */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Combines a seed with any number of integer or string coordinates into a 32-bit seed. */
export function deriveSeed(seed: number, ...coords: (number | string)[]): number {
  let h = mix32((seed >>> 0) ^ 0x9e3779b9);
  for (const c of coords) {
    if (typeof c === 'string') {
      for (let i = 0; i < c.length; i++) h = mix32(h ^ Math.imul(c.charCodeAt(i), 0x27d4eb2d));
      h = mix32(h ^ c.length);
    } else {
      // split into two 32-bit halves so coordinates above 2^32 still differ
      h = mix32(h ^ (c >>> 0));
      h = mix32(h ^ Math.floor(c / 4294967296));
    }
  }
  return h;
}

/** A small, fast PRNG (mulberry32) with uniform, normal and integer draws. */
export class Rng {
  private state: number;
  private spare: number | null = null;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  static derive(seed: number, ...coords: (number | string)[]): Rng {
    return new Rng(deriveSeed(seed, ...coords));
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** In-place Fisher–Yates shuffle. */
  shuffle<T>(a: T[] | Int32Array | Uint32Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
  }

  /** Fills `out` with N(mean, std²) draws. */
  fillNormal(out: Float32Array, mean = 0, std = 1): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
    return out;
  }
}
