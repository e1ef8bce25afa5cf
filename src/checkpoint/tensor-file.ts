/**
 * Tensors on disk in the safetensors layout (8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range, then
 * the raw little-endian bytes), so checkpoints open in other tools too.
 * Metadata strings ride in `__metadata__`.
 *
 * Files are written and read as streams, a bounded piece at a time, hashing
 * as they go: a classifier shard is C/n × D floats plus optimizer state and can
 * pass 4 GiB, which no single Buffer can hold. A write goes to `NAME.tmp`, is
 * fsynced, then renamed over NAME (and the directory fsynced), so a crash or a
 * full disk leaves either the old file or the new one, never half of one.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, rmSync, fstatSync } from 'node:fs';
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ioFailure } from '../common/atomic-file.js';

export type StoredArray = Float32Array | Int32Array | Uint8Array | Float64Array;
export interface StoredTensor {
  data: StoredArray;
  shape: number[];
}

/** A tensor written from pieces (e.g. the rows of several shards), so it never has to exist in memory whole. */
export interface PiecewiseTensor {
  dtype: DType;
  shape: number[];
  /** Yields the tensor's values in order; their byte lengths must add up to the shape's. */
  pieces: () => Iterable<StoredArray>;
}

export type DType = 'F32' | 'I32' | 'U8' | 'F64';
const CTORS = { F32: Float32Array, I32: Int32Array, U8: Uint8Array, F64: Float64Array } as const;
const BYTES: Record<DType, number> = { F32: 4, I32: 4, U8: 1, F64: 8 };

/** The largest piece moved by one read or write call (also bounds the temporary memory of a read). */
const IO_PIECE = 64 * 2 ** 20;
/**
 * The piece of a write hashed while it is in flight: small enough that the
 * hash of one piece and its write overlap for most of a tensor, large enough
 * that the calls' overhead stays negligible.
 */
const WRITE_PIECE = 4 * 2 ** 20;

/** An I/O failure while writing or reading a checkpoint file, with a one-line message that names the file and the cause. */
export class TensorFileError extends Error {
  override name = 'TensorFileError';
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

function dtypeOf(a: StoredArray): DType {
  if (a instanceof Float32Array) return 'F32';
  if (a instanceof Int32Array) return 'I32';
  if (a instanceof Float64Array) return 'F64';
  return 'U8';
}

function bytesOf(a: ArrayBufferView, start = 0, end = a.byteLength): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + start, end - start);
}

interface HeaderEntry {
  dtype: DType;
  shape: number[];
  data_offsets: [number, number];
}

type AnyTensor = StoredTensor | PiecewiseTensor;
const isPiecewise = (t: AnyTensor): t is PiecewiseTensor => 'pieces' in t;

function headerOf(tensors: Record<string, AnyTensor>, metadata: Record<string, string>): { head: Buffer; names: string[]; dataBytes: number } {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name]!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const dtype = isPiecewise(t) ? t.dtype : dtypeOf(t.data);
    if (!isPiecewise(t) && n !== t.data.length) throw new Error(`tensor ${name}: shape ${JSON.stringify(t.shape)} does not match ${t.data.length} values`);
    const bytes = n * BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keep the data 8-byte aligned
  const body = Buffer.from(json, 'utf8');
  const head = Buffer.allocUnsafe(8 + body.length);
  head.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(head, 8);
  return { head, names, dataBytes: offset };
}

function ioError(verb: 'write' | 'read', path: string, e: unknown): TensorFileError {
  if (e instanceof TensorFileError) return e;
  return new TensorFileError(ioFailure(verb, path, e), (e as NodeJS.ErrnoException).code);
}

/** fsync of a directory, so a rename inside it survives a power loss; not every file system allows it. */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Writes `path` atomically and durably; resolves to its SHA-256 and size. On
 * any failure the temp file is removed, a previous `path` is left untouched,
 * and a TensorFileError says which file and why.
 *
 * Each piece's write is issued before the piece is hashed: the write runs on
 * libuv's thread pool while SHA-256 runs here on the main thread, so the hash
 * costs little beyond the write itself. Tensors are written from their own
 * memory (no copy), and the file is fsynced once, at the end.
 */
export async function writeTensorFile(path: string, tensors: Record<string, AnyTensor>, metadata: Record<string, string> = {}): Promise<{ sha256: string; bytes: number }> {
  const { head, names, dataBytes } = headerOf(tensors, metadata);
  const tmp = path + '.tmp';
  const hash = createHash('sha256');
  let file: FileHandle | undefined;
  try {
    await mkdir(dirname(path), { recursive: true });
    file = await open(tmp, 'w');
    await writeHashed(file, head, hash);
    for (const name of names) {
      const t = tensors[name]!;
      const want = t.shape.reduce((a, b) => a * b, 1) * BYTES[isPiecewise(t) ? t.dtype : dtypeOf(t.data)];
      let wrote = 0;
      for (const piece of isPiecewise(t) ? t.pieces() : [t.data]) {
        await writeHashed(file, bytesOf(piece), hash);
        wrote += piece.byteLength;
      }
      if (wrote !== want) throw new TensorFileError(`cannot write ${path}: tensor ${name} got ${wrote} bytes for shape ${JSON.stringify(t.shape)} (${want} expected)`);
    }
    await file.sync();
    await file.close();
    file = undefined;
    await rename(tmp, path);
  } catch (e) {
    if (file !== undefined) await file.close().catch(() => undefined);
    rmSync(tmp, { force: true });
    throw ioError('write', path, e);
  }
  fsyncDir(dirname(path));
  return { sha256: hash.digest('hex'), bytes: head.length + dataBytes };
}

/** Writes `bytes` at the file's position a piece at a time, hashing each piece while its write is in flight. */
async function writeHashed(file: FileHandle, bytes: Uint8Array, hash: Hash): Promise<void> {
  for (let p = 0; p < bytes.byteLength;) {
    const end = Math.min(bytes.byteLength, p + WRITE_PIECE);
    const piece = bytes.subarray(p, end);
    const written = writeFully(file, piece);
    // both only read `piece`, so hashing it while the thread pool writes it is safe
    hash.update(piece);
    await written;
    p = end;
  }
}

async function writeFully(file: FileHandle, piece: Uint8Array): Promise<void> {
  for (let done = 0; done < piece.byteLength;) done += (await file.write(piece, done, piece.byteLength - done)).bytesWritten;
}

/** Reads exactly `into.byteLength` bytes at `position`, hashing them; a short file is a truncation error. */
function readExactly(fd: number, into: Uint8Array, position: number, hash: Hash | null, source: string): void {
  for (let p = 0; p < into.byteLength;) {
    const n = readSync(fd, into, p, Math.min(IO_PIECE, into.byteLength - p), position + p);
    if (n === 0) throw new TensorFileError(`${source}: truncated (ended at byte ${position + p})`);
    hash?.update(into.subarray(p, p + n));
    p += n;
  }
}

/**
 * Reads a tensor file piece by piece. With `expectSha256`, the whole file is
 * hashed while it is read and a mismatch throws before anything is returned.
 * `only` keeps just the named tensors in memory (the rest are still hashed).
 */
export function readTensorFile(path: string, expectSha256?: string, only?: (name: string) => boolean): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  const fd = openForRead(path);
  try {
    const size = fstatSync(fd).size;
    const hash = expectSha256 ? createHash('sha256') : null;
    if (size < 8) throw new TensorFileError(`${path}: truncated (no header)`);
    const lenBytes = new Uint8Array(8);
    readExactly(fd, lenBytes, 0, hash, path);
    const len = Number(Buffer.from(lenBytes).readBigUInt64LE(0));
    if (8 + len > size) throw new TensorFileError(`${path}: truncated (header of ${len} bytes, file of ${size})`);
    const headBytes = new Uint8Array(len);
    readExactly(fd, headBytes, 8, hash, path);
    let header: Record<string, HeaderEntry>;
    try {
      header = JSON.parse(Buffer.from(headBytes).toString('utf8')) as Record<string, HeaderEntry>;
    } catch (e) {
      throw new TensorFileError(`${path}: corrupt header (${(e as Error).message})`);
    }
    const base = 8 + len;
    const metadata = (header.__metadata__ ?? {}) as unknown as Record<string, string>;
    const entries = Object.entries(header)
      .filter(([name]) => name !== '__metadata__')
      .sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
    const tensors: Record<string, StoredTensor> = {};
    let at = base;
    const scratch = hash ? new Uint8Array(Math.min(IO_PIECE, Math.max(0, size - base))) : null;
    const skip = (to: number) => {
      // bytes not kept (a gap, or a tensor not asked for) still count towards the checksum
      for (; at < to;) {
        const n = Math.min(scratch!.byteLength, to - at);
        readExactly(fd, scratch!.subarray(0, n), at, hash, path);
        at += n;
      }
    };
    for (const [name, d] of entries) {
      const [b, e] = d.data_offsets;
      const Ctor = CTORS[d.dtype];
      if (!Ctor) throw new TensorFileError(`${path}: tensor ${name} has unsupported dtype ${d.dtype}`);
      if (base + e > size || b > e) throw new TensorFileError(`${path}: tensor ${name} lies outside the file (truncated?)`);
      if ((e - b) % BYTES[d.dtype] !== 0 || (e - b) / BYTES[d.dtype] !== d.shape.reduce((x, y) => x * y, 1))
        throw new TensorFileError(`${path}: tensor ${name} has ${(e - b) / BYTES[d.dtype]} values for shape ${JSON.stringify(d.shape)}`);
      if (base + b < at) throw new TensorFileError(`${path}: tensor ${name} overlaps another tensor`);
      if (hash) skip(base + b);
      at = base + b;
      if (only && !only(name)) {
        if (hash) skip(base + e);
        at = base + e;
        continue;
      }
      const data = new Ctor((e - b) / BYTES[d.dtype]);
      readExactly(fd, bytesOf(data), base + b, hash, path);
      at = base + e;
      tensors[name] = { data, shape: d.shape };
    }
    if (hash) {
      skip(size);
      if (hash.digest('hex') !== expectSha256) throw new TensorFileError(`${path}: checksum mismatch (file corrupt or replaced)`);
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

function openForRead(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw ioError('read', path, e);
  }
}

/** SHA-256 and size of a file, streamed. */
export function fileSha256(path: string): { sha256: string; bytes: number } {
  const fd = openForRead(path);
  try {
    const hash = createHash('sha256');
    const buf = new Uint8Array(IO_PIECE);
    let bytes = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.byteLength, bytes);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      bytes += n;
    }
    return { sha256: hash.digest('hex'), bytes };
  } finally {
    closeSync(fd);
  }
}
