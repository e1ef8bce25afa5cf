import { describe, expect, it } from 'vitest';
import { classRange, localiseLabels, numSampled } from '../src/ops/class-range.js';

describe('classRange', () => {
  it('gives the remainder to the lowest ranks (docs/methods.md#class-ranges)', () => {
    expect([0, 1, 2].map((r) => classRange(7, 3, r))).toEqual([
      { start: 0, count: 3 },
      { start: 3, count: 2 },
      { start: 5, count: 2 },
    ]);
    expect([0, 1, 2, 3].map((r) => classRange(10, 4, r))).toEqual([
      { start: 0, count: 3 },
      { start: 3, count: 3 },
      { start: 6, count: 2 },
      { start: 8, count: 2 },
    ]);
  });

  it('tiles [0, C) exactly, with empty shards when C < n', () => {
    for (const [c, n] of [
      [1, 1],
      [5, 5],
      [3, 5],
      [100, 7],
      [1_000_003, 8],
    ] as const) {
      let next = 0;
      for (let r = 0; r < n; r++) {
        const { start, count } = classRange(c, n, r);
        expect(start).toBe(next);
        expect(count).toBeGreaterThanOrEqual(Math.floor(c / n));
        next = start + count;
      }
      expect(next).toBe(c);
    }
    expect(classRange(3, 5, 4)).toEqual({ start: 3, count: 0 });
  });

  it('rejects bad arguments', () => {
    expect(() => classRange(7, 0, 0)).toThrow(/world/);
    expect(() => classRange(7, 3, 3)).toThrow(/rank/);
    expect(() => classRange(-1, 3, 0)).toThrow(/numClasses/);
  });
});

describe('localiseLabels', () => {
  it('maps owned labels to local rows and the rest to -1', () => {
    const y = Int32Array.from([1, 4, 5, 0]);
    expect(Array.from(localiseLabels(y, classRange(6, 2, 0)))).toEqual([1, -1, -1, 0]);
    expect(Array.from(localiseLabels(y, classRange(6, 2, 1)))).toEqual([-1, 1, 2, -1]);
  });
});

describe('numSampled', () => {
  it('is ceil(rate · count), guarded against float noise, capped at count', () => {
    expect(numSampled(0.3, 10)).toBe(3); // 0.3·10 = 3.0000000000000004
    expect(numSampled(0.29, 100)).toBe(29); // 28.999999999999996 → ceil 29 (the reference truncates to 28)
    expect(numSampled(0.2, 77246)).toBe(15450); // 15449.2 → 15450 (reference: 15449)
    expect(numSampled(0.4, 10)).toBe(4);
    expect(numSampled(0.1, 3)).toBe(1);
    expect(numSampled(1, 12)).toBe(12);
    expect(numSampled(0.5, 0)).toBe(0);
  });
  it('rejects a non-positive rate', () => {
    expect(() => numSampled(0, 10)).toThrow(/sampleRate/);
    expect(() => numSampled(NaN, 10)).toThrow(/sampleRate/);
  });
});
