/**
 * Rasterises one synthetic face: an identity's prototype (what stays the same
 * across that person's photos) seen through one sample's variation (pose,
 * expression, background, lighting, camera). Pure arithmetic, no randomness of
 * its own except the sensor noise, which comes from the caller's Rng.
 *
 * Geometry lives in "canonical" face coordinates: u to the right, v down, the
 * image spanning [−1, 1] in both when the pose is neutral. The layout follows
 * aligned 112×112 crops: eyes near v ≈ −0.1, mouth near v ≈ 0.55.
 */
import type { Rng } from '../common/random.js';

export type Rgb = readonly [number, number, number];

export interface FacePrototype {
  skin: Rgb;
  hair: Rgb;
  iris: Rgb;
  lips: Rgb;
  /** Face oval: centre v, half-width, half-height, jaw taper (0 = ellipse). */
  faceCy: number;
  faceRx: number;
  faceRy: number;
  jaw: number;
  eyeY: number;
  /** Half the distance between the eye centres. */
  eyeDx: number;
  eyeRx: number;
  eyeRy: number;
  /** Radians; positive lifts the outer corners. */
  eyeTilt: number;
  browGap: number;
  browThick: number;
  browLen: number;
  browTilt: number;
  browArch: number;
  noseY: number;
  noseW: number;
  /** Multiplier (< 1) of the shadow under the nose tip. */
  noseShade: number;
  mouthY: number;
  mouthW: number;
  mouthThick: number;
  /** Positive lifts the mouth corners (smile). */
  mouthCurve: number;
  bald: boolean;
  /** Hairline v at u = 0, its slope in u and its curvature in u². */
  hairline: number;
  hairTilt: number;
  hairCurve: number;
  /** How far the hair stands out of the face oval. */
  hairVolume: number;
  /** v where the side/back hair ends (long hair: large). */
  hairSide: number;
  hairFreq: number;
  hairPhase: number;
  /** 0 = clean-shaven, else beard opacity; beardTop = v where it starts. */
  beard: number;
  beardTop: number;
  /** 0 = no glasses, else frame half-thickness. */
  glasses: number;
  glassesColour: Rgb;
  earSize: number;
  /** Low-frequency skin texture (shadows, blush, birthmarks): additive Gaussian blobs. */
  blobs: { u: number; v: number; r: number; amp: Rgb }[];
  /** Small dark spots. */
  moles: { u: number; v: number; r: number }[];
}

export interface SampleVariation {
  /** Similarity transform canonical → image: translation, scale, rotation (radians). */
  tx: number;
  ty: number;
  scale: number;
  rotation: number;
  /** Shifts inner features sideways relative to the face outline (a cheap head turn). */
  yaw: number;
  /** Expression. */
  eyeOpen: number;
  gaze: number;
  mouthCurve: number;
  mouthOpen: number;
  browRaise: number;
  hairJitter: number;
  /** Scene. */
  background: Rgb;
  background2: Rgb;
  shirt: Rgb;
  /** Lighting across the image: direction (radians) and strength. */
  lightAngle: number;
  lightStrength: number;
  /** Camera: global gain, additive offset, contrast about mid-grey, per-channel white balance. */
  gain: number;
  offset: number;
  contrast: number;
  cast: Rgb;
  /** Gaussian blur σ as a fraction of the image width; sensor noise σ in 0..255 units. */
  blur: number;
  noise: number;
}

const clamp01 = (x: number) => (x < 0 ? 0 : x > 1 ? 1 : x);

/** Signed distance (approximate) to an axis-aligned ellipse: negative inside. */
function ellipseSd(du: number, dv: number, rx: number, ry: number): number {
  return (Math.sqrt((du / rx) ** 2 + (dv / ry) ** 2) - 1) * Math.min(rx, ry);
}

/** Composites `c` over `acc` with opacity `a` (in place). */
function over(acc: number[], c: Rgb, a: number): void {
  if (a <= 0) return;
  acc[0] += (c[0] - acc[0]) * a;
  acc[1] += (c[1] - acc[1]) * a;
  acc[2] += (c[2] - acc[2]) * a;
}

function scaleRgb(c: Rgb, k: number): Rgb {
  return [c[0] * k, c[1] * k, c[2] * k];
}

/**
 * Renders the face into `out` (size·size·3 bytes, HWC RGB), drawing the
 * sensor noise from `noiseRng`.
 */
export function renderFace(p: FacePrototype, s: SampleVariation, size: number, noiseRng: Rng, out: Uint8Array = new Uint8Array(size * size * 3)): Uint8Array {
  const img = new Float32Array(size * size * 3);
  const cosR = Math.cos(s.rotation);
  const sinR = Math.sin(s.rotation);
  // soft-edge width: about one output pixel, in canonical units
  const aa = (2 / size / s.scale) * 0.8;
  const inside = (sd: number) => clamp01(0.5 - sd / aa);
  const lightX = Math.cos(s.lightAngle);
  const lightY = Math.sin(s.lightAngle);
  const hairBack = scaleRgb(p.hair, 0.8);
  const neck = scaleRgb(p.skin, 0.78);
  const ear = scaleRgb(p.skin, 0.9);
  const brow = scaleRgb(p.hair, 0.75);
  const nostril = scaleRgb(p.skin, 0.4);
  const mole = scaleRgb(p.skin, 0.45);
  const lidLine = scaleRgb(p.skin, 0.35);
  const mouthLine: Rgb = [p.lips[0] * 0.35, p.lips[1] * 0.25, p.lips[2] * 0.25];
  const sclera: Rgb = [232, 230, 224];
  const pupil: Rgb = [15, 12, 12];
  const capCy = p.faceCy - 0.06;
  const capRx = p.faceRx + p.hairVolume;
  const capRy = p.faceRy * 0.95 + p.hairVolume;
  const hairline = p.hairline + s.hairJitter;
  const eyeRy = p.eyeRy * s.eyeOpen;
  const irisR = Math.min(p.eyeRy * 0.95, p.eyeRx * 0.6);
  const browCos = Math.cos(p.browTilt);
  const browSin = Math.sin(p.browTilt);
  const eyeCos = Math.cos(p.eyeTilt);
  const eyeSin = Math.sin(p.eyeTilt);
  // beyond this distance from the eye line there are no eyes, brows or glasses
  const eyeBand = p.browGap + p.browThick + p.eyeRy + 0.2;
  const eyeReach = p.eyeDx + p.eyeRx + p.browLen + 0.15;
  const acc = [0, 0, 0];
  const skinAt: number[] = [0, 0, 0];

  for (let y = 0; y < size; y++) {
    const py = ((y + 0.5) / size) * 2 - 1;
    for (let x = 0; x < size; x++) {
      const px = ((x + 0.5) / size) * 2 - 1;
      const dx = px - s.tx;
      const dy = py - s.ty;
      const u = (cosR * dx + sinR * dy) / s.scale; // face outline coordinates
      const v = (-sinR * dx + cosR * dy) / s.scale;
      const uf = u - s.yaw * 0.18; // inner features turn further than the outline

      // background: vertical gradient between two colours
      const g = clamp01((py + 1) / 2);
      acc[0] = s.background[0] + (s.background2[0] - s.background[0]) * g;
      acc[1] = s.background[1] + (s.background2[1] - s.background[1]) * g;
      acc[2] = s.background[2] + (s.background2[2] - s.background[2]) * g;

      // shoulders, neck, hair behind the head, ears
      over(acc, s.shirt, inside(ellipseSd(u, v - 1.8, 1.3, 0.85)));
      over(acc, neck, inside(Math.abs(u) - p.faceRx * 0.55) * inside(p.faceCy - v));
      if (!p.bald) {
        const hairA = inside(ellipseSd(u, v - capCy, capRx, capRy)) * inside(v - p.hairSide);
        over(acc, hairBack, hairA);
      }
      const earV = v - (p.eyeY + 0.12);
      const earA = Math.max(inside(ellipseSd(u - p.faceRx * 0.97, earV, p.earSize * 0.55, p.earSize)), inside(ellipseSd(u + p.faceRx * 0.97, earV, p.earSize * 0.55, p.earSize)));
      over(acc, ear, earA);

      // face: an oval whose lower half tapers towards the chin
      const below = Math.max(0, (v - p.faceCy) / p.faceRy);
      const rx = p.faceRx * (1 - p.jaw * below * below);
      const faceA = inside(ellipseSd(u, v - p.faceCy, rx, p.faceRy));
      if (faceA > 0) {
        // skin with radial shading and identity-specific texture blobs
        const rr = (u / p.faceRx) ** 2 + ((v - p.faceCy) / p.faceRy) ** 2;
        const k = 1 - 0.18 * rr;
        skinAt[0] = p.skin[0] * k;
        skinAt[1] = p.skin[1] * k;
        skinAt[2] = p.skin[2] * k;
        for (const b of p.blobs) {
          const d2 = (uf - b.u) ** 2 + (v - b.v) ** 2;
          if (d2 > 12 * b.r * b.r) continue; // exp(−6) ≈ 0.0025
          const w = Math.exp(-d2 / (2 * b.r * b.r));
          skinAt[0] += b.amp[0] * w;
          skinAt[1] += b.amp[1] * w;
          skinAt[2] += b.amp[2] * w;
        }
        for (const m of p.moles) {
          const a = inside(Math.hypot(uf - m.u, v - m.v) - m.r);
          if (a > 0) over(skinAt, mole, a * 0.9);
        }
        if (p.beard > 0) {
          over(skinAt, p.hair, p.beard * clamp01((v - p.beardTop) / 0.06) * inside(Math.abs(uf) - rx * 0.98));
        }
        over(acc, skinAt as unknown as Rgb, faceA);
      }

      // hair in front: the cap above the hairline
      if (!p.bald) {
        const hl = hairline + p.hairTilt * uf + p.hairCurve * uf * uf;
        const a = inside(ellipseSd(u, v - capCy, capRx, capRy)) * inside(v - hl);
        if (a > 0) {
          const t = 1 + 0.12 * Math.sin(uf * p.hairFreq + v * 3 + p.hairPhase);
          over(acc, scaleRgb(p.hair, t), a);
        }
      }

      const nearEyes = Math.abs(v - p.eyeY) < eyeBand && Math.abs(uf) < eyeReach;
      for (let side = -1; nearEyes && side <= 1; side += 2) {
        // eyebrow: a thick arc above the eye
        {
          const cu = uf - side * (p.eyeDx + 0.02);
          const cv = v - (p.eyeY - p.browGap - s.browRaise);
          const lu = browCos * cu - side * browSin * cv;
          const lv = side * browSin * cu + browCos * cv;
          const q = lu / p.browLen;
          const centre = -p.browArch * (1 - q * q);
          const sd = Math.max(Math.abs(lv - centre) - p.browThick / 2, Math.abs(lu) - p.browLen);
          over(acc, brow, inside(sd) * 0.9);
        }
        // eye: sclera, iris, pupil, upper lid
        const cu = uf - side * p.eyeDx;
        const cv = v - p.eyeY;
        const lu = eyeCos * cu - side * eyeSin * cv;
        const lv = side * eyeSin * cu + eyeCos * cv;
        const eyeSd = ellipseSd(lu, lv, p.eyeRx, eyeRy);
        const eyeA = inside(eyeSd);
        if (eyeA > 0) {
          over(acc, sclera, eyeA * 0.95);
          const d = Math.hypot(lu - s.gaze * p.eyeRx * 0.35, lv);
          over(acc, p.iris, eyeA * inside(d - irisR));
          over(acc, pupil, eyeA * inside(d - irisR * 0.45));
        }
        over(acc, lidLine, inside(Math.abs(eyeSd) - 0.012) * (lv < 0 ? 1 : 0.35));
        if (p.glasses > 0) {
          const ring = Math.abs(ellipseSd(lu, lv, p.eyeRx + 0.08, p.eyeRy + 0.09)) - p.glasses;
          over(acc, p.glassesColour, inside(ring));
        }
      }
      if (p.glasses > 0 && nearEyes) {
        const bridge = Math.max(Math.abs(v - p.eyeY + 0.03) - p.glasses, Math.abs(uf) - (p.eyeDx - p.eyeRx - 0.08));
        over(acc, p.glassesColour, inside(bridge));
      }

      // nose: soft shadow under the tip, two nostrils
      if (faceA > 0) {
        const w = Math.exp(-((uf / p.noseW) ** 2 + ((v - p.noseY) / (p.noseW * 0.7)) ** 2));
        const k = 1 - (1 - p.noseShade) * w;
        acc[0] *= k;
        acc[1] *= k;
        acc[2] *= k;
        const n = Math.max(inside(ellipseSd(uf - p.noseW * 0.45, v - p.noseY - 0.03, 0.035, 0.02)), inside(ellipseSd(uf + p.noseW * 0.45, v - p.noseY - 0.03, 0.035, 0.02)));
        over(acc, nostril, n * 0.8);
      }

      // mouth: lips along a curve, a dark line between them
      {
        const q = uf / p.mouthW;
        if (Math.abs(q) < 1.2) {
          const curve = p.mouthCurve + s.mouthCurve;
          const centre = p.mouthY - curve * q * q;
          const half = p.mouthThick * (0.5 + s.mouthOpen) * Math.sqrt(Math.max(0, 1 - q * q));
          const sd = Math.max(Math.abs(v - centre) - half, (Math.abs(q) - 1) * p.mouthW);
          over(acc, p.lips, inside(sd));
          const line = Math.max(Math.abs(v - centre) - (0.008 + s.mouthOpen * 0.05), (Math.abs(q) - 1) * p.mouthW);
          over(acc, mouthLine, inside(line) * 0.85);
        }
      }

      // lighting across the image, then the camera's response
      const shade = 1 + s.lightStrength * 0.5 * (px * lightX + py * lightY);
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) {
        const lit = acc[c]! * shade * s.cast[c]! * s.gain;
        img[o + c] = (lit - 128) * s.contrast + 128 + s.offset;
      }
    }
  }

  const sigmaPx = s.blur * size;
  if (sigmaPx >= 0.25) gaussianBlur(img, size, sigmaPx);
  for (let i = 0; i < img.length; i++) {
    const val = img[i]! + s.noise * noiseRng.normal();
    out[i] = val <= 0 ? 0 : val >= 255 ? 255 : Math.round(val);
  }
  return out;
}

/** Separable Gaussian blur of an HWC RGB float image, edges clamped. */
function gaussianBlur(img: Float32Array, size: number, sigma: number): void {
  const radius = Math.max(1, Math.ceil(2.5 * sigma));
  const kernel = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) sum += kernel[i + radius] = Math.exp(-(i * i) / (2 * sigma * sigma));
  for (let i = 0; i < kernel.length; i++) kernel[i] = kernel[i]! / sum;
  const tmp = new Float32Array(img.length);
  const pass = (src: Float32Array, dst: Float32Array, horizontal: boolean) => {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          let a = 0;
          for (let k = -radius; k <= radius; k++) {
            const xx = horizontal ? Math.min(size - 1, Math.max(0, x + k)) : x;
            const yy = horizontal ? y : Math.min(size - 1, Math.max(0, y + k));
            a += kernel[k + radius]! * src[(yy * size + xx) * 3 + c]!;
          }
          dst[(y * size + x) * 3 + c] = a;
        }
      }
    }
  };
  pass(img, tmp, true);
  pass(tmp, img, false);
}
