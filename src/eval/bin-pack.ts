/**
 * insightface `.bin` validation packs (lfw.bin, cfp_fp.bin, agedb_30.bin, …):
 * a Python pickle of `(bins, issame_list)`, `bins` = 2N encoded image files,
 * pair i = (bins[2i], bins[2i+1]) (docs/methods.md#validation-packs).
 *
 * Parsed with the `pickleparser` library, with two adjustments:
 *  - Python-2 `str` (BINSTRING `T`, SHORT_BINSTRING `U`) is a byte string, but
 *    pickleparser decodes it as text through TextDecoder('ascii'), which is
 *    windows-1252 and loses bytes 0x80–0x9f. Our reader decodes it as latin1
 *    instead (one char per byte, lossless) and turns it back into bytes.
 *  - Any reference to a Python object (GLOBAL / STACK_GLOBAL, followed by
 *    REDUCE / BUILD) is refused: that is how packs of numpy arrays
 *    (`build_eval_pack.py`) and Python-3 protocol-2 `bytes`
 *    (`_codecs.encode`) look, and this reader does not execute them.
 * Python-3 `bytes` (SHORT_BINBYTES / BINBYTES / BINBYTES8) and protocol-4
 * framing are handled by pickleparser as they are.
 */
import { Parser, BufferReader } from 'pickleparser';

export class BinPackError extends Error {
  override name = 'BinPackError';
}

export interface BinPack {
  /** 2N encoded image files (JPEG/PNG/…); pair i is (bins[2i], bins[2i+1]). */
  bins: Uint8Array[];
  /** N labels, true = same identity. */
  issame: boolean[];
}

/** pickleparser's reader, but Python-2 `str` payloads are decoded as latin1 (byte-exact). */
class ByteStringReader extends BufferReader {
  override string(size: number, encoding: 'ascii' | 'utf-8'): string {
    if (encoding !== 'ascii') return super.string(size, encoding);
    const b = this.bytes(size);
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
  }
}

function refuseObjects(source: string) {
  return {
    resolve(module: string, name: string): never {
      const what = `${module}.${name}`;
      if (module.startsWith('numpy'))
        throw new BinPackError(
          `${source}: the pack stores numpy arrays (${what}), as insightface's build_eval_pack.py writes them; only packs of encoded image bytes are supported — re-export it with bytes, e.g. pickle.dump((bins, issame), f, protocol=2) where bins = [arr.tobytes() for arr in bins]`,
        );
      if (what === '_codecs.encode')
        throw new BinPackError(
          `${source}: the pack was written by Python 3 with protocol 2, which stores bytes as _codecs.encode(...) calls; re-export it with protocol=4 (pickle.dump(obj, f, protocol=4))`,
        );
      throw new BinPackError(`${source}: the pickle references the Python object ${what}; a .bin pack holds only (list of bytes, list of bools)`);
    },
  };
}

/** Decodes a pickled (bins, issame) pair and checks its shape. */
export function parseBinPack(data: Uint8Array, source = '.bin pack'): BinPack {
  if (data.length < 2 || data[0] !== 0x80)
    throw new BinPackError(`${source}: not a pickle (expected a PROTO opcode 0x80 first, found ${data.length ? '0x' + data[0]!.toString(16).padStart(2, '0') : 'an empty file'})`);
  let value: unknown;
  try {
    value = new Parser({ nameResolver: refuseObjects(source) }).read(new ByteStringReader(data));
  } catch (e) {
    if (e instanceof BinPackError) throw e;
    throw new BinPackError(`${source}: cannot unpickle (${(e as Error).message})`);
  }
  if (!Array.isArray(value) || value.length !== 2) throw new BinPackError(`${source}: expected a pickled 2-tuple (bins, issame_list), got ${describe(value)}`);
  const [rawBins, rawSame] = value as [unknown, unknown];
  if (!Array.isArray(rawBins)) throw new BinPackError(`${source}: bins must be a list of encoded images, got ${describe(rawBins)}`);
  if (!Array.isArray(rawSame)) throw new BinPackError(`${source}: issame_list must be a list of booleans, got ${describe(rawSame)}`);
  const bins = rawBins.map((b, i) => {
    if (b instanceof Uint8Array) return b;
    if (typeof b === 'string') return new Uint8Array(Buffer.from(b, 'latin1'));
    throw new BinPackError(`${source}: bins[${i}] must be bytes (an encoded image), got ${describe(b)}`);
  });
  const issame = rawSame.map((s, i) => {
    if (typeof s === 'boolean') return s;
    if (s === 0 || s === 1) return s === 1;
    throw new BinPackError(`${source}: issame_list[${i}] must be a boolean, got ${describe(s)}`);
  });
  if (bins.length !== 2 * issame.length) throw new BinPackError(`${source}: ${bins.length} images for ${issame.length} pairs; a pack holds exactly 2 images per pair`);
  if (issame.length === 0) throw new BinPackError(`${source}: the pack holds no pairs`);
  return { bins, issame };
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing (truncated: no STOP opcode)';
  if (v === null) return 'None';
  if (Array.isArray(v)) return `a sequence of ${v.length}`;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === 'object') {
    const p = Object.getPrototypeOf(v) as { __module__?: string; __name__?: string } | null;
    if (p?.__module__) return `a ${p.__module__}.${p.__name__} object`;
    return 'a dict';
  }
  return `${typeof v} ${JSON.stringify(v)}`;
}
