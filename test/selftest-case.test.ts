import { describe, expect, it } from 'vitest';
import { generateCase, parseSelftestCase } from '../src/cli/selftest-case.js';
import { vectorA } from './helpers/vector-a.js';

const good = () => ({ ...vectorA(), margin: { type: 'arcface' } });

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the edits poke at arbitrary nested fields of a case
type AnyCase = Record<string, any>;

function bad(edit: (c: AnyCase) => void, workers = 2): () => unknown {
  const c: AnyCase = good();
  edit(c);
  return () => parseSelftestCase(c, workers);
}

describe('parseSelftestCase', () => {
  it('accepts a good case (object or JSON text) and fills the margin preset', () => {
    const c = parseSelftestCase(JSON.stringify(good()), 2);
    expect(c.margin).toEqual({ type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 });
    expect(c.workers).toBe(2);
    expect(c.labels).toEqual([1, 4, 5, 0]);
    const cos = parseSelftestCase({ ...good(), margin: { type: 'cosface', m3: 0.35, s: 30 } }, 4);
    expect(cos.margin).toEqual({ type: 'cosface', s: 30, m1: 1, m2: 0, m3: 0.35 });
  });

  it('ragged rows name the row', () => {
    expect(bad((c) => c.embeddings[3].push(7))).toThrow('embeddings[3]: row has 4 values, expected 3');
    expect(bad((c) => (c.weight[2] = [1, 2]))).toThrow(/^weight\[2\]: row has 2 values, expected 3/);
  });

  it('non-finite or non-numeric values name the entry', () => {
    expect(bad((c) => (c.embeddings[1][2] = null))).toThrow(/^embeddings\[1\]\[2\]: expected a finite number/);
    expect(bad((c) => (c.weight[0][0] = 'x'))).toThrow(/^weight\[0\]\[0\]: expected a finite number/);
    expect(() => parseSelftestCase('{"embeddings": [[1, 1e999]], "labels": [0], "weight": [[1, 2]], "margin": {"type": "arcface"}}', 1)).toThrow(
      /^embeddings\[0\]\[1\]: expected a finite number, got Infinity/,
    );
  });

  it('labels out of range or not integers name the label', () => {
    expect(bad((c) => (c.labels[2] = 6))).toThrow(/^labels\[2\]: 6 is outside \[0, 6\)/);
    expect(bad((c) => (c.labels[1] = -1))).toThrow(/^labels\[1\]: -1 is outside/);
    expect(bad((c) => (c.labels[0] = 1.5))).toThrow(/^labels\[0\]: expected an integer, got 1.5/);
    expect(bad((c) => c.labels.pop())).toThrow(/^labels: has 3 values, expected 4/);
  });

  it('rows must divide over the workers', () => {
    expect(bad(() => undefined, 3)).toThrow(/^embeddings: 4 rows do not divide evenly over 3 workers/);
    expect(bad(() => undefined, 0)).toThrow(/^workers: must be a positive integer/);
  });

  it('margin errors name the margin field', () => {
    expect(bad((c) => (c.margin = { type: 'sphereface' }))).toThrow(/^margin\.type: unknown margin type "sphereface"/);
    expect(bad((c) => (c.margin = {}))).toThrow(/^margin\.type: missing/);
    expect(bad((c) => (c.margin = { type: 'arcface', s: 'big' }))).toThrow(/^margin\.s: expected a finite number/);
    expect(bad((c) => (c.margin = { type: 'arcface', m3: 0.2 }))).toThrow(/^margin\.m3:/);
    expect(bad((c) => (c.margin = { type: 'arcface', scal: 3 }))).toThrow(/^margin\.scal: unknown field for margin type arcface \(expected s, m1, m2, m3, scale, m, margin, margin_list\)/);
  });

  it('missing fields and bad JSON are named', () => {
    for (const f of ['embeddings', 'labels', 'weight', 'margin']) expect(bad((c) => delete c[f])).toThrow(new RegExp(`^${f}: missing`));
    expect(bad((c) => (c.extra = 1))).toThrow(/^extra: unknown field/);
    expect(bad((c) => (c.embeddings = []))).toThrow(/^embeddings: has no rows/);
    expect(() => parseSelftestCase('{not json', 1)).toThrow(/^case file: not valid JSON/);
    expect(() => parseSelftestCase('[1]', 1)).toThrow(/^case file: expected a JSON object/);
  });
});

describe('official parameter names (arcface_torch, MagFace, CurricularFace)', () => {
  const margin = (m: Record<string, unknown>) => parseSelftestCase({ ...good(), margin: m }, 2);

  it("arcface_torch: margin_list picks the type as CombinedMarginLoss does; scale, m and margin set s and the type's margin", () => {
    expect(margin({ margin_list: [1, 0.5, 0] }).margin).toEqual({ type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 });
    expect(margin({ margin_list: [1, 0, 0.4], scale: 32 }).margin).toEqual({ type: 'cosface', s: 32, m1: 1, m2: 0, m3: 0.4 });
    expect(margin({ margin_list: [1, 0.3, 0.2] }).margin).toEqual({ type: 'combined', s: 64, m1: 1, m2: 0.3, m3: 0.2 });
    expect(margin({ type: 'combined', margin_list: [0.9, 0.4, 0.15] }).margin).toEqual({ type: 'combined', s: 64, m1: 0.9, m2: 0.4, m3: 0.15 });
    expect(margin({ type: 'arcface', s: 30, margin: 0.45 }).margin).toEqual({ type: 'arcface', s: 30, m1: 1, m2: 0.45, m3: 0 });
    expect(margin({ type: 'cosface', m: 0.35 }).margin).toEqual({ type: 'cosface', s: 64, m1: 1, m2: 0, m3: 0.35 });
    // the same value under two names is fine
    expect(margin({ type: 'arcface', s: 48, scale: 48 }).margin.s).toBe(48);
  });

  it('MagFace: scale / arc_scale, l_margin, u_margin, easy_margin', () => {
    const c = margin({ type: 'magface', arc_scale: 64, l_margin: 0.4, u_margin: 0.75, l_a: 10, u_a: 110, lambda_g: 35, easy_margin: false });
    expect(c.head).toEqual({ kind: 'magface', s: 64, la: 10, ua: 110, lm: 0.4, um: 0.75, lambdaG: 35, easyMargin: false });
    expect(margin({ type: 'magface' }).head).toEqual({ kind: 'magface', s: 64, la: 10, ua: 110, lm: 0.45, um: 0.8, lambdaG: 35 }); // easy margin: the official default
    expect(margin({ type: 'magface', easy_margin: true }).head).toMatchObject({ easyMargin: true });
  });

  it('CurricularFace: scale and t_alpha (the EMA weight of t)', () => {
    expect(margin({ type: 'curricular', scale: 32, m: 0.4, t_alpha: 0.05 }).head).toEqual({ kind: 'curricular', s: 32, m: 0.4, emaWeight: 0.05, t: 0 });
  });

  it('conflicting and unknown names are clear errors naming them', () => {
    const err = (m: Record<string, unknown>) => () => margin(m);
    expect(err({ type: 'arcface', s: 64, scale: 32 })).toThrow(/^margin\.scale and margin\.s both set s \(32 vs 64\); give one of them/);
    expect(err({ margin_list: [1, 0.5, 0], m2: 0.4 })).toThrow(/^margin\.m2 and margin\.margin_list both set m2 \(0\.4 vs 0\.5\)/);
    expect(err({ type: 'arcface', m: 0.5, margin: 0.3 })).toThrow(/^margin\.margin and margin\.m both set m2/);
    expect(err({ type: 'magface', l_m: 0.45, l_margin: 0.5 })).toThrow(/^margin\.l_margin and margin\.l_m both set l_m/);
    expect(err({ type: 'magface', scale: 64, arc_scale: 32 })).toThrow(/^margin\.arc_scale and margin\.scale both set s/);
    expect(err({ type: 'curricular', ema_weight: 0.01, t_alpha: 0.02 })).toThrow(/^margin\.t_alpha and margin\.ema_weight both set ema_weight/);
    expect(err({ type: 'combined', m: 0.3 })).toThrow(/^margin\.m: unknown field for margin type combined \(expected s, m1, m2, m3, scale, margin_list\)/);
    expect(err({ type: 'magface', margin_list: [1, 0.5, 0] })).toThrow(/^margin\.margin_list: unknown field for margin type magface/);
    expect(err({ type: 'curricular', easy_margin: false })).toThrow(/^margin\.easy_margin: unknown field for margin type curricular/);
    expect(err({ margin_list: [1, 0.5] })).toThrow(/^margin\.margin_list: expected \[m1, m2, m3\]/);
    expect(err({ margin_list: [1, 'x', 0] })).toThrow(/^margin\.margin_list\[1\]: expected a finite number/);
    expect(err({ type: 'magface', easy_margin: 'no' })).toThrow(/^margin\.easy_margin: expected true or false/);
    expect(err({ type: 'arcface', margin_list: [1, 0.5, 0.2] })).toThrow(/^margin\.m3: arcface has m3 = 0/);
  });
});

describe('generateCase', () => {
  it('is deterministic from the seed and valid', () => {
    const opts = { workers: 3, classes: 7, dim: 5, rowsPerWorker: 2, seed: 4, margin: 'cosface' as const };
    const a = generateCase(opts);
    expect(generateCase(opts)).toEqual(a);
    expect(generateCase({ ...opts, seed: 5 })).not.toEqual(a);
    expect(a.embeddings.length).toBe(6);
    expect(a.weight.length).toBe(7);
    expect(a.margin.m3).toBe(0.4);
    expect(parseSelftestCase(JSON.parse(JSON.stringify({ embeddings: a.embeddings, labels: a.labels, weight: a.weight, margin: a.margin })), 3)).toEqual(a);
    expect(generateCase({ ...opts, margin: { type: 'arcface', m2: 0.3 } }).margin.m2).toBe(0.3);
  });
});
