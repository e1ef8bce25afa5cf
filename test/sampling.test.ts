import { describe, expect, it } from 'vitest';
import { sampleClasses, sampleClassesFromUniforms } from '../src/ops/sampling.js';
import { Rng } from '../src/common/random.js';

function checkSample(localLabels: Int32Array, count: number, numSample: number, index: Int32Array, labels: Int32Array): void {
  const positives = new Set(Array.from(localLabels).filter((y) => y >= 0));
  expect(index.length).toBe(Math.min(count, Math.max(numSample, positives.size)));
  let ascending = true;
  for (let i = 1; i < index.length; i++) if (!(index[i]! > index[i - 1]!)) ascending = false;
  expect(ascending).toBe(true);
  if (index.length > 0) {
    expect(index[0]!).toBeGreaterThanOrEqual(0);
    expect(index[index.length - 1]!).toBeLessThan(count);
  }
  const members = new Set(index);
  for (const p of positives) expect(members.has(p)).toBe(true);
  localLabels.forEach((y, i) => {
    if (y < 0) expect(labels[i]).toBe(-1);
    else expect(index[labels[i]!]).toBe(y);
  });
}

describe('sampleClassesFromUniforms (docs/methods.md#partial-fc-test-vectors, vector B)', () => {
  it('keeps the positives and the largest u', () => {
    const u = [0.91, 0.15, 0.42, 0.77, 0.05, 0.63, 0.38, 0.29, 0.88, 0.51];
    const r = sampleClassesFromUniforms(Int32Array.from([7, -1, 2, 7, -1]), 10, 4, u);
    expect(Array.from(r.index)).toEqual([0, 2, 7, 8]);
    expect(Array.from(r.labels)).toEqual([2, -1, 1, 2, -1]);
  });
  it('keeps every positive when they outnumber numSample', () => {
    const r = sampleClassesFromUniforms(Int32Array.from([0, 3, 5, 9, 1]), 10, 4, new Array(10).fill(0.5));
    expect(Array.from(r.index)).toEqual([0, 1, 3, 5, 9]);
    expect(Array.from(r.labels)).toEqual([0, 2, 3, 4, 1]);
  });
});

describe('sampleClasses (seeded)', () => {
  it('docs/methods.md#partial-fc-test-vectors, vector B second case: more positives than numSample', () => {
    const r = sampleClasses(Int32Array.from([0, 3, 5, 9, 1]), 10, 4, new Rng(1));
    expect(Array.from(r.index)).toEqual([0, 1, 3, 5, 9]);
    expect(Array.from(r.labels)).toEqual([0, 2, 3, 4, 1]);
  });

  it('docs/methods.md#partial-fc-test-vectors, vector B first case: positives kept, max(numSample, |P|) rows, labels remapped', () => {
    const y = Int32Array.from([7, -1, 2, 7, -1]);
    for (let seed = 0; seed < 50; seed++) {
      const r = sampleClasses(y, 10, 4, new Rng(seed));
      checkSample(y, 10, 4, r.index, r.labels);
    }
  });

  it('every positive is present; size is exactly max(numSample, |P|) (random cases)', () => {
    const rng = new Rng(42);
    for (let trial = 0; trial < 300; trial++) {
      const count = 1 + rng.int(200);
      const n = rng.int(40);
      const y = new Int32Array(n);
      for (let i = 0; i < n; i++) y[i] = rng.next() < 0.3 ? -1 : rng.int(count);
      const numSample = rng.int(count + 5);
      const r = sampleClasses(y, count, numSample, new Rng(trial));
      checkSample(y, count, numSample, r.index, r.labels);
    }
  });

  it('all rows, identity, when numSample ≥ count', () => {
    const y = Int32Array.from([3, -1, 0]);
    const r = sampleClasses(y, 5, 5, new Rng(3));
    expect(Array.from(r.index)).toEqual([0, 1, 2, 3, 4]);
    expect(Array.from(r.labels)).toEqual([3, -1, 0]);
  });

  it('is deterministic from the seed and varies with it', () => {
    const y = Int32Array.from([5, 17, -1, 99]);
    const a = sampleClasses(y, 1000, 100, new Rng(7));
    const b = sampleClasses(y, 1000, 100, new Rng(7));
    const c = sampleClasses(y, 1000, 100, new Rng(8));
    expect(Array.from(a.index)).toEqual(Array.from(b.index));
    expect(Array.from(a.index)).not.toEqual(Array.from(c.index));
  });

  it('draws negatives uniformly (each negative sampled with probability ≈ (k − |P|)/(count − |P|))', () => {
    const y = Int32Array.from([2, 5]);
    const hits = new Float64Array(10);
    const trials = 20000;
    for (let t = 0; t < trials; t++) for (const i of sampleClasses(y, 10, 5, new Rng(t)).index) hits[i]! += 1;
    expect(hits[2]).toBe(trials);
    expect(hits[5]).toBe(trials);
    for (const j of [0, 1, 3, 4, 6, 7, 8, 9]) expect(Math.abs(hits[j]! / trials - 3 / 8)).toBeLessThan(0.02);
    // dense regime (byte map path): 90% of the negatives
    const dense = new Float64Array(50);
    for (let t = 0; t < 4000; t++) for (const i of sampleClasses(Int32Array.from([10]), 50, 45, new Rng(t)).index) dense[i]! += 1;
    for (let j = 0; j < 50; j++) if (j !== 10) expect(Math.abs(dense[j]! / 4000 - 44 / 49)).toBeLessThan(0.03);
  });

  it('is quick for a million-class shard', () => {
    const rng = new Rng(9);
    const y = new Int32Array(512);
    for (let i = 0; i < y.length; i++) y[i] = rng.int(1_000_000);
    for (const k of [100_000, 900_000]) {
      const t0 = performance.now();
      const r = sampleClasses(y, 1_000_000, k, new Rng(k));
      const ms = performance.now() - t0;
      console.log(`sampleClasses(count 1e6, k ${k}): ${ms.toFixed(1)} ms`);
      checkSample(y, 1_000_000, k, r.index, r.labels);
      expect(ms).toBeLessThan(1000);
    }
  });
});
