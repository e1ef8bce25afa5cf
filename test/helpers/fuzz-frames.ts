/**
 * fast-check arbitraries of hostile multipart messages: real, valid frames of
 * every message type, and mutations of them — wrong version or type, fields
 * of the wrong type, huge or negative declared lengths, truncated or missing
 * or extra tensor frames, junk msgpack and plain random bytes.
 */
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { encode, MESSAGE_TYPES, PROTOCOL_VERSION, type Bodies, type MessageType } from '../../src/protocol/index.js';

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** One valid message of each type (bodies as real senders fill them). */
export function validMessages(job: string): Uint8Array[][] {
  const env = (rank: number, step = 1) => ({ job, step, rank });
  const rows = new Float32Array(8).fill(0.5);
  const bodies: { [T in MessageType]: [Bodies[T], { name: string; data: Float32Array | Uint8Array | Int32Array }[]] } = {
    hello: [{ host: 'h', pid: 1, token: 'guess', dataAddress: 'tcp://127.0.0.1:1', device: 'cpu', backend: 'cpu', curveKey: '' }, []],
    welcome: [
      {
        rank: 0,
        world: 2,
        peers: ['a', 'b'],
        hosts: ['a', 'b'],
        peerKeys: ['', ''],
        session: 's',
        ringIds: { send: 'x', accept: 'y' },
        classRange: { start: 0, count: 5 },
        numClasses: 10,
        heartbeatMs: 100,
        seed: 1,
        config: {},
      },
      [],
    ],
    ready: [{ backend: 'cpu', device: 'cpu', threads: 1, reason: 'r' }, []],
    heartbeat: [{ session: '00' }, []],
    'step-begin': [{ kind: 'train', checkpoint: true }, []],
    checkpoint: [{}, []],
    'softmax-stats': [
      { rows: 8, batch: 4 },
      [
        { name: 'rowMax', data: rows },
        { name: 'sumExp', data: rows },
        { name: 'target', data: rows },
        { name: 'owned', data: new Uint8Array(8) },
      ],
    ],
    'softmax-reduced': [{ loss: 1, extras: {} }, [{ name: 'logSumExp', data: rows }]],
    'target-stats': [
      { rows: 8, batch: 4 },
      [
        { name: 'targetCos', data: rows },
        { name: 'owned', data: new Uint8Array(8) },
      ],
    ],
    'target-reduced': [{ extras: { curricularT: 0.1 } }, [{ name: 'targetCos', data: rows }]],
    'step-end': [{ metrics: { loss: 1 } }, []],
    bye: [{ reason: 'r', ok: false }, []],
    stop: [{ reason: 'r', ok: false }, []],
    error: [{ code: 'c', message: 'm' }, []],
    ring: [{ op: 'allreduce', seq: 1, chunk: 0, slot: 8 }, [{ name: 'data', data: rows }]],
    event: [{ name: 'checkpoint-file', fields: { step: 1 } }, []],
  };
  const out: Uint8Array[][] = [];
  for (const t of MESSAGE_TYPES) for (const rank of [-1, 0, 1]) out.push(encode(t, env(rank), bodies[t][0] as never, bodies[t][1]));
  return out;
}

const junkValue = fc.oneof(
  fc.anything({ maxDepth: 2, maxKeys: 4 }),
  fc.constantFrom(Number.MAX_SAFE_INTEGER, -1, 2 ** 53, -(2 ** 31), 1e308, NaN, Infinity, -0, 0.5),
  fc.string({ maxLength: 40 }),
  fc.uint8Array({ maxLength: 64 }),
);

type Header = Record<string, unknown> & { tensors?: Record<string, unknown>[]; body?: Record<string, unknown> };

/** Mutations of one header object. */
const headerMutation: fc.Arbitrary<(h: Header) => void> = fc.oneof(
  junkValue.map((v) => (h: Header) => void (h.v = v)),
  fc.constantFrom(PROTOCOL_VERSION + 1, 0, '1').map((v) => (h: Header) => void (h.v = v)),
  fc.oneof(fc.constantFrom(...MESSAGE_TYPES), junkValue).map((v) => (h: Header) => void (h.type = v)),
  junkValue.map((v) => (h: Header) => void (h.job = v)),
  junkValue.map((v) => (h: Header) => void (h.step = v)),
  fc.oneof(junkValue, fc.integer({ min: -3, max: 5 })).map((v) => (h: Header) => void (h.rank = v)),
  junkValue.map((v) => (h: Header) => void (h.body = v as never)),
  fc.tuple(fc.string({ maxLength: 12 }), junkValue).map(([k, v]) => (h: Header) => {
    if (h.body && typeof h.body === 'object' && !ArrayBuffer.isView(h.body)) (h.body as Record<string, unknown>)[k || 'x'] = v;
  }),
  // tensor descriptors: huge declared lengths, shapes that disagree, unknown dtypes, junk
  fc
    .tuple(fc.constantFrom('bytes', 'shape', 'dtype', 'name'), fc.oneof(junkValue, fc.constantFrom(2 ** 40, 2 ** 31, -4, [2 ** 20, 2 ** 20], [-1], 'float16', '__proto__', 'constructor')))
    .map(([k, v]) => (h: Header) => {
      const t0: unknown = Array.isArray(h.tensors) ? h.tensors[0] : undefined;
      if (typeof t0 === 'object' && t0 !== null) (t0 as Record<string, unknown>)[k] = v;
      else h.tensors = [{ name: 'data', dtype: 'float32', shape: [1], bytes: 4, [k]: v }];
    }),
  junkValue.map((v) => (h: Header) => void (h.tensors = v as never)),
  fc.constant((h: Header) => void delete h[['v', 'type', 'job', 'step', 'rank', 'tensors', 'body'][Object.keys(h).length % 7]!]),
);

/** Mutations of the frame list around a (possibly mutated) header. */
const frameMutation: fc.Arbitrary<(frames: Uint8Array[]) => Uint8Array[]> = fc.oneof(
  fc.constant((f: Uint8Array[]) => f),
  fc.nat(64).map((n) => (f: Uint8Array[]) => (f.length > 1 ? [f[0]!, f[1]!.subarray(0, Math.min(n, f[1]!.length - 1)), ...f.slice(2)] : f)), // truncated tensor
  fc.constant((f: Uint8Array[]) => f.slice(0, -1)), // a frame missing
  fc.uint8Array({ maxLength: 64 }).map((extra) => (f: Uint8Array[]) => [...f, extra]), // a frame too many
  fc.nat(7).map((n) => (f: Uint8Array[]) => [f[0]!.subarray(0, Math.max(0, f[0]!.length - 1 - n)), ...f.slice(1)]), // truncated header
  fc.tuple(fc.nat(), fc.nat(255)).map(([i, b]) => (f: Uint8Array[]) => {
    const h = new Uint8Array(f[0]!);
    if (h.length) h[i % h.length] = b; // one flipped byte in the msgpack
    return [h, ...f.slice(1)];
  }),
);

/** Hostile messages for a receiver of job `job`: mutated real frames, junk msgpack and random bytes. */
export function hostileMessages(job: string): fc.Arbitrary<Uint8Array[]> {
  const valid = validMessages(job);
  const mutated = fc.tuple(fc.constantFrom(...valid), fc.array(headerMutation, { minLength: 1, maxLength: 3 }), frameMutation).map(([frames, muts, fm]) => {
    const h = packr.unpack(frames[0]!) as Header;
    for (const m of muts) m(h);
    let head: Uint8Array;
    try {
      head = packr.pack(h);
    } catch {
      head = frames[0]!;
    }
    return fm([head, ...frames.slice(1)]);
  });
  const junkMsgpack = fc.array(junkValue, { minLength: 1, maxLength: 3 }).map((vs) => vs.map((v) => packr.pack(v)));
  const randomBytes = fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 4 });
  const validAsIs = fc.constantFrom(...valid).chain((f) => frameMutation.map((m) => m(f)));
  return fc.oneof({ weight: 6, arbitrary: mutated }, { weight: 2, arbitrary: junkMsgpack }, { weight: 1, arbitrary: randomBytes }, { weight: 1, arbitrary: validAsIs });
}
