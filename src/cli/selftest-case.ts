/**
 * The input of `shardface selftest`: one classifier step small enough to check
 * against the single-process reference. A case file is JSON:
 *
 *   {
 *     "embeddings": number[][],   // N×D raw embeddings (the gathered batch)
 *     "labels":     number[],     // N integers in [0, C)
 *     "weight":     number[][],   // C×D raw classifier
 *     "margin": { "type": "arcface" | "cosface" | "combined",
 *                 "s"?, "m1"?, "m2"?, "m3"? }   // missing numbers: the preset's
 *            | { "type": "magface",                 // defaults: the official ones
 *                "s"?, "l_a"?, "u_a"?, "l_m"?, "u_m"?, "lambda_g"?, "easy_margin"? }
 *            | { "type": "curricular",              // defaults s 64, m 0.5, t 0, ema_weight 0.01
 *                "s"?, "m"?, "t"?, "ema_weight"? }   // t: the incoming stage indicator (before this step's update)
 *   }
 *
 * The official implementations' parameter names are accepted as well (see
 * OFFICIAL_NAMES): arcface_torch's `margin_list` [m1, m2, m3] (without a
 * `type` it also picks the type, as arcface_torch's CombinedMarginLoss does),
 * `scale`, and `m` / `margin` (ArcFace's m2, CosFace's m3); MagFace's
 * `scale` / `arc_scale`, `l_margin`, `u_margin`, `easy_margin`;
 * CurricularFace's `scale` and `t_alpha` (its EMA weight). Two names for one
 * parameter with different values, and a name the type does not know, are
 * errors naming them.
 *
 * N must divide evenly over the workers (each contributes N/n rows, in rank
 * order). Validation errors name the field, e.g.
 * `embeddings[3]: row has 4 values, expected 5`.
 * Without a file, generateCase draws a case from a seed.
 */
import { Rng } from '../common/random.js';
import { MARGIN_PRESETS, resolveMargin, type MarginSpec, type MarginType } from '../ops/margin.js';
import { MAGFACE_DEFAULTS, validateMagFace, type MagFaceSpec } from '../ops/magface.js';
import { CURRICULAR_DEFAULTS, validateCurricular } from '../ops/curricular.js';
import type { HeadCase } from '../ops/reference-heads.js';

/** The loss heads a case may name besides the margin family. */
const HEAD_TYPES = ['magface', 'curricular'] as const;
export type HeadType = (typeof HEAD_TYPES)[number];
const ALL_TYPES = 'arcface, cosface, combined, magface or curricular';

export interface SelftestCase {
  /** N×D raw embeddings, rows in rank order (worker r has rows r·N/n … (r+1)·N/n − 1). */
  embeddings: number[][];
  /** N global labels in [0, C). */
  labels: number[];
  /** C×D raw classifier weight. */
  weight: number[][];
  /** The margin family's spec; for a head case (`head` set) the ArcFace spec with the head's s, unused. */
  margin: MarginSpec;
  /** MagFace or CurricularFace (margin.type "magface" / "curricular" in the file); absent for the margin family. */
  head?: HeadCase;
  /** Number of workers n (divides N). */
  workers: number;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'number') return String(v);
  const s = JSON.stringify(v);
  return s === undefined ? typeof v : s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkWorkers(workers: number): void {
  if (!Number.isSafeInteger(workers) || workers < 1) throw new Error(`workers: must be a positive integer, got ${describe(workers)}`);
}

/** A non-empty numeric matrix with `width` columns (or any common width if null). Returns its width. */
function checkMatrix(name: string, v: unknown, width: number | null, widthWhat: string): number {
  if (v === undefined) throw new Error(`${name}: missing`);
  if (!Array.isArray(v)) throw new Error(`${name}: expected an array of rows, got ${describe(v)}`);
  if (v.length === 0) throw new Error(`${name}: has no rows`);
  let w = width;
  v.forEach((row: unknown, i) => {
    if (!Array.isArray(row)) throw new Error(`${name}[${i}]: expected an array of numbers, got ${describe(row)}`);
    if (w === null) {
      if (row.length === 0) throw new Error(`${name}[${i}]: row is empty`);
      w = row.length;
    } else if (row.length !== w) {
      throw new Error(`${name}[${i}]: row has ${row.length} values, expected ${w}${widthWhat}`);
    }
    row.forEach((x: unknown, j) => {
      if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`${name}[${i}][${j}]: expected a finite number, got ${describe(x)}`);
    });
  });
  return w!;
}

/**
 * Other names of the case fields, per margin type: the parameter names of the
 * official code (arcface_torch's losses and config, MagFace's MagLinear and
 * MagLoss, CurricularFace), each → the field it sets.
 */
const OFFICIAL_NAMES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  arcface: { scale: 's', m: 'm2', margin: 'm2' },
  cosface: { scale: 's', m: 'm3', margin: 'm3' },
  combined: { scale: 's' },
  magface: { scale: 's', arc_scale: 's', l_margin: 'l_m', u_margin: 'u_m' },
  curricular: { scale: 's', t_alpha: 'ema_weight' },
};
/** The case's own field names per type (besides `type`). */
const OWN_NAMES: Readonly<Record<string, readonly string[]>> = {
  arcface: ['s', 'm1', 'm2', 'm3'],
  cosface: ['s', 'm1', 'm2', 'm3'],
  combined: ['s', 'm1', 'm2', 'm3'],
  magface: ['s', 'l_a', 'u_a', 'l_m', 'u_m', 'lambda_g', 'easy_margin'],
  curricular: ['s', 'm', 't', 'ema_weight'],
};
const MARGIN_LIST_TYPES = ['arcface', 'cosface', 'combined'];

/** arcface_torch's CombinedMarginLoss: (1, m2, 0) is ArcFace, (1, 0, m3) CosFace, anything else the combined margin. */
function typeOfMarginList([m1, m2, m3]: readonly number[]): MarginType {
  if (m1 === 1 && m3 === 0) return 'arcface';
  if (m1 === 1 && m2 === 0) return 'cosface';
  return 'combined';
}

/** The margin list's [m1, m2, m3], checked; `name` is the field as written. */
function marginList(v: unknown): [number, number, number] {
  if (!Array.isArray(v) || v.length !== 3) throw new Error(`margin.margin_list: expected [m1, m2, m3] (three numbers, as arcface_torch's config), got ${describe(v)}`);
  v.forEach((x: unknown, i) => {
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`margin.margin_list[${i}]: expected a finite number, got ${describe(x)}`);
  });
  return v as [number, number, number];
}

/**
 * The margin object with every official name replaced by the case's own
 * (type inferred from margin_list when missing). Throws naming the fields for
 * an unknown name, or for two names of one field with different values.
 */
function canonicalMargin(v: Record<string, unknown>): Record<string, unknown> {
  let type = v.type;
  if (type === undefined && v.margin_list !== undefined) type = typeOfMarginList(marginList(v.margin_list));
  if (type === undefined) throw new Error(`margin.type: missing (expected ${ALL_TYPES}, or arcface_torch's margin_list)`);
  if (typeof type !== 'string' || !(type in OWN_NAMES)) throw new Error(`margin.type: unknown margin type ${describe(type)} (expected ${ALL_TYPES})`);
  const own = OWN_NAMES[type]!;
  const official = OFFICIAL_NAMES[type]!;
  const out: Record<string, unknown> = { type };
  const setBy: Record<string, string> = {};
  const put = (field: string, value: unknown, name: string) => {
    const before = setBy[field];
    if (before !== undefined && out[field] !== value) throw new Error(`margin.${name} and margin.${before} both set ${field} (${describe(value)} vs ${describe(out[field])}); give one of them`);
    out[field] = value;
    setBy[field] ??= name;
  };
  for (const [name, value] of Object.entries(v)) {
    if (name === 'type') continue;
    if (name === 'margin_list' && MARGIN_LIST_TYPES.includes(type)) {
      marginList(value).forEach((m, i) => put(`m${i + 1}`, m, 'margin_list'));
    } else if (own.includes(name)) put(name, value, name);
    else if (official[name] !== undefined) put(official[name], value, name);
    else {
      const accepted = [...own, ...Object.keys(official), ...(MARGIN_LIST_TYPES.includes(type) ? ['margin_list'] : [])];
      throw new Error(`margin.${name}: unknown field for margin type ${type} (expected ${accepted.join(', ')})`);
    }
  }
  return out;
}

/** Numbers of a head's margin object: file field → spec field, each optional (default from `defaults`). */
function parseHeadNumbers<T extends Record<string, number>>(v: Record<string, unknown>, fields: Record<string, keyof T>, defaults: T): T {
  for (const k of Object.keys(v))
    if (k !== 'type' && !(k in fields)) throw new Error(`margin.${k}: unknown field for margin type ${JSON.stringify(v.type)} (expected ${Object.keys(fields).join(', ')})`);
  const out = { ...defaults };
  for (const [file, field] of Object.entries(fields)) {
    const x = v[file];
    if (x === undefined) continue;
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`margin.${file}: expected a finite number, got ${describe(x)}`);
    (out as Record<string, number>)[field as string] = x;
  }
  return out;
}

function parseHead(v: Record<string, unknown>): HeadCase {
  if (v.type === 'magface') {
    const { easy_margin: easy, ...numbers } = v;
    if (easy !== undefined && typeof easy !== 'boolean') throw new Error(`margin.easy_margin: expected true or false (MagFace's easy_margin), got ${describe(easy)}`);
    const fields = { s: 's', l_a: 'la', u_a: 'ua', l_m: 'lm', u_m: 'um', lambda_g: 'lambdaG' } as const;
    const spec: MagFaceSpec = parseHeadNumbers<Required<Omit<MagFaceSpec, 'easyMargin'>>>(numbers, fields, { ...MAGFACE_DEFAULTS });
    if (easy !== undefined) spec.easyMargin = easy;
    validateMagFace(spec, { s: 'margin.s', la: 'margin.l_a', ua: 'margin.u_a', lm: 'margin.l_m', um: 'margin.u_m', lambdaG: 'margin.lambda_g', easyMargin: 'margin.easy_margin' });
    return { kind: 'magface', ...spec };
  }
  const spec = parseHeadNumbers(v, { s: 's', m: 'm', t: 't', ema_weight: 'emaWeight' } as const, { ...CURRICULAR_DEFAULTS, t: 0 });
  validateCurricular(spec, { s: 'margin.s', m: 'margin.m', emaWeight: 'margin.ema_weight' });
  if (spec.t < -1 || spec.t > 1) throw new Error(`margin.t: the stage indicator is a mean cosine, so it lies in [-1, 1]; got ${spec.t}`);
  return { kind: 'curricular', ...spec };
}

/** A head case's placeholder margin spec (see SelftestCase.margin). */
function headMargin(head: HeadCase): MarginSpec {
  return resolveMargin({ type: 'arcface', s: head.s, ...(head.kind === 'curricular' ? { m2: head.m } : {}) });
}

function parseMargin(given: unknown): { margin: MarginSpec; head?: HeadCase } {
  if (given === undefined) throw new Error('margin: missing');
  if (!isObject(given)) throw new Error(`margin: expected an object, got ${describe(given)}`);
  const v = canonicalMargin(given);
  if (typeof v.type === 'string' && (HEAD_TYPES as readonly string[]).includes(v.type)) {
    const head = parseHead(v);
    return { margin: headMargin(head), head };
  }
  if (typeof v.type !== 'string' || !(v.type in MARGIN_PRESETS)) throw new Error(`margin.type: unknown margin type ${describe(v.type)} (expected ${ALL_TYPES})`);
  const partial: { type: MarginType; s?: number; m1?: number; m2?: number; m3?: number } = { type: v.type as MarginType };
  for (const k of ['s', 'm1', 'm2', 'm3'] as const) {
    const x = v[k];
    if (x === undefined) continue;
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`margin.${k}: expected a finite number, got ${describe(x)}`);
    partial[k] = x;
  }
  for (const k of Object.keys(v)) if (!['type', 's', 'm1', 'm2', 'm3'].includes(k)) throw new Error(`margin.${k}: unknown field`);
  return { margin: resolveMargin(partial) };
}

/**
 * Parses and validates a case: `input` is the file's text or an already
 * parsed value; `workers` the number of workers it will run on.
 */
export function parseSelftestCase(input: unknown, workers: number): SelftestCase {
  checkWorkers(workers);
  let raw: unknown = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (e) {
      throw new Error(`case file: not valid JSON (${(e as Error).message})`);
    }
  }
  if (!isObject(raw)) throw new Error(`case file: expected a JSON object, got ${describe(raw)}`);
  for (const k of Object.keys(raw)) if (!['embeddings', 'labels', 'weight', 'margin'].includes(k)) throw new Error(`${k}: unknown field`);

  const dim = checkMatrix('embeddings', raw.embeddings, null, '');
  const embeddings = raw.embeddings as number[][];
  const n = embeddings.length;
  checkMatrix('weight', raw.weight, dim, ' (the embedding size)');
  const weight = raw.weight as number[][];
  const classes = weight.length;

  if (raw.labels === undefined) throw new Error('labels: missing');
  if (!Array.isArray(raw.labels)) throw new Error(`labels: expected an array of integers, got ${describe(raw.labels)}`);
  const labels = raw.labels as unknown[];
  if (labels.length !== n) throw new Error(`labels: has ${labels.length} values, expected ${n} (one per embedding row)`);
  labels.forEach((y, i) => {
    if (typeof y !== 'number' || !Number.isInteger(y)) throw new Error(`labels[${i}]: expected an integer, got ${describe(y)}`);
    if (y < 0 || y >= classes) throw new Error(`labels[${i}]: ${y} is outside [0, ${classes}) (weight has ${classes} rows)`);
  });

  if (n % workers !== 0) throw new Error(`embeddings: ${n} rows do not divide evenly over ${workers} workers`);
  const { margin, head } = parseMargin(raw.margin);
  return { embeddings, labels: labels as number[], weight, margin, ...(head ? { head } : {}), workers };
}

export interface GenerateCaseOptions {
  workers: number;
  classes: number;
  dim: number;
  rowsPerWorker: number;
  seed: number;
  /** A spec (missing numbers from the type's preset), a preset name, or nothing (ArcFace). */
  margin?: MarginType | ({ type: MarginType } & Partial<Omit<MarginSpec, 'type'>>);
  /** A loss head instead of the margin family (then `margin` is not used): its defaults, or a full HeadCase. */
  head?: HeadType | HeadCase;
}

/**
 * A random case: embeddings N(0, 1), weight N(0, 0.01²) (the training
 * initialisation), labels uniform over the classes; all from `seed`.
 */
export function generateCase(opts: GenerateCaseOptions): SelftestCase {
  const { workers, classes, dim, rowsPerWorker, seed } = opts;
  checkWorkers(workers);
  for (const [k, v] of Object.entries({ classes, dim, rowsPerWorker })) if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${k}: must be a positive integer, got ${describe(v)}`);
  const head: HeadCase | undefined =
    typeof opts.head === 'object'
      ? opts.head
      : opts.head === 'magface'
        ? { kind: 'magface', ...MAGFACE_DEFAULTS }
        : opts.head === 'curricular'
          ? { kind: 'curricular', ...CURRICULAR_DEFAULTS, t: 0 }
          : undefined;
  const margin = head ? headMargin(head) : typeof opts.margin === 'object' ? resolveMargin(opts.margin) : resolveMargin({ type: opts.margin ?? 'arcface' });
  const n = workers * rowsPerWorker;
  const draw = (purpose: string, rows: number, std: number): number[][] => {
    const rng = Rng.derive(seed, 'selftest', purpose);
    return Array.from({ length: rows }, () => Array.from(rng.fillNormal(new Float32Array(dim), 0, std)));
  };
  const embeddings = draw('embeddings', n, 1);
  if (head?.kind === 'magface') {
    // magnitudes spread over [l_a/2, 1.2·u_a]: rows inside the clamp and on both sides of it
    const rng = Rng.derive(seed, 'selftest', 'magnitudes');
    for (const row of embeddings) {
      const norm = Math.sqrt(row.reduce((a, x) => a + x * x, 0));
      const target = head.la / 2 + rng.next() * (1.2 * head.ua - head.la / 2);
      row.forEach((x, d) => (row[d] = (x / norm) * target));
    }
  }
  const weight = draw('weight', classes, 0.01);
  const rng = Rng.derive(seed, 'selftest', 'labels');
  const labels = Array.from({ length: n }, () => rng.int(classes));
  return { embeddings, labels, weight, margin, ...(head ? { head } : {}), workers };
}
