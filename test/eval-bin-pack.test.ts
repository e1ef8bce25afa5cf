/** insightface .bin packs (docs/methods.md#validation-packs): the two hex vectors, py2 byte strings, and packs we refuse. */
import { describe, expect, it } from 'vitest';
import { parseBinPack, BinPackError } from '../src/eval/bin-pack.js';
import { hex, picklePy2 } from './helpers/eval-fixtures.js';

const PY2 = '80 02 5d 71 00 28 55 04 ff d8 ff e0 71 01 55 03 61 62 63 71 02 65 5d 71 03 88 61 86 71 04 2e';
const PY3_P4 = '80 04 95 18 00 00 00 00 00 00 00 5d 94 28 43 04 ff d8 ff e0 94 43 03 61 62 63 94 65 5d 94 88 61 86 94 2e';
const EXPECTED = { bins: [Uint8Array.from([0xff, 0xd8, 0xff, 0xe0]), Uint8Array.from([0x61, 0x62, 0x63])], issame: [true] };

const plain = (p: { bins: Uint8Array[]; issame: boolean[] }) => ({ bins: p.bins.map((b) => Array.from(b)), issame: p.issame });

describe('.bin pack reader (docs/methods.md#validation-packs vectors)', () => {
  it('reads the Python-2 protocol-2 vector (SHORT_BINSTRING as bytes)', () => {
    expect(plain(parseBinPack(hex(PY2)))).toEqual(plain(EXPECTED));
  });

  it('reads the Python-3 protocol-4 vector (FRAME, SHORT_BINBYTES, MEMOIZE)', () => {
    expect(plain(parseBinPack(hex(PY3_P4)))).toEqual(plain(EXPECTED));
  });

  it('our py2 writer reproduces the reference bytes (docs/methods.md#validation-packs) exactly', () => {
    expect(Array.from(picklePy2(EXPECTED.bins, EXPECTED.issame))).toEqual(Array.from(hex(PY2)));
  });

  it('keeps every byte value of py2 str, long ones (BINSTRING) included, and many pairs (APPENDS batches, LONG_BINPUT)', () => {
    const every = Uint8Array.from({ length: 256 }, (_, i) => i); // 0x80–0x9f are where windows-1252 would lose bytes
    const long = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 131) & 0xff);
    const bins: Uint8Array[] = [every, long];
    const issame = [false];
    for (let i = 0; i < 1200; i++) {
      bins.push(Uint8Array.of(0x80 + (i % 32), i & 0xff), Uint8Array.of(i >> 8));
      issame.push(i % 3 === 0);
    }
    const p = parseBinPack(picklePy2(bins, issame));
    expect(p.bins.length).toBe(bins.length);
    p.bins.forEach((b, i) => expect(Array.from(b), `bin ${i}`).toEqual(Array.from(bins[i]!)));
    expect(p.issame).toEqual(issame);
  });

  it('refuses numpy-array packs (GLOBAL + REDUCE) with a clear error', () => {
    // protocol 2: GLOBAL 'numpy.core.multiarray\n_reconstruct\n' … REDUCE, as build_eval_pack.py packs look
    const head = [0x80, 0x02, 0x5d, 0x71, 0x00, 0x28, 0x63];
    const glob = Buffer.from('numpy.core.multiarray\n_reconstruct\n', 'latin1');
    const rest = [0x71, 0x01, 0x29, 0x52, 0x65, 0x5d, 0x88, 0x61, 0x86, 0x2e];
    const bytes = Uint8Array.from([...head, ...glob, ...rest]);
    expect(() => parseBinPack(bytes, 'agedb.bin')).toThrow(BinPackError);
    expect(() => parseBinPack(bytes, 'agedb.bin')).toThrow(/agedb\.bin: the pack stores numpy arrays \(numpy\.core\.multiarray\._reconstruct\)/);
  });

  it('refuses Python-3 protocol-2 bytes (_codecs.encode) and any other object', () => {
    const codecs = Uint8Array.from([0x80, 0x02, 0x63, ...Buffer.from('_codecs\nencode\n'), 0x2e]);
    expect(() => parseBinPack(codecs)).toThrow(/_codecs\.encode.*protocol=4/);
    const other = Uint8Array.from([0x80, 0x02, 0x63, ...Buffer.from('collections\nOrderedDict\n'), 0x2e]);
    expect(() => parseBinPack(other)).toThrow(/collections\.OrderedDict/);
  });

  it('says what is wrong with a pickle that is not (bins, issame)', () => {
    expect(() => parseBinPack(new Uint8Array(0), 'x.bin')).toThrow(/x\.bin: not a pickle/);
    expect(() => parseBinPack(Buffer.from('hello'), 'x.bin')).toThrow(/not a pickle/);
    expect(() => parseBinPack(hex(PY2).subarray(0, 20), 'x.bin')).toThrow(/x\.bin: cannot unpickle|truncated/);
    // two images for two pairs
    expect(() => parseBinPack(picklePy2([Uint8Array.of(1), Uint8Array.of(2)], [true, false]))).toThrow(/2 images for 2 pairs/);
    expect(() => parseBinPack(picklePy2([], []))).toThrow(/no pairs/);
    // a 3-tuple: (list, list, None) via MARK … TUPLE
    expect(() => parseBinPack(Uint8Array.from([0x80, 0x02, 0x28, 0x5d, 0x5d, 0x4e, 0x74, 0x2e]))).toThrow(/expected a pickled 2-tuple/);
  });
});
