/**
 * Tensors on disk in the safetensors layout (8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range, then
 * the raw little-endian bytes), so checkpoints open in other tools too.
 * Metadata strings ride in `__metadata__`.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export type StoredArray = Float32Array | Int32Array | Uint8Array | Float64Array;
export interface StoredTensor {
  data: StoredArray;
  shape: number[];
}

const CODES = new Map<string, string>([
  ['Float32Array', 'F32'],
  ['Int32Array', 'I32'],
  ['Uint8Array', 'U8'],
  ['Float64Array', 'F64'],
]);

export function encodeTensorFile(tensors: Record<string, StoredTensor>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name]!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`tensor ${name}: shape ${JSON.stringify(t.shape)} does not match ${t.data.length} values`);
    header[name] = { dtype: CODES.get(t.data.constructor.name), shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keep the data 8-byte aligned
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.allocUnsafe(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let p = 8 + head.length;
  for (const name of names) {
    const d = tensors[name]!.data;
    Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out, p);
    p += d.byteLength;
  }
  return out;
}

export function decodeTensorFile(buf: Buffer, source = 'tensor file'): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  if (buf.length < 8) throw new Error(`${source}: truncated (no header)`);
  const len = Number(buf.readBigUInt64LE(0));
  if (8 + len > buf.length) throw new Error(`${source}: truncated (header of ${len} bytes, file of ${buf.length})`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
  } catch (e) {
    throw new Error(`${source}: corrupt header (${(e as Error).message})`);
  }
  const base = 8 + len;
  const tensors: Record<string, StoredTensor> = {};
  let metadata: Record<string, string> = {};
  for (const [name, d] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = d as unknown as Record<string, string>;
      continue;
    }
    const [b, e] = d.data_offsets;
    if (base + e > buf.length || b > e) throw new Error(`${source}: tensor ${name} lies outside the file (truncated?)`);
    const bytes = new Uint8Array(e - b);
    bytes.set(buf.subarray(base + b, base + e));
    const Ctor = { F32: Float32Array, I32: Int32Array, U8: Uint8Array, F64: Float64Array }[d.dtype];
    if (!Ctor) throw new Error(`${source}: tensor ${name} has unsupported dtype ${d.dtype}`);
    const data = new Ctor(bytes.buffer, 0, bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
    if (data.length !== d.shape.reduce((x, y) => x * y, 1)) throw new Error(`${source}: tensor ${name} has ${data.length} values for shape ${JSON.stringify(d.shape)}`);
    tensors[name] = { data, shape: d.shape };
  }
  return { tensors, metadata };
}

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Writes atomically (temp file + rename) and returns the file's SHA-256. */
export function writeTensorFile(path: string, tensors: Record<string, StoredTensor>, metadata: Record<string, string> = {}): { sha256: string; bytes: number } {
  const buf = encodeTensorFile(tensors, metadata);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path + '.tmp', buf);
  renameSync(path + '.tmp', path);
  return { sha256: sha256(buf), bytes: buf.length };
}

export function readTensorFile(path: string, expectSha256?: string): ReturnType<typeof decodeTensorFile> {
  const buf = readFileSync(path);
  if (expectSha256 && sha256(buf) !== expectSha256) throw new Error(`${path}: checksum mismatch (file corrupt or replaced)`);
  return decodeTensorFile(buf, path);
}
