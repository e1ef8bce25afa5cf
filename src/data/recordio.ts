/**
 * MXNet RecordIO, as insightface stores its training sets (`train.rec` +
 * `train.idx`), read and written byte for byte like dmlc-core and
 * `mx.recordio`.
 *
 * A record on disk is one or more parts, each
 *   uint32 magic 0xced7230a | uint32 lrecord | payload | zero padding to 4 bytes
 * with lrecord = cflag << 29 | length. cflag 0 is a whole record; a payload
 * that contains the magic at a 4-byte-aligned position is split there by the
 * writer into parts flagged 1 (first), 2 (middle), 3 (last), and the reader
 * puts the magic back between them.
 *
 * The payload of an image record starts with an IRHeader (struct 'IfQQ',
 * little-endian, 24 bytes: flag uint32, label float32, id uint64, id2 uint64);
 * when flag > 0 the label is instead `flag` float32s that follow the header.
 * The encoded image comes after.
 *
 * `.idx` is text, one `key\toffset` line per record (offset of its first part).
 */
import { closeSync, fstatSync, openSync, read, readSync, writeSync, type PathLike } from 'node:fs';

export const RECORDIO_MAGIC = 0xced7230a;
const MAGIC_BYTES = Uint8Array.of(0x0a, 0x23, 0xd7, 0xce);
export const IR_HEADER_BYTES = 24;
/** dmlc-core refuses records of 2^29 bytes or more (the length has 29 bits). */
const MAX_PART = (1 << 29) - 1;

export interface IRHeader {
  /** 0: one label in `label`; k > 0: k labels in `labels`. */
  flag: number;
  /** The label (flag 0), or the first of `labels`. */
  label: number;
  /** All labels: [label] for flag 0, the `flag` floats otherwise. */
  labels: Float32Array;
  id: number;
  id2: number;
}

/** A record that is not what RecordIO promises; `reason` in a few words. */
export class RecordError extends Error {
  override name = 'RecordError';
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** Payload = IRHeader (+ labels when several) + data, as mx.recordio.pack. */
export function packRecord(h: { label: number | ArrayLike<number>; id?: number; id2?: number }, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const labels = typeof h.label === 'number' ? null : Float32Array.from(h.label);
  const extra = labels ? labels.length * 4 : 0;
  const out = new Uint8Array(IR_HEADER_BYTES + extra + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, labels ? labels.length : 0, true);
  v.setFloat32(4, labels ? 0 : (h.label as number), true);
  v.setBigUint64(8, BigInt(h.id ?? 0), true);
  v.setBigUint64(16, BigInt(h.id2 ?? 0), true);
  if (labels) out.set(new Uint8Array(labels.buffer), IR_HEADER_BYTES);
  out.set(data, IR_HEADER_BYTES + extra);
  return out;
}

/** Splits a payload into its IRHeader and the data after it (mx.recordio.unpack). */
export function unpackRecord(payload: Uint8Array): { header: IRHeader; data: Uint8Array } {
  if (payload.length < IR_HEADER_BYTES) throw new RecordError(`record payload of ${payload.length} bytes is shorter than an IRHeader (24)`);
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const flag = v.getUint32(0, true);
  const id = Number(v.getBigUint64(8, true));
  const id2 = Number(v.getBigUint64(16, true));
  if (flag === 0) {
    const label = v.getFloat32(4, true);
    return { header: { flag, label, labels: Float32Array.of(label), id, id2 }, data: payload.subarray(IR_HEADER_BYTES) };
  }
  const end = IR_HEADER_BYTES + flag * 4;
  if (flag > 1 << 20 || end > payload.length) throw new RecordError(`IRHeader flag ${flag} announces more labels than the record holds`);
  const labels = new Float32Array(flag);
  for (let i = 0; i < flag; i++) labels[i] = v.getFloat32(IR_HEADER_BYTES + 4 * i, true);
  return { header: { flag, label: labels[0]!, labels, id, id2 }, data: payload.subarray(end) };
}

/** The on-disk bytes of one record (parts, magic escapes and padding as dmlc-core writes them). */
export function encodeRecord(payload: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const head = (cflag: number, len: number) => {
    if (len > MAX_PART) throw new RangeError(`recordio: record part of ${len} bytes exceeds 2^29 − 1`);
    const h = new Uint8Array(8);
    const v = new DataView(h.buffer);
    v.setUint32(0, RECORDIO_MAGIC, true);
    v.setUint32(4, ((cflag << 29) | len) >>> 0, true);
    parts.push(h);
  };
  const lower = payload.length & ~3;
  let start = 0;
  for (let i = 0; i < lower; i += 4) {
    if (payload[i] === MAGIC_BYTES[0] && payload[i + 1] === MAGIC_BYTES[1] && payload[i + 2] === MAGIC_BYTES[2] && payload[i + 3] === MAGIC_BYTES[3]) {
      head(start === 0 ? 1 : 2, i - start);
      parts.push(payload.subarray(start, i));
      start = i + 4;
    }
  }
  head(start !== 0 ? 3 : 0, payload.length - start);
  parts.push(payload.subarray(start));
  const pad = (4 - (payload.length & 3)) & 3;
  if (pad) parts.push(new Uint8Array(pad));
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Parses the record starting at `bytes[0]`; `bytes` must hold the whole
 * record (all its parts). Returns the payload and how many bytes it used.
 */
export function decodeRecord(bytes: Uint8Array): { payload: Uint8Array; bytesUsed: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks: Uint8Array[] = [];
  let pos = 0;
  let total = 0;
  for (let part = 0; ; part++) {
    if (pos + 8 > bytes.length) throw new RecordError(pos === 0 ? 'truncated record: no record header' : 'truncated record: a continuation part is missing');
    const magic = v.getUint32(pos, true);
    if (magic !== RECORDIO_MAGIC) throw new RecordError(`bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0xced7230a)`);
    const lrec = v.getUint32(pos + 4, true);
    const cflag = lrec >>> 29;
    const len = lrec & MAX_PART;
    if (part === 0 && cflag !== 0 && cflag !== 1) throw new RecordError(`record starts with a continuation part (cflag ${cflag})`);
    if (part > 0 && cflag !== 2 && cflag !== 3) throw new RecordError(`continuation part has cflag ${cflag} (expected 2 or 3)`);
    const padded = (len + 3) & ~3;
    if (pos + 8 + len > bytes.length) throw new RecordError(`truncated record: part of ${len} bytes, only ${bytes.length - pos - 8} available`);
    if (part > 0) {
      chunks.push(MAGIC_BYTES);
      total += 4;
    }
    chunks.push(bytes.subarray(pos + 8, pos + 8 + len));
    total += len;
    pos += 8 + padded;
    if (cflag === 0 || cflag === 3) break;
  }
  if (chunks.length === 1) return { payload: chunks[0]!, bytesUsed: Math.min(pos, bytes.length) };
  const payload = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    payload.set(c, o);
    o += c.length;
  }
  return { payload, bytesUsed: Math.min(pos, bytes.length) };
}

/** Reads a `.idx` file: `key<TAB>offset` per line, in file order. */
export function parseIndex(text: string, source = '.idx'): { keys: Float64Array; offsets: Float64Array } {
  const lines = text.split(/\r?\n/);
  const keys: number[] = [];
  const offsets: number[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    const m = /^(\d+)\s+(\d+)$/.exec(line);
    if (!m) throw new RecordError(`${source}:${i + 1}: expected "key<TAB>offset", got ${JSON.stringify(line.slice(0, 60))}`);
    keys.push(Number(m[1]));
    offsets.push(Number(m[2]));
  }
  return { keys: Float64Array.from(keys), offsets: Float64Array.from(offsets) };
}

/**
 * Random access to the records of one `.rec` file through its index. Reads
 * only the bytes of the records asked for (positioned reads), never the whole
 * file: a record spans from its offset to the next larger offset in the index
 * (or the end of the file), so one read fetches all its parts.
 */
export class RecordIOReader {
  readonly path: string;
  readonly fileSize: number;
  /** Keys in index order. */
  readonly keys: Float64Array;
  private readonly offsetOf = new Map<number, number>();
  private readonly extentOf = new Map<number, number>();
  private readonly fd: number;
  private closed = false;

  constructor(recPath: string, index: { keys: Float64Array; offsets: Float64Array }) {
    this.path = recPath;
    this.fd = openSync(recPath, 'r');
    this.fileSize = fstatSync(this.fd).size;
    this.keys = index.keys;
    const sorted = Array.from(new Set(index.offsets)).sort((a, b) => a - b);
    const nextOf = new Map<number, number>();
    for (let i = 0; i < sorted.length; i++) nextOf.set(sorted[i]!, i + 1 < sorted.length ? sorted[i + 1]! : this.fileSize);
    for (let i = 0; i < index.keys.length; i++) {
      const off = index.offsets[i]!;
      this.offsetOf.set(index.keys[i]!, off);
      this.extentOf.set(index.keys[i]!, Math.max(0, nextOf.get(off)! - off));
    }
  }

  has(key: number): boolean {
    return this.offsetOf.has(key);
  }

  /** The payload of record `key` (IRHeader + data), read asynchronously. */
  async read(key: number): Promise<Uint8Array> {
    const { offset, extent } = this.locate(key);
    const buf = Buffer.allocUnsafe(extent); // only the bytes read are looked at
    const bytesRead = await new Promise<number>((resolve, reject) => read(this.fd, buf, 0, extent, offset, (err, n) => (err ? reject(err) : resolve(n))));
    return decodeRecord(buf.subarray(0, bytesRead)).payload;
  }

  /** The same, synchronously; with `maxBytes`, only a prefix of the first part (enough for an IRHeader). */
  readSync(key: number, maxBytes = Infinity): Uint8Array {
    const { offset, extent } = this.locate(key);
    const n = Math.min(extent, maxBytes + 8);
    const buf = new Uint8Array(n);
    const got = readSync(this.fd, buf, 0, n, offset);
    if (n === extent) return decodeRecord(buf.subarray(0, got)).payload;
    if (got < 8) throw new RecordError('truncated record: no record header');
    const v = new DataView(buf.buffer, 0, got);
    const magic = v.getUint32(0, true);
    if (magic !== RECORDIO_MAGIC) throw new RecordError(`bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0xced7230a)`);
    const len = v.getUint32(4, true) & MAX_PART;
    return buf.subarray(8, Math.min(got, 8 + len));
  }

  private locate(key: number): { offset: number; extent: number } {
    const offset = this.offsetOf.get(key);
    if (offset === undefined) throw new RecordError(`key ${key} is not in the index`);
    if (offset >= this.fileSize) throw new RecordError(`index offset ${offset} is past the end of the file (${this.fileSize} bytes)`);
    return { offset, extent: this.extentOf.get(key)! };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** Writes a `.rec` and its `.idx` in one pass, synchronously (tools and tests). */
export class RecordIOWriter {
  private readonly rec: number;
  private readonly idx: number;
  private offset = 0;
  private closed = false;

  constructor(recPath: PathLike, idxPath: PathLike) {
    this.rec = openSync(recPath, 'w');
    this.idx = openSync(idxPath, 'w');
  }

  /** Appends one record under `key` (payload from packRecord). */
  write(key: number, payload: Uint8Array): void {
    const bytes = encodeRecord(payload);
    writeSync(this.idx, `${key}\t${this.offset}\n`);
    writeSync(this.rec, bytes);
    this.offset += bytes.length;
  }

  get bytesWritten(): number {
    return this.offset;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.rec);
    closeSync(this.idx);
  }
}
