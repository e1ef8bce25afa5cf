/**
 * The ring's arithmetic (WebAssembly SIMD where available, scalar loops
 * otherwise) equals plain float32/int32 loops bit for bit, including the tails
 * that do not fill a SIMD lane or a slice.
 */
import { describe, expect, it } from 'vitest';
import { kernelsFor } from '../src/collectives/reduce.js';
import { SLICE } from '../src/collectives/simd.js';
import { bytes, random } from './helpers/random-arrays.js';

const LENGTHS = [0, 1, 3, 4, 5, 255, 256, 257, 1000, SLICE - 1, SLICE, SLICE + 5, 3 * SLICE + 7];

describe('ring kernels', () => {
  for (const int of [false, true]) {
    it(`${int ? 'int32' : 'float32'} sum: combine and finishInto (also with out = own) equal plain loops`, () => {
      for (const n of LENGTHS) {
        const acc = random(n, n + 1, int);
        const own = random(n, n + 2, int);
        const want = acc.slice();
        for (let i = 0; i < n; i++) want[i] = int ? (want[i]! + own[i]!) | 0 : want[i]! + own[i]!;
        const k = kernelsFor(acc, 'sum');
        const a1 = acc.slice();
        k.combine(a1, own);
        expect(bytes(a1).equals(bytes(want)), `combine n=${n}`).toBe(true);
        const a2 = acc.slice();
        const o2 = own.slice();
        k.finishInto(o2, a2, o2, 1);
        expect(bytes(o2).equals(bytes(want)), `finishInto own n=${n}`).toBe(true);
        const out = int ? new Int32Array(n) : new Float32Array(n);
        k.finishInto(out, acc.slice(), own, 1);
        expect(bytes(out).equals(bytes(want)), `finishInto n=${n}`).toBe(true);
      }
    });
  }

  it('float32 mean divides the float32 sum once', () => {
    for (const n of LENGTHS) {
      const acc = random(n, 7 * n + 1, false) as Float32Array;
      const own = random(n, 7 * n + 2, false) as Float32Array;
      const want = new Float32Array(n);
      for (let i = 0; i < n; i++) want[i] = Math.fround(acc[i]! + own[i]!) / 3;
      const a = acc.slice();
      const o = own.slice();
      kernelsFor(a, 'mean').finishInto(o, a, o, 3);
      expect(bytes(o).equals(bytes(want)), `n=${n}`).toBe(true);
    }
  });

  it('max propagates NaN from either side', () => {
    const k = kernelsFor(new Float32Array(0), 'max');
    const acc = new Float32Array([1, NaN, 3, -1]);
    k.combine(acc, new Float32Array([2, 0, NaN, -2]));
    expect([...acc].map(String)).toEqual(['2', 'NaN', 'NaN', '-1']);
  });
});
