import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { decode, encode, PROTOCOL_VERSION } from '../src/protocol/index.js';

const env = { job: 'j1', step: 3, rank: 1 };
const packr = new Packr({ useRecords: false });

describe('protocol codec', () => {
  it('round-trips a message with tensors, sharing memory on the way out', () => {
    const data = new Float32Array([1, 2, 3, 4.5]);
    const owned = new Uint8Array([1, 0, 1, 0]);
    const frames = encode('softmax-stats', env, { rows: 4, batch: 2 }, [
      { name: 'rowMax', data },
      { name: 'owned', data: owned },
    ]);
    expect(frames).toHaveLength(3);
    expect(frames[1]!.buffer).toBe(data.buffer); // no copy
    const r = decode(
      frames.map((f) => Buffer.from(f)),
      { job: 'j1', world: 2 },
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.msg.header.type).toBe('softmax-stats');
    expect(Array.from(r.msg.tensors.rowMax!)).toEqual([1, 2, 3, 4.5]);
    expect(r.msg.tensors.owned).toBeInstanceOf(Uint8Array);
  });

  it('realigns an unaligned tensor frame instead of failing', () => {
    const frames = encode('ring', env, { op: 'x', seq: 0, chunk: 0, slot: 0 }, [{ name: 'data', data: new Float32Array([7, 8]) }]);
    const unaligned = new Uint8Array(new ArrayBuffer(9), 1, 8);
    unaligned.set(frames[1]!);
    const r = decode([frames[0]!, unaligned]);
    expect(r.ok && Array.from(r.msg.tensors.data!)).toEqual([7, 8]);
  });

  const cases: [string, () => Uint8Array[], string][] = [
    ['garbage header', () => [new Uint8Array([0xc1, 0xff, 0x00])], 'undecodable-header'],
    ['header not a map', () => [packr.pack([1, 2, 3])], 'undecodable-header'],
    ['empty message', () => [], 'undecodable-header'],
    ['version mismatch', () => [packr.pack({ v: PROTOCOL_VERSION + 1, type: 'heartbeat', job: 'j1', step: 0, rank: 0, tensors: [], body: {} })], 'version-mismatch'],
    ['unknown type', () => [packr.pack({ v: PROTOCOL_VERSION, type: 'teleport', job: 'j1', step: 0, rank: 0, tensors: [], body: {} })], 'unknown-type'],
    ['bad body field', () => [packr.pack({ v: PROTOCOL_VERSION, type: 'bye', job: 'j1', step: 0, rank: 0, tensors: [], body: { reason: 3, ok: true } })], 'bad-field'],
    ['negative step', () => [packr.pack({ v: PROTOCOL_VERSION, type: 'heartbeat', job: 'j1', step: -1, rank: 0, tensors: [], body: {} })], 'bad-field'],
    ['wrong job', () => encode('heartbeat', { ...env, job: 'other' }, {}), 'wrong-job'],
    ['rank out of range', () => encode('heartbeat', { ...env, rank: 5 }, {}), 'rank-out-of-range'],
    ['missing tensor frame', () => encode('ring', env, { op: 'x', seq: 0, chunk: 0, slot: 0 }, [{ name: 'data', data: new Float32Array(3) }]).slice(0, 1), 'tensor-frame-count'],
    [
      'frame shorter than descriptor',
      () => {
        const f = encode('ring', env, { op: 'x', seq: 0, chunk: 0, slot: 0 }, [{ name: 'data', data: new Float32Array(3) }]);
        return [f[0]!, f[1]!.subarray(0, 8)];
      },
      'tensor-length',
    ],
    [
      'descriptor bytes disagree with shape',
      () => [
        packr.pack({
          v: PROTOCOL_VERSION,
          type: 'ring',
          job: 'j1',
          step: 0,
          rank: 0,
          tensors: [{ name: 'data', dtype: 'float32', shape: [3], bytes: 8 }],
          body: { op: 'x', seq: 0, chunk: 0, slot: 0 },
        }),
        new Uint8Array(8),
      ],
      'tensor-length',
    ],
    [
      'unknown dtype',
      () => [
        packr.pack({
          v: PROTOCOL_VERSION,
          type: 'ring',
          job: 'j1',
          step: 0,
          rank: 0,
          tensors: [{ name: 'data', dtype: 'complex64', shape: [1], bytes: 8 }],
          body: { op: 'x', seq: 0, chunk: 0, slot: 0 },
        }),
        new Uint8Array(8),
      ],
      'bad-field',
    ],
  ];
  for (const [name, frames, code] of cases) {
    it(`rejects ${name} with ${code}`, () => {
      const r = decode(frames(), { job: 'j1', world: 2 });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe(code);
    });
  }
});
