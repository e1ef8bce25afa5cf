/**
 * A whole-file check of a RecordIO pair, for `shardface data info`: every
 * `.idx` entry is followed to its record and the record's framing is checked
 * (offset inside the file, magic, part flags, parts that fit in the file and
 * do not run into the next indexed record, an IRHeader that parses). Only the
 * 8-byte part headers and the 24-byte IRHeader of each record are read, so a
 * multi-gigabyte file is checked in one pass of small reads; the images
 * themselves are not decoded (the loader reports an undecodable one when it
 * meets it).
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { IR_HEADER_BYTES, RECORDIO_MAGIC, parseIndex } from './recordio.js';
import type { RecordIOLayout } from './data-files.js';

export interface RecordIOCheck {
  /** Entries in the .idx. */
  records: number;
  /** Entries whose record is intact. */
  readableRecords: number;
  /** Dataset images (the layout's image keys) whose record is intact. */
  readableImages: number;
  /** One line per broken record, in index order: `key K at offset O: reason`. */
  problems: string[];
}

const MAX_PART = (1 << 29) - 1;

/** Checks every record of `layout` (see the module comment); never throws on a broken record, only on I/O errors. */
export function checkRecordIO(layout: RecordIOLayout): RecordIOCheck {
  const index = parseIndex(readFileSync(layout.idx, 'utf8'), layout.idx);
  const fd = openSync(layout.rec, 'r');
  try {
    const size = fstatSync(fd).size;
    const sorted = Array.from(new Set(index.offsets)).sort((a, b) => a - b);
    const next = new Map<number, number>();
    for (let i = 0; i < sorted.length; i++) next.set(sorted[i]!, i + 1 < sorted.length ? sorted[i + 1]! : size);
    const broken = new Set<number>();
    const problems: string[] = [];
    const seen = new Set<number>();
    const buf = Buffer.alloc(8 + IR_HEADER_BYTES);
    for (let i = 0; i < index.keys.length; i++) {
      const key = index.keys[i]!;
      const offset = index.offsets[i]!;
      let reason: string | null;
      if (seen.has(key)) reason = 'the key appears twice in the index';
      else reason = recordProblem(fd, buf, offset, size, next.get(offset)!);
      seen.add(key);
      if (reason) {
        broken.add(key);
        problems.push(`key ${key} at offset ${offset}: ${reason}`);
      }
    }
    let readableImages = 0;
    for (const k of layout.keys) if (seen.has(k) && !broken.has(k)) readableImages++;
    return { records: index.keys.length, readableRecords: index.keys.length - problems.length, readableImages, problems };
  } finally {
    closeSync(fd);
  }
}

/** Why the record at `offset` is broken, or null when its framing and IRHeader are sound. */
function recordProblem(fd: number, buf: Buffer, offset: number, size: number, nextOffset: number): string | null {
  if (offset >= size) return `index entry past the end of the file (${size} bytes)`;
  let pos = offset;
  let payload = 0;
  let head: Uint8Array | null = null;
  for (let part = 0; ; part++) {
    if (pos + 8 > size) return `truncated record: ${part === 0 ? 'no record header' : 'a continuation part is missing'} (the file ends at ${size})`;
    const want = part === 0 ? Math.min(buf.length, size - pos) : 8;
    const got = readSync(fd, buf, 0, want, pos);
    if (got < 8) return `truncated record: short read of ${got} bytes at ${pos}`;
    const magic = buf.readUInt32LE(0);
    if (magic !== RECORDIO_MAGIC) return `bad magic 0x${magic.toString(16).padStart(8, '0')} at offset ${pos} (expected 0xced7230a)`;
    const lrec = buf.readUInt32LE(4);
    const cflag = lrec >>> 29;
    const len = lrec & MAX_PART;
    if (part === 0 && cflag !== 0 && cflag !== 1) return `record starts with a continuation part (cflag ${cflag})`;
    if (part > 0 && cflag !== 2 && cflag !== 3) return `continuation part at ${pos} has cflag ${cflag} (expected 2 or 3)`;
    if (pos + 8 + len > size) return `truncated record: a part of ${len} bytes at ${pos}, but the file ends ${size - pos - 8} bytes after its header`;
    if (pos + 8 + len > nextOffset) return `the record runs ${pos + 8 + len - nextOffset} bytes into the next indexed record (at ${nextOffset})`;
    if (part === 0) head = Uint8Array.from(buf.subarray(8, Math.min(got, 8 + len)));
    payload += len + (part > 0 ? 4 : 0);
    pos += 8 + ((len + 3) & ~3);
    if (cflag === 0 || cflag === 3) break;
  }
  if (payload < IR_HEADER_BYTES) return `record payload of ${payload} bytes is shorter than an IRHeader (24)`;
  if (head && head.length >= 4) {
    // the labels of a multi-label header may lie past the first part's bytes read: check the flag against the payload length
    const flag = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0, true);
    if (flag > 0 && (flag > 1 << 20 || IR_HEADER_BYTES + 4 * flag > payload)) return `IRHeader flag ${flag} announces more labels than the record holds`;
  }
  return null;
}
