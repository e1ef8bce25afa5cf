/**
 * The embedded default dataset (`--data synthetic:IDS`): procedurally drawn,
 * face-like RGB images. Every image is a pure function of
 * (seed, identity, sample index), so any worker can render any image without
 * files, and two runs with the same seed see the same pixels.
 *
 * An identity is a prototype (skin, hair style and colour, eye/brow/nose/mouth
 * geometry, glasses, beard, a few low-frequency skin blobs); a sample is that
 * prototype under a random pose, expression, background, lighting and camera
 * (gain, contrast, white balance, blur, noise). Within-identity variation of
 * colour and background is large enough that mean colour alone does not tell
 * identities apart; the geometry and texture do.
 */
import { Rng, deriveSeed } from '../common/random.js';
import { normalisePixel, type Dataset } from './dataset.js';
import { renderFace, type FacePrototype, type Rgb, type SampleVariation } from './face-render.js';

export type { FacePrototype, SampleVariation } from './face-render.js';

export interface SyntheticOptions {
  /** Number of identities (classes). */
  identities: number;
  imagesPerIdentity: number;
  /** Images are imageSize × imageSize (any size ≥ 8, e.g. 32, 48, 112). */
  imageSize: number;
  seed: number;
  /**
   * Global id of this dataset's first identity: label i renders identity
   * identityOffset + i. Held-out sets use an offset past the training
   * identities so the two are disjoint.
   */
  identityOffset?: number;
  /** Keep rendered images (as bytes) up to this many bytes; default 256 MiB. */
  cacheBytes?: number;
}

const SKIN: Rgb[] = [
  [250, 218, 192],
  [236, 192, 160],
  [212, 162, 126],
  [178, 124, 88],
  [134, 88, 62],
  [88, 58, 42],
];
const HAIR: Rgb[] = [
  [24, 20, 18],
  [58, 40, 28],
  [104, 70, 44],
  [132, 62, 34],
  [196, 160, 106],
  [150, 148, 146],
  [212, 208, 200],
];
const IRIS: Rgb[] = [
  [48, 30, 20],
  [92, 58, 34],
  [112, 92, 48],
  [76, 108, 68],
  [68, 108, 158],
  [108, 118, 128],
];

const uniform = (r: Rng, lo: number, hi: number) => lo + (hi - lo) * r.next();
const pick = <T>(r: Rng, a: readonly T[]): T => a[r.int(a.length)]!;
const clampTo = (x: number, lim: number) => Math.max(-lim, Math.min(lim, x));
const jitter = (r: Rng, c: Rgb, sd: number): Rgb => [c[0] + sd * r.normal(), c[1] + sd * r.normal(), c[2] + sd * r.normal()];
const mixRgb = (a: Rgb, b: Rgb, t: number): Rgb => [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];

/** Draws the fixed appearance of global identity `identity`. */
export function facePrototype(seed: number, identity: number): FacePrototype {
  const r = Rng.derive(seed, 'synthetic-identity', identity);
  const tone = r.next() * (SKIN.length - 1);
  const lo = Math.floor(tone);
  const skin = jitter(r, mixRgb(SKIN[lo]!, SKIN[Math.min(lo + 1, SKIN.length - 1)]!, tone - lo), 6);
  const hair = jitter(r, pick(r, HAIR), 10);
  const faceCy = uniform(r, 0.08, 0.2);
  const faceRx = uniform(r, 0.55, 0.72);
  const faceRy = uniform(r, 0.78, 0.95);
  const eyeY = uniform(r, -0.17, 0.0);
  const eyeRx = uniform(r, 0.09, 0.14);
  const mouthY = uniform(r, 0.45, 0.62);
  const blobs: FacePrototype['blobs'] = [];
  const nBlobs = 3 + r.int(4);
  for (let i = 0; i < nBlobs; i++) {
    const a = (r.next() < 0.5 ? -1 : 1) * uniform(r, 14, 40);
    blobs.push({
      u: faceRx * uniform(r, -0.8, 0.8),
      v: faceCy + faceRy * uniform(r, -0.7, 0.7),
      r: uniform(r, 0.06, 0.2),
      amp: [a + 10 * r.normal(), a + 10 * r.normal(), a + 10 * r.normal()],
    });
  }
  const moles: FacePrototype['moles'] = [];
  const nMoles = r.int(3);
  for (let i = 0; i < nMoles; i++) {
    moles.push({ u: faceRx * uniform(r, -0.7, 0.7), v: faceCy + faceRy * uniform(r, -0.6, 0.6), r: uniform(r, 0.02, 0.045) });
  }
  const bald = r.next() < 0.08;
  const beard = r.next() < 0.22 ? uniform(r, 0.5, 0.95) : 0;
  const glasses = r.next() < 0.18 ? uniform(r, 0.012, 0.03) : 0;
  return {
    skin,
    hair,
    iris: jitter(r, pick(r, IRIS), 8),
    lips: scale(mixRgb(skin, [186, 74, 86], uniform(r, 0.3, 0.7)), uniform(r, 0.8, 1)),
    faceCy,
    faceRx,
    faceRy,
    jaw: uniform(r, 0.05, 0.4),
    eyeY,
    eyeDx: uniform(r, 0.24, 0.36),
    eyeRx,
    eyeRy: eyeRx * uniform(r, 0.38, 0.6),
    eyeTilt: uniform(r, -0.15, 0.2),
    browGap: uniform(r, 0.09, 0.18),
    browThick: uniform(r, 0.025, 0.065),
    browLen: eyeRx * uniform(r, 1.0, 1.6),
    browTilt: uniform(r, -0.25, 0.25),
    browArch: uniform(r, 0, 0.05),
    noseY: eyeY + uniform(r, 0.26, 0.42),
    noseW: uniform(r, 0.07, 0.16),
    noseShade: uniform(r, 0.72, 0.9),
    mouthY,
    mouthW: uniform(r, 0.14, 0.26),
    mouthThick: uniform(r, 0.035, 0.075),
    mouthCurve: uniform(r, -0.05, 0.08),
    bald,
    hairline: uniform(r, -0.78, -0.42),
    hairTilt: uniform(r, -0.2, 0.2),
    hairCurve: uniform(r, -0.25, 0.45),
    hairVolume: uniform(r, 0.03, 0.22),
    hairSide: uniform(r, -0.4, 0.95),
    hairFreq: uniform(r, 10, 28),
    hairPhase: uniform(r, 0, 2 * Math.PI),
    beard,
    beardTop: mouthY - uniform(r, 0.05, 0.2),
    glasses,
    glassesColour: r.next() < 0.6 ? [30, 28, 28] : jitter(r, [120, 90, 60], 40),
    earSize: uniform(r, 0.1, 0.16),
    blobs,
    moles,
  };
}

function scale(c: Rgb, k: number): Rgb {
  return [c[0] * k, c[1] * k, c[2] * k];
}

/** Draws how sample `sample` of global identity `identity` differs from the prototype. */
export function sampleVariation(seed: number, identity: number, sample: number): SampleVariation {
  const r = Rng.derive(seed, 'synthetic-sample', identity, sample);
  const background: Rgb = [uniform(r, 15, 240), uniform(r, 15, 240), uniform(r, 15, 240)];
  return {
    tx: clampTo(0.05 * r.normal(), 0.12),
    ty: clampTo(0.05 * r.normal(), 0.12),
    scale: Math.exp(clampTo(0.06 * r.normal(), 0.15)),
    rotation: clampTo(0.06 * r.normal(), 0.2),
    yaw: clampTo(0.07 * r.normal(), 0.2),
    eyeOpen: r.next() < 0.05 ? 0.25 : uniform(r, 0.7, 1.1),
    gaze: clampTo(0.4 * r.normal(), 1),
    mouthCurve: 0.025 * r.normal(),
    mouthOpen: r.next() < 0.2 ? uniform(r, 0.1, 0.5) : 0,
    browRaise: clampTo(0.015 * r.normal(), 0.04),
    hairJitter: clampTo(0.02 * r.normal(), 0.05),
    background,
    background2: jitter(r, background, 35),
    shirt: [uniform(r, 10, 240), uniform(r, 10, 240), uniform(r, 10, 240)],
    lightAngle: uniform(r, 0, 2 * Math.PI),
    lightStrength: uniform(r, 0, 0.45),
    gain: Math.exp(clampTo(0.18 * r.normal(), 0.45)),
    offset: 10 * r.normal(),
    contrast: Math.exp(clampTo(0.15 * r.normal(), 0.4)),
    cast: [Math.exp(0.07 * r.normal()), Math.exp(0.07 * r.normal()), Math.exp(0.07 * r.normal())],
    blur: 0.026 * r.next() ** 1.5,
    noise: uniform(r, 2, 9),
  };
}

/** Renders one sample as HWC RGB bytes. */
export function renderSyntheticFace(seed: number, identity: number, sample: number, imageSize: number, out?: Uint8Array): Uint8Array {
  const noise = new Rng(deriveSeed(seed, 'synthetic-noise', identity, sample));
  return renderFace(facePrototype(seed, identity), sampleVariation(seed, identity, sample), imageSize, noise, out);
}

/** A synthetic dataset; image i is sample (i mod imagesPerIdentity) of label floor(i / imagesPerIdentity). */
class SyntheticDataset implements Dataset {
  readonly numClasses: number;
  readonly size: number;
  readonly imageSize: number;
  readonly imagesPerIdentity: number;
  readonly identityOffset: number;
  readonly seed: number;
  private readonly prototypes: (FacePrototype | undefined)[];
  private readonly cache: Uint8Array | null;
  private readonly cached: Uint8Array | null;

  constructor(o: SyntheticOptions) {
    for (const k of ['identities', 'imagesPerIdentity', 'imageSize'] as const) {
      if (!Number.isInteger(o[k]) || o[k] < 1) throw new RangeError(`synthetic data: ${k} must be a positive integer, got ${o[k]}`);
    }
    if (o.imageSize < 8) throw new RangeError(`synthetic data: imageSize must be at least 8, got ${o.imageSize}`);
    const offset = o.identityOffset ?? 0;
    if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`synthetic data: identityOffset must be a non-negative integer, got ${offset}`);
    this.numClasses = o.identities;
    this.imagesPerIdentity = o.imagesPerIdentity;
    this.size = o.identities * o.imagesPerIdentity;
    this.imageSize = o.imageSize;
    this.identityOffset = offset;
    this.seed = o.seed;
    this.prototypes = new Array<FacePrototype | undefined>(o.identities);
    const bytes = this.size * o.imageSize * o.imageSize * 3;
    const useCache = bytes <= (o.cacheBytes ?? 256 * 1024 * 1024);
    this.cache = useCache ? new Uint8Array(bytes) : null;
    this.cached = useCache ? new Uint8Array(this.size) : null;
  }

  label(index: number): number {
    this.check(index);
    return Math.floor(index / this.imagesPerIdentity);
  }

  /** Image `index` as HWC RGB bytes (a view into the cache when caching; do not modify). */
  rgb(index: number): Uint8Array {
    this.check(index);
    const n = this.imageSize * this.imageSize * 3;
    const label = Math.floor(index / this.imagesPerIdentity);
    const identity = this.identityOffset + label;
    const sample = index % this.imagesPerIdentity;
    if (this.cache && this.cached) {
      const view = this.cache.subarray(index * n, (index + 1) * n);
      if (!this.cached[index]) {
        this.render(label, identity, sample, view);
        this.cached[index] = 1;
      }
      return view;
    }
    return this.render(label, identity, sample, new Uint8Array(n));
  }

  read(index: number, out: Float32Array, offset: number): void {
    const px = this.rgb(index);
    if (offset < 0 || offset + px.length > out.length) throw new RangeError(`synthetic data: read(${index}) does not fit at offset ${offset}`);
    for (let i = 0; i < px.length; i++) out[offset + i] = normalisePixel(px[i]!);
  }

  private render(label: number, identity: number, sample: number, out: Uint8Array): Uint8Array {
    const proto = (this.prototypes[label] ??= facePrototype(this.seed, identity));
    const noise = new Rng(deriveSeed(this.seed, 'synthetic-noise', identity, sample));
    return renderFace(proto, sampleVariation(this.seed, identity, sample), this.imageSize, noise, out);
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new RangeError(`synthetic data: index ${index} out of range [0, ${this.size})`);
    }
  }
}

export function createSyntheticDataset(o: SyntheticOptions): SyntheticDataset {
  return new SyntheticDataset(o);
}

/**
 * The usual pair of synthetic sets: `identities` training identities and
 * `heldOutIdentities` further ones (disjoint: ids after the training ones)
 * for verification.
 */
export function createSyntheticSplits(o: { identities: number; heldOutIdentities: number; imagesPerIdentity: number; imageSize: number; seed: number }): {
  train: SyntheticDataset;
  heldOut: SyntheticDataset | null;
} {
  const common = { imagesPerIdentity: o.imagesPerIdentity, imageSize: o.imageSize, seed: o.seed };
  const train = createSyntheticDataset({ ...common, identities: o.identities });
  const heldOut = o.heldOutIdentities > 0 ? createSyntheticDataset({ ...common, identities: o.heldOutIdentities, identityOffset: o.identities }) : null;
  return { train, heldOut };
}
