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
 *   }
 *
 * N must divide evenly over the workers (each contributes N/n rows, in rank
 * order). Validation errors name the field, e.g.
 * `embeddings[3]: row has 4 values, expected 5`.
 * Without a file, generateCase draws a case from a seed.
 */
import { Rng } from '../common/random.js';
import { MARGIN_PRESETS, resolveMargin, type MarginSpec, type MarginType } from '../ops/margin.js';

export interface SelftestCase {
  /** N×D raw embeddings, rows in rank order (worker r has rows r·N/n … (r+1)·N/n − 1). */
  embeddings: number[][];
  /** N global labels in [0, C). */
  labels: number[];
  /** C×D raw classifier weight. */
  weight: number[][];
  margin: MarginSpec;
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

function parseMargin(v: unknown): MarginSpec {
  if (v === undefined) throw new Error('margin: missing');
  if (!isObject(v)) throw new Error(`margin: expected an object, got ${describe(v)}`);
  if (v.type === undefined) throw new Error('margin.type: missing (expected arcface, cosface or combined)');
  if (typeof v.type !== 'string' || !(v.type in MARGIN_PRESETS))
    throw new Error(`margin.type: unknown margin type ${describe(v.type)} (expected arcface, cosface or combined)`);
  const partial: { type: MarginType; s?: number; m1?: number; m2?: number; m3?: number } = { type: v.type as MarginType };
  for (const k of ['s', 'm1', 'm2', 'm3'] as const) {
    const x = v[k];
    if (x === undefined) continue;
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`margin.${k}: expected a finite number, got ${describe(x)}`);
    partial[k] = x;
  }
  for (const k of Object.keys(v)) if (!['type', 's', 'm1', 'm2', 'm3'].includes(k)) throw new Error(`margin.${k}: unknown field`);
  return resolveMargin(partial);
}

/**
 * Parses and validates a case: `input` is the file's text or an already
 * parsed value; `workers` the number of workers it will run on.
 */
export function parseSelftestCase(input: string | unknown, workers: number): SelftestCase {
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
  const margin = parseMargin(raw.margin);
  return { embeddings, labels: labels as number[], weight, margin, workers };
}

export interface GenerateCaseOptions {
  workers: number;
  classes: number;
  dim: number;
  rowsPerWorker: number;
  seed: number;
  /** A spec (missing numbers from the type's preset), a preset name, or nothing (ArcFace). */
  margin?: MarginType | ({ type: MarginType } & Partial<Omit<MarginSpec, 'type'>>);
}

/**
 * A random case: embeddings N(0, 1), weight N(0, 0.01²) (the training
 * initialisation), labels uniform over the classes; all from `seed`.
 */
export function generateCase(opts: GenerateCaseOptions): SelftestCase {
  const { workers, classes, dim, rowsPerWorker, seed } = opts;
  checkWorkers(workers);
  for (const [k, v] of Object.entries({ classes, dim, rowsPerWorker }))
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${k}: must be a positive integer, got ${describe(v)}`);
  const margin = typeof opts.margin === 'object' ? resolveMargin(opts.margin) : resolveMargin({ type: opts.margin ?? 'arcface' });
  const n = workers * rowsPerWorker;
  const draw = (purpose: string, rows: number, std: number): number[][] => {
    const rng = Rng.derive(seed, 'selftest', purpose);
    return Array.from({ length: rows }, () => Array.from(rng.fillNormal(new Float32Array(dim), 0, std)));
  };
  const embeddings = draw('embeddings', n, 1);
  const weight = draw('weight', classes, 0.01);
  const rng = Rng.derive(seed, 'selftest', 'labels');
  const labels = Array.from({ length: n }, () => rng.int(classes));
  return { embeddings, labels, weight, margin, workers };
}
