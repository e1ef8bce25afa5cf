/**
 * Encoding and decoding of shardface messages to and from ZeroMQ frames.
 * Tensors are never copied on the way out (frames are views of the caller's
 * arrays) and, when aligned, not on the way in either.
 */
import { Packr } from 'msgpackr';
import { BYTES_PER_ELEMENT, bytesOf, dtypeOf, viewAs, type AnyTypedArray } from './dtype.js';
import { ProtocolError } from './errors.js';
import { PROTOCOL_VERSION, type Bodies, type Header, type Message, type MessageType, type TensorDesc } from './messages.js';
import { checkBody, checkEnvelope, isMessageType, isObj } from './validate.js';

// Plain maps only: no records/structures, so any msgpack implementation can read the header.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

export interface OutTensor {
  name: string;
  data: AnyTypedArray;
  shape?: number[];
}

export interface Envelope {
  job: string;
  step: number;
  rank: number;
}

export function encode<T extends MessageType>(type: T, env: Envelope, body: Bodies[T], tensors: OutTensor[] = []): Uint8Array[] {
  const descs: TensorDesc[] = tensors.map((t) => ({
    name: t.name,
    dtype: dtypeOf(t.data),
    shape: t.shape ?? [t.data.length],
    bytes: t.data.byteLength,
  }));
  const header: Header<T> = { v: PROTOCOL_VERSION, type, job: env.job, step: env.step, rank: env.rank, tensors: descs, body };
  return [packr.pack(header), ...tensors.map((t) => bytesOf(t.data))];
}

export interface DecodeContext {
  /** Expected job id; messages of another job are rejected. */
  job?: string;
  /** Ranks must lie in [-1, world) (-1 = not yet assigned). */
  world?: number;
}

export type DecodeResult = { ok: true; msg: Message } | { ok: false; error: ProtocolError; partial?: Partial<Header> };

/** Decodes and validates a multipart message. Never throws. */
export function decode(frames: Uint8Array[], ctx: DecodeContext = {}): DecodeResult {
  const fail = (code: ProtocolError['code'], message: string, partial?: Partial<Header>): DecodeResult => ({
    ok: false,
    error: new ProtocolError(code, message),
    partial,
  });
  if (frames.length === 0) return fail('undecodable-header', 'empty message');
  let raw: unknown;
  try {
    raw = packr.unpack(frames[0]!);
  } catch (e) {
    return fail('undecodable-header', `frame 0 is not msgpack (${(e as Error).message})`);
  }
  if (!isObj(raw)) return fail('undecodable-header', 'frame 0 is not a msgpack map');
  const partial: Partial<Header> = {
    job: typeof raw.job === 'string' ? raw.job : undefined,
    rank: typeof raw.rank === 'number' ? raw.rank : undefined,
    step: typeof raw.step === 'number' ? raw.step : undefined,
  };
  if (raw.v !== PROTOCOL_VERSION) return fail('version-mismatch', `protocol version ${String(raw.v)} received, this process speaks ${PROTOCOL_VERSION}`, partial);
  if (!isMessageType(raw.type)) return fail('unknown-type', `unknown message type ${JSON.stringify(raw.type)}`, partial);
  const envErr = checkEnvelope(raw);
  if (envErr) return fail('bad-field', envErr, partial);
  const h = raw as unknown as Header;
  if (ctx.job !== undefined && h.job !== ctx.job) return fail('wrong-job', `message for job ${JSON.stringify(h.job)}, this is job ${JSON.stringify(ctx.job)}`, partial);
  if (ctx.world !== undefined && h.rank >= ctx.world) return fail('rank-out-of-range', `rank ${h.rank} out of range for world size ${ctx.world}`, partial);
  const bodyErr = checkBody(h.type, h.body);
  if (bodyErr) return fail('bad-field', `${h.type}: ${bodyErr}`, partial);
  if (frames.length - 1 !== h.tensors.length) return fail('tensor-frame-count', `header describes ${h.tensors.length} tensors but ${frames.length - 1} frames follow`, partial);
  // No prototype: a tensor named "__proto__" or "constructor" is just a name.
  const tensors: Record<string, AnyTypedArray> = Object.create(null) as Record<string, AnyTypedArray>;
  for (let i = 0; i < h.tensors.length; i++) {
    const d = h.tensors[i]!;
    const frame = frames[i + 1]!;
    const elements = d.shape.reduce((a, b) => a * b, 1);
    const expected = elements * BYTES_PER_ELEMENT[d.dtype];
    if (d.bytes !== expected) return fail('tensor-length', `tensor ${d.name}: descriptor says ${d.bytes} bytes but shape ${JSON.stringify(d.shape)} of ${d.dtype} needs ${expected}`, partial);
    if (frame.byteLength !== d.bytes) return fail('tensor-length', `tensor ${d.name}: frame has ${frame.byteLength} bytes, descriptor says ${d.bytes}`, partial);
    tensors[d.name] = viewAs(d.dtype, frame);
  }
  return { ok: true, msg: { header: h, tensors } as Message };
}

/** The bytes a multipart message occupies on the wire, headers and tensor frames together (for traffic metrics). */
export function frameBytes(frames: readonly Uint8Array[]): number {
  let n = 0;
  for (const f of frames) n += f.byteLength;
  return n;
}
