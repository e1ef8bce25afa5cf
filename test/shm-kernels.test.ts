/**
 * The shared-memory collectives' native copy and sum (src/ops/native/shm.cc)
 * against plain JavaScript loops, bit for bit: streamed (non-temporal) copies at
 * every alignment and length around the 16-byte head and 64-byte body, overlapping
 * copies, and sums in the given order with the second output, a divisor, streaming
 * and out aliasing an input. The cross-process behaviour is collectives-shm.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../src/ops/native/addon.js';
import { bytes, random } from './helpers/random-arrays.js';

const addon = loadAddon();

// Around the streamed body's 64-byte steps and the 2048-element blocks of the sum.
const LENGTHS = [0, 1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 1000, 2047, 2048, 2049, 70_001];

/** inputs[0] ∘ inputs[1] ∘ … left to right, float32 after every step (int32: wrapping), then / divisor once. */
function reference(inputs: (Float32Array | Int32Array)[], op: 'sum' | 'max', divisor: number): Float32Array | Int32Array {
  const int = inputs[0] instanceof Int32Array;
  const out = int ? new Int32Array(inputs[0]!.length) : new Float32Array(inputs[0]!.length);
  for (let i = 0; i < out.length; i++) {
    let v = inputs[0]![i]!;
    for (let j = 1; j < inputs.length; j++) {
      const q = inputs[j]![i]!;
      if (op === 'max') v = q > v || q !== q ? q : v;
      else v = int ? (v + q) | 0 : Math.fround(v + q);
    }
    out[i] = int || divisor === 1 ? v : Math.fround(v / divisor);
  }
  return out;
}

describe('shared-memory kernels (shm.cc)', () => {
  it('shmCopy, streamed or not, equals the source at every element offset of source and destination, and writes nothing outside', () => {
    for (const n of LENGTHS) {
      for (let d = 0; d < 5; d++) {
        for (const s of [0, 1, 3]) {
          for (const stream of [false, true]) {
            const src = random(n + 8, n * 31 + s, false) as Float32Array;
            const dst = new Float32Array(n + 16).fill(-7);
            addon.shmCopy(dst.subarray(d, d + n), src.subarray(s, s + n), stream);
            expect(bytes(dst.subarray(d, d + n)).equals(bytes(src.subarray(s, s + n)))).toBe(true);
            expect([...dst.subarray(0, d), ...dst.subarray(d + n)].every((v) => v === -7)).toBe(true);
          }
        }
      }
    }
  });

  it('shmCopy of overlapping views (streamed or not) behaves like copyWithin', () => {
    for (const [to, from, n] of [
      [0, 5, 70_000],
      [5, 0, 70_000],
      [3, 1, 1000],
    ] as const) {
      for (const stream of [false, true]) {
        const a = random(70_010, to + from, true) as Int32Array;
        const want = a.slice().copyWithin(to, from, from + n);
        addon.shmCopy(a.subarray(to, to + n), a.subarray(from, from + n), stream);
        expect(bytes(a).equals(bytes(want))).toBe(true);
      }
    }
  });

  it('shmCopy rejects views of different byte lengths', () => {
    expect(() => addon.shmCopy(new Float32Array(4), new Float32Array(5), false)).toThrow(/equal byte length/);
  });

  for (const int of [false, true]) {
    it(`${int ? 'int32' : 'float32'} shmReduce: the ordered sum into out and also (streamed or not), also with out aliasing an input`, () => {
      for (const n of LENGTHS) {
        for (const count of [1, 2, 3, 4]) {
          const inputs = Array.from({ length: count }, (_, j) => random(n + 3, n * 7 + j, int).subarray(j % 3, (j % 3) + n));
          for (const divisor of int ? [1] : [1, 3]) {
            const want = bytes(reference(inputs, 'sum', divisor));
            for (const stream of [false, true]) {
              const out = int ? new Int32Array(n + 1).subarray(1) : new Float32Array(n + 1).subarray(1);
              const also = int ? new Int32Array(n) : new Float32Array(n);
              addon.shmReduce(out, inputs, 0, divisor, also, stream);
              expect(bytes(out).equals(want)).toBe(true);
              expect(bytes(also).equals(want)).toBe(true);
            }
            // out = the last input, also = the first (the all-reduce's own slice): every input read before it is written.
            const copies = inputs.map((x) => x.slice());
            addon.shmReduce(copies[count - 1]!, copies, 0, divisor, count > 1 ? copies[0]! : null, true);
            expect(bytes(copies[count - 1]!).equals(want)).toBe(true);
            expect(bytes(copies[0]!).equals(want)).toBe(true);
          }
        }
      }
    });
  }

  it('float32 shmReduce max lets a NaN win from either side', () => {
    const a = Float32Array.of(1, NaN, 3, -0, 5);
    const b = Float32Array.of(NaN, 2, 4, 0, -Infinity);
    const out = new Float32Array(5);
    addon.shmReduce(out, [a, b], 1, 1, null, false);
    expect(bytes(out).equals(bytes(reference([a, b], 'max', 1)))).toBe(true);
    expect(Number.isNaN(out[0]) && Number.isNaN(out[1])).toBe(true);
  });

  it('shmReduce rejects inputs of another length or type', () => {
    expect(() => addon.shmReduce(new Float32Array(4), [new Float32Array(5)], 0, 1)).toThrow(/shmReduce: expected/);
    expect(() => addon.shmReduce(new Float32Array(4), [new Float32Array(4)], 0, 1, new Float32Array(3) as Float32Array)).toThrow(/shmReduce: expected/);
  });
});
