/**
 * The feature-map masks of docs/methods.md#feature-masks and the adversary's rules of docs/methods.md#adversarial-training, docs/methods.md#occlusion-test-vector,
 * as pure functions on an H×W grid of cells.
 *
 * A mask is a Uint8Array of H·W cells in row-major order (cell (row, col) at
 * row·W + col) with 1 = drop: the masked feature map is f ⊙ (1 − M), the mask
 * broadcast over channels.
 *
 * Families:
 *  - landmark windows: the 5 insightface template landmarks mapped to cells
 *    (row, col) = (⌊y·H/112⌋, ⌊x·W/112⌋), one landmark or a group ("eyes" =
 *    sunglasses, "mouth" = mask/scarf), a k×k window centred on each cell,
 *    clipped at the border;
 *  - halves: left col < ⌈W/2⌉, right col ≥ ⌊W/2⌋, upper row < ⌈H/2⌉, lower
 *    row ≥ ⌊H/2⌋ (odd sizes: the centre line belongs to both halves);
 *  - random half: ⌊H·W/2⌋ cells uniformly without replacement.
 */
import type { Rng } from '../common/random.js';

export type CellMask = Uint8Array;

/** The 112×112 insightface alignment template, (x, y) in pixels. */
const TEMPLATE_LANDMARKS = {
  leftEye: [38.2946, 51.6963],
  rightEye: [73.5318, 51.5014],
  nose: [56.0252, 71.7366],
  leftMouth: [41.5493, 92.3655],
  rightMouth: [70.7299, 92.2041],
} as const satisfies Record<string, readonly [number, number]>;

export type LandmarkName = keyof typeof TEMPLATE_LANDMARKS;

/** Semantic groups of landmarks; a single landmark is its own group. */
const LANDMARK_GROUPS: Readonly<Record<string, readonly LandmarkName[]>> = {
  leftEye: ['leftEye'],
  rightEye: ['rightEye'],
  nose: ['nose'],
  leftMouth: ['leftMouth'],
  rightMouth: ['rightMouth'],
  eyes: ['leftEye', 'rightEye'],
  mouth: ['leftMouth', 'rightMouth'],
};

const HALVES = ['left', 'right', 'upper', 'lower'] as const;
export type Half = (typeof HALVES)[number];

/** The side of the template image the landmark coordinates refer to. */
const TEMPLATE_SIZE = 112;

function checkGrid(h: number, w: number): void {
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) throw new RangeError(`occlusion mask: grid must be positive integers, got ${h}×${w}`);
}

/** (row, col) of a landmark on an H×W map. */
export function landmarkCell(name: LandmarkName, h: number, w: number): [number, number] {
  checkGrid(h, w);
  const [x, y] = TEMPLATE_LANDMARKS[name];
  return [Math.floor((y * h) / TEMPLATE_SIZE), Math.floor((x * w) / TEMPLATE_SIZE)];
}

/** k×k windows centred on the cells of a landmark group (a name of LANDMARK_GROUPS), clipped. */
export function landmarkMask(h: number, w: number, group: string, k = 3): CellMask {
  checkGrid(h, w);
  const names = LANDMARK_GROUPS[group];
  if (!names) throw new RangeError(`occlusion mask: unknown landmark group ${JSON.stringify(group)}; choose one of ${Object.keys(LANDMARK_GROUPS).join(', ')}`);
  if (!Number.isInteger(k) || k < 1 || k % 2 === 0) throw new RangeError(`occlusion mask: window k must be a positive odd integer, got ${k}`);
  const m = new Uint8Array(h * w);
  const r = (k - 1) / 2;
  for (const name of names) {
    const [row, col] = landmarkCell(name, h, w);
    for (let i = Math.max(0, row - r); i <= Math.min(h - 1, row + r); i++) for (let j = Math.max(0, col - r); j <= Math.min(w - 1, col + r); j++) m[i * w + j] = 1;
  }
  return m;
}

/** One half of the map; for odd sizes the centre line is in both halves. */
export function halfMask(h: number, w: number, half: Half): CellMask {
  checkGrid(h, w);
  const m = new Uint8Array(h * w);
  const drop = (i: number, j: number): boolean => {
    switch (half) {
      case 'left':
        return j < Math.ceil(w / 2);
      case 'right':
        return j >= Math.floor(w / 2);
      case 'upper':
        return i < Math.ceil(h / 2);
      case 'lower':
        return i >= Math.floor(h / 2);
    }
  };
  if (!(HALVES as readonly string[]).includes(half)) throw new RangeError(`occlusion mask: unknown half ${JSON.stringify(half)}`);
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) m[i * w + j] = drop(i, j) ? 1 : 0;
  return m;
}

/** ⌊H·W/2⌋ cells drawn uniformly without replacement (a partial Fisher–Yates shuffle). */
export function randomHalfMask(h: number, w: number, rng: Rng): CellMask {
  checkGrid(h, w);
  return randomCells(h * w, Math.floor((h * w) / 2), rng);
}

/** `count` of `n` cells, uniformly without replacement. */
function randomCells(n: number, count: number, rng: Rng): CellMask {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const m = new Uint8Array(n);
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(n - i);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
    m[order[i]!] = 1;
  }
  return m;
}

/** A box in fractions of the image side: rows [top, bottom) × cols [left, right). */
export interface FractionBox {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

/** Rounding slack of the half-a-cell rule, so that a cell a box covers exactly half (a half at odd sizes) counts. */
const HALF_CELL_TOLERANCE = 1e-9;

/**
 * The cells of an H×W map that a box drawn on the image covers: cell (r, c)
 * spans rows [r/H, (r+1)/H) × cols [c/W, (c+1)/W) of the image, and counts
 * when at least half of its area is inside the box.
 */
export function boxCells(h: number, w: number, box: FractionBox): CellMask {
  const m = new Uint8Array(h * w);
  const overlap = (a0: number, a1: number, b0: number, b1: number) => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
  for (let r = 0; r < h; r++) {
    const dy = overlap(r / h, (r + 1) / h, box.top, box.bottom) * h;
    for (let c = 0; c < w; c++) if (dy * overlap(c / w, (c + 1) / w, box.left, box.right) * w >= 0.5 - HALF_CELL_TOLERANCE) m[r * w + c] = 1;
  }
  return m;
}

export function countCells(m: CellMask): number {
  let n = 0;
  for (const v of m) n += v;
  return n;
}

/**
 * The landmark window for an H×W map: 3 at 7×7 (docs/methods.md#feature-masks), scaled with the
 * map (the odd size nearest 3·min(H, W)/7, at least 1), so a window covers
 * about the same part of the face at any resolution.
 */
export function defaultWindow(h: number, w: number): number {
  const target = (3 * Math.min(h, w)) / 7;
  const k = 2 * Math.round((target - 1) / 2) + 1;
  return Math.max(1, k);
}

export interface NamedMask {
  name: string;
  mask: CellMask;
}

/**
 * The candidates of the adversary's pre-training (docs/methods.md#adversarial-training stage 1): every
 * landmark group (5 single landmarks, eyes, mouth), the 4 halves, and
 * `randomHalves` random halves drawn from `rng`.
 */
export function candidateMasks(h: number, w: number, o: { k?: number; randomHalves: number; rng: Rng }): NamedMask[] {
  const k = o.k ?? defaultWindow(h, w);
  const out: NamedMask[] = Object.keys(LANDMARK_GROUPS).map((g) => ({ name: `landmark:${g}`, mask: landmarkMask(h, w, g, k) }));
  for (const half of HALVES) out.push({ name: `half:${half}`, mask: halfMask(h, w, half) });
  for (let i = 0; i < o.randomHalves; i++) out.push({ name: `random-half:${i}`, mask: randomHalfMask(h, w, o.rng) });
  return out;
}

/**
 * The pre-training target (docs/methods.md#adversarial-training stage 1, docs/methods.md#occlusion-test-vector): the candidate with the
 * lowest p_y after masking, i.e. the highest loss; the first one on ties.
 */
export function hardestCandidate(pY: ArrayLike<number>): number {
  if (pY.length === 0) throw new RangeError('occlusion: no candidate masks');
  let best = 0;
  for (let i = 1; i < pY.length; i++) if (pY[i]! < pY[best]!) best = i;
  return best;
}

/** The adversary's gate threshold on p_before[y] − p_after[y] (A-Fast-RCNN). */
const ADVERSARY_GATE = 0.1;

/** Whether a sampled mask "really hurt" (docs/methods.md#adversarial-training stage 2, step 4): p_before − p_after > threshold, strictly. */
export function adversaryGate(pBefore: number, pAfter: number, threshold = ADVERSARY_GATE): boolean {
  return pBefore - pAfter > threshold;
}

/**
 * A-Fast-RCNN's drop counts, P = 20 and K = 15 of 49 cells at 7×7, scaled
 * with the number of cells (rounded; 1 ≤ K ≤ P ≤ H·W).
 */
export function topKDropCounts(h: number, w: number): { top: number; drop: number } {
  checkGrid(h, w);
  const n = h * w;
  const top = Math.min(n, Math.max(1, Math.round((20 * n) / 49)));
  const drop = Math.min(top, Math.max(1, Math.round((15 * n) / 49)));
  return { top, drop };
}

/**
 * The binary mask sampled from the generator's drop probabilities π (docs/methods.md#adversarial-training stage 2, step 2): rank the cells by π (most drop-worthy first; ties by
 * cell index), keep the top `top`, and drop `drop` of them chosen uniformly.
 */
export function sampleTopKMask(pi: ArrayLike<number>, top: number, drop: number, rng: Rng): CellMask {
  const n = pi.length;
  if (!(Number.isInteger(top) && Number.isInteger(drop) && 0 <= drop && drop <= top && top <= n)) throw new RangeError(`occlusion: need 0 ≤ drop ≤ top ≤ ${n}, got drop ${drop}, top ${top}`);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => pi[b]! - pi[a]! || a - b);
  const chosen = randomCells(top, drop, rng);
  const m = new Uint8Array(n);
  for (let i = 0; i < top; i++) if (chosen[i]) m[order[i]!] = 1;
  return m;
}
