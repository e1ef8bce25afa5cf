/**
 * MagFace (docs/methods.md#magface): a margin that grows with the embedding's magnitude, plus
 * a regulariser that rewards large magnitudes, so that ‖x‖ becomes a quality
 * score.
 *
 *   a    = clamp(‖x‖, l_a, u_a)                 (zero gradient outside [l_a, u_a])
 *   m(a) = k·(a − l_a) + l_m,   k = (u_m − l_m)/(u_a − l_a)
 *   g(a) = 1/a + a/u_a²,        g'(a) = 1/u_a² − 1/a²
 *   target logit s·f(c_y; m(a)): the legacy closed form, with easy_margin
 *   (the official default, True) or without it (easyMargin false):
 *     easy:  f = cos(θ + m) = c·cos m − sinθ·sin m   if c > 0,          else c
 *     hard:  f = cos(θ + m)                          if c > cos(π − m), else c − m·sin m
 *   (hard: arcface's threshold; past it θ + m > π, where cos(θ + m) would turn back up)
 *   L    = CE_mean(z, y) + λ_g · mean_i g(a_i)
 *
 * Gradients (docs/methods.md#magface-gradients): through the target, ∂f/∂c = cos m + sin m·c/sinθ
 * (sinθ = sqrt(max(1 − c², 1e-12)), docs/methods.md#legacy-closed-form) on the margin branch, 1 else;
 * through the magnitude, ∂f/∂m = −sin(θ + m) on the margin branch, 0 on the
 * easy fallback and −(sin m + m·cos m) on the hard one (c − m·sin m), times k,
 * and λ_g·g'(a); both radial (along x/‖x‖) and only inside the clamp.
 *
 * This file holds the float64 scalar formulas the sharded step uses, the
 * λ_g feasibility check, and `magfaceLossF64`, a dense single-process float64
 * computation of loss and gradients (the reference vectors of docs/methods.md, finite-difference tests).
 */

import type { ShardHead } from './shard-heads.js';

export interface MagFaceSpec {
  /** Logit scale s. */
  s: number;
  /** Magnitude clamp [la, ua]. */
  la: number;
  ua: number;
  /** Margin at a = la and at a = ua. */
  lm: number;
  um: number;
  /** Weight λ_g of the regulariser. */
  lambdaG: number;
  /** easy_margin of the official MagLinear: true (its default; also when absent) or false (the arcface threshold). */
  easyMargin?: boolean;
}

/** The official defaults (run/run.sh, run_dist.sh; docs/methods.md#magface-definitions). */
export const MAGFACE_DEFAULTS: Readonly<MagFaceSpec> = { s: 64, la: 10, ua: 110, lm: 0.45, um: 0.8, lambdaG: 35 };

/** Slope k of the linear margin. */
function magfaceSlope(spec: MagFaceSpec): number {
  return (spec.um - spec.lm) / (spec.ua - spec.la);
}

/** The smallest λ_g for which the optimum magnitude is unique (docs/methods.md#magface-regulariser-bound): s·k·u_a²·l_a²/(u_a² − l_a²). */
export function magfaceLambdaMin(spec: MagFaceSpec): number {
  const { la, ua } = spec;
  return (spec.s * magfaceSlope(spec) * ua * ua * la * la) / (ua * ua - la * la);
}

/** A MagFace setting that cannot work; `field` is the MagFaceSpec field, `message` starts with the name the user wrote. */
export class MagFaceSpecError extends Error {
  override name = 'MagFaceSpecError';
  constructor(
    readonly field: keyof MagFaceSpec,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Throws a MagFaceSpecError naming the field (`magface.la`, …, or the names
 * given in `names`: config keys, case-file fields) if the spec is unusable,
 * including the λ_g condition of docs/methods.md#magface-regulariser-bound.
 */
export function validateMagFace(spec: MagFaceSpec, names: Partial<Record<keyof MagFaceSpec, string>> = {}): void {
  const name = (k: keyof MagFaceSpec) => names[k] ?? `magface.${k}`;
  const fail = (k: keyof MagFaceSpec, msg: string): never => {
    throw new MagFaceSpecError(k, `${name(k)}: ${msg}`);
  };
  for (const k of ['s', 'la', 'ua', 'lm', 'um', 'lambdaG'] as const) if (typeof spec[k] !== 'number' || !Number.isFinite(spec[k])) fail(k, `must be a finite number, got ${String(spec[k])}`);
  if (spec.s <= 0) fail('s', `must be > 0, got ${spec.s}`);
  if (!(spec.la > 0)) fail('la', `the lower magnitude bound must be > 0, got ${spec.la}`);
  if (!(spec.ua > spec.la)) fail('ua', `the upper magnitude bound must exceed ${name('la')} = ${spec.la}, got ${spec.ua}`);
  if (spec.lm < 0) fail('lm', `must be ≥ 0, got ${spec.lm}`);
  if (spec.um < spec.lm) fail('um', `the margin at the upper bound must be ≥ ${name('lm')} = ${spec.lm}, got ${spec.um}`);
  if (spec.um >= Math.PI / 2) fail('um', `must be below π/2, got ${spec.um}`);
  if (spec.lambdaG < 0) fail('lambdaG', `must be ≥ 0, got ${spec.lambdaG}`);
  if (spec.easyMargin !== undefined && typeof spec.easyMargin !== 'boolean') fail('easyMargin', `must be true or false, got ${JSON.stringify(spec.easyMargin)}`);
  const min = magfaceLambdaMin(spec);
  if (spec.lambdaG < min)
    fail(
      'lambdaG',
      `${spec.lambdaG} is below the MagFace feasibility bound λ_g ≥ s·k·u_a²·l_a²/(u_a² − l_a²) = ${min.toPrecision(6)} ` +
        `(s = ${spec.s}, k = (u_m − l_m)/(u_a − l_a) = ${magfaceSlope(spec).toPrecision(6)}, docs/methods.md#magface-regulariser-bound); below it the optimal magnitude is not unique and ‖x‖ is no quality score. ` +
        `Raise ${name('lambdaG')} (35 is the official value for the defaults), or lower ${name('s')} or the margin range`,
    );
}

/** a = clamp(‖x‖, la, ua) and whether the clamp passes gradient (la ≤ ‖x‖ ≤ ua, inclusive as PyTorch's clamp). */
function magnitude(norm: number, spec: MagFaceSpec): { a: number; inside: boolean } {
  const a = Math.min(spec.ua, Math.max(spec.la, norm));
  return { a, inside: norm >= spec.la && norm <= spec.ua };
}

/** m(a), the magnitude-aware margin. */
export function magMargin(a: number, spec: MagFaceSpec): number {
  return magfaceSlope(spec) * (a - spec.la) + spec.lm;
}

/** g(a) = 1/a + a/u_a². */
export function magRegulariser(a: number, spec: MagFaceSpec): number {
  return 1 / a + a / (spec.ua * spec.ua);
}

/** g'(a) = 1/u_a² − 1/a². */
export function magRegulariserGrad(a: number, spec: MagFaceSpec): number {
  return 1 / (spec.ua * spec.ua) - 1 / (a * a);
}

/** Whether c takes the margin branch cos(θ + m): c > 0 (easy) or c > cos(π − m) = −cos m (hard). */
function onMarginBranch(c: number, m: number, easy: boolean): boolean {
  return easy ? c > 0 : c > -Math.cos(m);
}

/** f(c; m): the legacy target cosine, easy margin (default) or hard. */
function magTargetCos(c: number, m: number, easy = true): number {
  if (!onMarginBranch(c, m, easy)) return easy ? c : c - m * Math.sin(m);
  return c * Math.cos(m) - Math.sqrt(Math.max(0, 1 - c * c)) * Math.sin(m);
}

/** ∂f/∂c (guarded sinθ, docs/methods.md#legacy-closed-form); 1 on either fallback. */
function magTargetCosGrad(c: number, m: number, easy = true): number {
  if (!onMarginBranch(c, m, easy)) return 1;
  return Math.cos(m) + (Math.sin(m) * c) / Math.sqrt(Math.max(1 - c * c, 1e-12));
}

/**
 * ∂f/∂m: −sin(θ + m) = −(sinθ·cos m + c·sin m) on the margin branch; on the
 * fallback 0 (easy: f = c) or −(sin m + m·cos m) (hard: f = c − m·sin m, whose
 * m·sin m depends on the magnitude through m(a), as in the official code).
 */
function magTargetCosGradMargin(c: number, m: number, easy = true): number {
  if (!onMarginBranch(c, m, easy)) return easy ? 0 : -(Math.sin(m) + m * Math.cos(m));
  return -(Math.sqrt(Math.max(0, 1 - c * c)) * Math.cos(m) + c * Math.sin(m));
}

export interface MagFaceF64Result {
  /** CE + λ_g·mean g. */
  loss: number;
  /** CE part (mean over rows). */
  lossId: number;
  /** mean_i g(a_i). */
  meanG: number;
  /** Margined target cosines f_i. */
  targets: number[];
  /** ∂L/∂x, N×D. */
  gradX: number[][];
  /** ∂L/∂W, C×D (rows = classes). */
  gradW: number[][];
}

const norm2 = (v: readonly number[]) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));

/**
 * The whole MagFace loss in float64, dense, one process: raw embeddings
 * x (N×D), weight W (C×D, rows = classes), labels in [0, C).
 */
export function magfaceLossF64(x: readonly (readonly number[])[], w: readonly (readonly number[])[], labels: readonly number[], spec: MagFaceSpec): MagFaceF64Result {
  const n = x.length;
  const d = w[0]?.length ?? 0;
  const k = magfaceSlope(spec);
  const easy = spec.easyMargin !== false;
  const wn = w.map((row) => Math.max(norm2(row), 1e-12));
  const wu = w.map((row, j) => row.map((v) => v / wn[j]!));
  const gradUnitW = w.map(() => new Array<number>(d).fill(0));
  const gradX: number[][] = [];
  const targets: number[] = [];
  let lossId = 0;
  let sumG = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[i]!;
    const xn = norm2(xi);
    const xu = xi.map((v) => v / Math.max(xn, 1e-12));
    const { a, inside } = magnitude(xn, spec);
    const m = magMargin(a, spec);
    const y = labels[i]!;
    const cos = wu.map((wj) =>
      Math.min(
        1,
        Math.max(
          -1,
          wj.reduce((acc, v, t) => acc + v * xu[t]!, 0),
        ),
      ),
    );
    const f = magTargetCos(cos[y]!, m, easy);
    targets.push(f);
    const z = cos.map((c, j) => spec.s * (j === y ? f : c));
    const mx = Math.max(...z);
    const lse = mx + Math.log(z.reduce((acc, v) => acc + Math.exp(v - mx), 0));
    lossId += (lse - z[y]!) / n;
    const g = magRegulariser(a, spec);
    sumG += g;
    // ∂L/∂c_j
    const p = z.map((v) => Math.exp(v - lse));
    const dC = p.map((pj, j) => (spec.s * (pj - (j === y ? 1 : 0))) / n);
    dC[y] = dC[y]! * magTargetCosGrad(cos[y]!, m, easy);
    // tangential part through n(x); the clamp on c passes gradient everywhere in [−1, 1]
    const dU = new Array<number>(d).fill(0);
    cos.forEach((_, j) => {
      for (let t = 0; t < d; t++) {
        dU[t] += dC[j]! * wu[j]![t]!;
        gradUnitW[j]![t] += dC[j]! * xu[t]!;
      }
    });
    const dot = dU.reduce((acc, v, t) => acc + v * xu[t]!, 0);
    const gx = dU.map((v, t) => (v - dot * xu[t]!) / Math.max(xn, 1e-12));
    // radial part through a
    if (inside) {
      const dA = ((p[y]! - 1) * spec.s * magTargetCosGradMargin(cos[y]!, m, easy) * k + spec.lambdaG * magRegulariserGrad(a, spec)) / n;
      for (let t = 0; t < d; t++) gx[t] += dA * xu[t]!;
    }
    gradX.push(gx);
  }
  const gradW = gradUnitW.map((g, j) => {
    const dot = g.reduce((acc, v, t) => acc + v * wu[j]![t]!, 0);
    return g.map((v, t) => (v - dot * wu[j]![t]!) / wn[j]!);
  });
  const meanG = sumG / n;
  return { loss: lossId + spec.lambdaG * meanG, lossId, meanG, targets, gradX, gradW };
}

// ---------------------------------------------------------------------------
// The sharded classifier's view (src/ops/shard-heads.ts)

/** Per-row magnitude facts of the gathered batch: a_i, m(a_i), whether the clamp passes gradient, and ‖x_i‖. */
export interface MagnitudeRows {
  norm: Float64Array;
  a: Float64Array;
  margin: Float64Array;
  inside: Uint8Array;
}

/** ‖x_i‖ (float64) of row-major rows×dim embeddings, and what MagFace derives from it. */
export function magnitudeRows(emb: ArrayLike<number>, dim: number, spec: MagFaceSpec): MagnitudeRows {
  const rows = emb.length / dim;
  const out: MagnitudeRows = { norm: new Float64Array(rows), a: new Float64Array(rows), margin: new Float64Array(rows), inside: new Uint8Array(rows) };
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let d = 0; d < dim; d++) ss += emb[i * dim + d]! * emb[i * dim + d]!;
    const norm = Math.sqrt(ss);
    const { a, inside } = magnitude(norm, spec);
    out.norm[i] = norm;
    out.a[i] = a;
    out.margin[i] = magMargin(a, spec);
    out.inside[i] = inside ? 1 : 0;
  }
  return out;
}

/** The head for shard-heads.ts: a per-row margin m(a_i) on the target, no change to the other logits. */
export function magfaceShardHead(spec: MagFaceSpec, mags: MagnitudeRows): ShardHead {
  const easy = spec.easyMargin !== false;
  return {
    s: spec.s,
    target: (row, c) => magTargetCos(c, mags.margin[row]!, easy),
    targetGrad: (row, c) => magTargetCosGrad(c, mags.margin[row]!, easy),
  };
}

/**
 * ∂L_CE/∂a_i on the shard that owns row i's label (0 elsewhere and outside
 * the clamp): (p_y − 1)/rowsTotal · s · ∂f/∂m · k, with p_y = exp(target − lse).
 * Times x_i/‖x_i‖ it is the radial part of ∂L_CE/∂x_i (docs/methods.md#magface-gradients).
 */
export function magfaceMarginRadial(
  spec: MagFaceSpec,
  mags: MagnitudeRows,
  targetCos: Float32Array,
  owned: Uint8Array,
  targetLogit: Float32Array,
  logSumExp: Float32Array,
  rowsTotal: number,
): Float32Array {
  const k = magfaceSlope(spec);
  const easy = spec.easyMargin !== false;
  const out = new Float32Array(owned.length);
  for (let i = 0; i < owned.length; i++) {
    if (!owned[i] || !mags.inside[i]) continue;
    const py = Math.exp(targetLogit[i]! - logSumExp[i]!);
    out[i] = ((py - 1) / rowsTotal) * spec.s * magTargetCosGradMargin(targetCos[i]!, mags.margin[i]!, easy) * k;
  }
  return out;
}
