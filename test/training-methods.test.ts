/**
 * The seam between the training loop and its methods: the registry's choice
 * and its errors, the job-wide state a method declares for the coordinator,
 * and the config type derived from the key table. (Real runs of every method
 * through the CLI: train-run, dcq, occlusion-train, distill, loss-heads-train.)
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { METHOD_NAMES, methodEntry, methodJobState, methodName } from '../src/worker/methods/registry.js';
import { CURRICULAR_T, curricularJobState } from '../src/ops/job-state.js';
import { CONFIG_KEYS, type MarginType, type TrainConfig } from '../src/config/schema.js';
import { resolveConfig } from '../src/config/index.js';

const base = { classifier: 'fc', occlusion: 'none', loss: 'margin', curricular: { t: 0, emaWeight: 0.01 } } as const;

describe('training method registry', () => {
  it('names the known methods for an unknown one', () => {
    expect(() => methodEntry('arcface-v9')).toThrow('unknown training method "arcface-v9"; known methods: fc, dcq, occlusion');
    for (const name of METHOD_NAMES) expect(typeof methodEntry(name).load).toBe('function');
  });

  it('picks fc, dcq or occlusion from the config, and refuses occlusion over DCQ', () => {
    expect(methodName(base)).toBe('fc');
    expect(methodName({ ...base, classifier: 'dcq' })).toBe('dcq');
    expect(methodName({ ...base, occlusion: 'adversarial' })).toBe('occlusion');
    expect(() => methodName({ ...base, classifier: 'dcq', occlusion: 'adversarial' })).toThrow(/occlusion adversarial needs the sharded classifier/);
  });

  it('each method module loads and builds a class with the interface', async () => {
    for (const name of METHOD_NAMES) {
      const Method = await methodEntry(name).load();
      for (const m of ['step', 'checkpoint', 'dispose']) expect(typeof Method.prototype[m as keyof typeof Method.prototype], `${name}.${m}`).toBe('function');
    }
  });
});

describe('job-wide state for the coordinator', () => {
  it('only CurricularFace declares one; its update is the EMA of the batch mean, applied step by step', () => {
    expect(methodJobState(base)).toBeUndefined();
    expect(methodJobState({ ...base, classifier: 'dcq', loss: 'curricular' })).toBeUndefined();
    const r = methodJobState({ ...base, loss: 'curricular', curricular: { t: 0.2, emaWeight: 0.25 } })!;
    expect(r.input).toBe('target-cosines');
    expect(r.initial).toEqual({ [CURRICULAR_T]: 0.2 });
    const s1 = r.update(r.initial, { meanTargetCos: 0.6 });
    expect(s1[CURRICULAR_T]).toBeCloseTo(0.25 * 0.6 + 0.75 * 0.2, 15);
    expect(r.update(s1, { meanTargetCos: -0.2 })[CURRICULAR_T]).toBeCloseTo(0.25 * -0.2 + 0.75 * 0.3, 15);
    expect(r.initial[CURRICULAR_T]).toBe(0.2); // pure: the old state is untouched
    expect(methodJobState({ ...base, occlusion: 'adversarial', loss: 'curricular' })?.input).toBe('target-cosines');
  });

  it('refuses a non-finite t or an EMA weight outside [0, 1], naming the key', () => {
    expect(() => curricularJobState({ t: Number.NaN, emaWeight: 0.01 })).toThrow(/curricular\.t/);
    expect(() => curricularJobState({ t: 0, emaWeight: 1.5 })).toThrow(/curricular\.emaWeight/);
  });
});

describe('TrainConfig is computed from the key table', () => {
  it("has every flat key and every dotted group, with the enums' own values", () => {
    expectTypeOf<TrainConfig['margin']['type']>().toEqualTypeOf<MarginType>();
    expectTypeOf<TrainConfig['margin']['m2']>().toEqualTypeOf<number>();
    expectTypeOf<TrainConfig['dcq']['queueSize']>().toEqualTypeOf<number>();
    expectTypeOf<TrainConfig['augment']>().toEqualTypeOf<{ cropScale: number; colourJitter: number; occluders: number; grey: number }>();
    expectTypeOf<TrainConfig['classifier']>().toEqualTypeOf<'fc' | 'dcq'>();
    expectTypeOf<TrainConfig['flip']>().toEqualTypeOf<boolean>();
    expectTypeOf<TrainConfig['data']>().toEqualTypeOf<string>();
    // and the resolved defaults have exactly the table's keys, nested by group
    const cfg = resolveConfig({});
    const flat = Object.entries(cfg).flatMap(([k, v]) => (typeof v === 'object' && v !== null ? Object.keys(v).map((s) => `${k}.${s}`) : [k]));
    expect(flat.sort()).toEqual(Object.keys(CONFIG_KEYS).sort());
  });
});
