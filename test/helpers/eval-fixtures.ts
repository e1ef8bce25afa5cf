/**
 * Verification fixtures: a Python-2-style pickle writer (protocol 2, items as
 * py2 `str`, exactly what `pickle.dump((bins, issame), f, protocol=2)` writes
 * in Python 2) and one synthetic pair set written three ways: an insightface
 * .bin pack, an LFW pairs.txt over an image folder, and a pair list.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderSyntheticFace } from '../../src/data/synthetic.js';
import { encodePng } from '../../src/data/image-file.js';
import { encodePgm } from '../../src/data/decode.js';

/** Pickle protocol 2 of `(bins, issame)` as Python 2 writes it (memo puts, MARK…APPENDS in batches of 1000). */
export function picklePy2(bins: Uint8Array[], issame: boolean[]): Buffer {
  const out: number[] = [0x80, 2];
  let memo = 0;
  const put = () => {
    if (memo < 256) out.push(0x71, memo);
    else out.push(0x72, memo & 0xff, (memo >> 8) & 0xff, (memo >> 16) & 0xff, memo >>> 24);
    memo++;
  };
  const str = (b: Uint8Array) => {
    if (b.length < 256) out.push(0x55, b.length);
    else out.push(0x54, b.length & 0xff, (b.length >> 8) & 0xff, (b.length >> 16) & 0xff, b.length >>> 24);
    for (const x of b) out.push(x);
    put();
  };
  const list = <T>(items: T[], item: (x: T) => void) => {
    out.push(0x5d); // EMPTY_LIST
    put();
    for (let i = 0; i < items.length; i += 1000) {
      const batch = items.slice(i, i + 1000);
      if (batch.length === 1) {
        item(batch[0]!);
        out.push(0x61); // APPEND
      } else {
        out.push(0x28); // MARK
        batch.forEach(item);
        out.push(0x65); // APPENDS
      }
    }
  };
  list(bins, str);
  list(issame, (s) => out.push(s ? 0x88 : 0x89));
  out.push(0x86); // TUPLE2
  put();
  out.push(0x2e); // STOP
  return Buffer.from(out);
}

export function hex(s: string): Uint8Array {
  return Uint8Array.from(s.trim().split(/\s+/), (x) => parseInt(x, 16));
}

export interface PairFixture {
  dir: string;
  bin: string;
  pairsTxt: string;
  imagesDir: string;
  pairList: string;
  pairs: number;
  issame: boolean[];
}

/**
 * `identities` synthetic people with `perIdentity` images each, size × size,
 * as files IMAGES/name/name_%04d.png (the last identity as grey .pgm, to
 * exercise the extension fall-back and grey decoding); `folds` sets of
 * `perFold` same then `perFold` different pairs, in LFW order, written as
 * pairs.txt, a pair list and a .bin pack of the very same image bytes.
 */
export function writePairFixture(dir: string, o: { identities?: number; perIdentity?: number; size?: number; folds?: number; perFold?: number; seed?: number } = {}): PairFixture {
  const ids = o.identities ?? 8;
  const per = o.perIdentity ?? 4;
  const size = o.size ?? 32;
  const folds = o.folds ?? 10;
  const perFold = o.perFold ?? 3;
  const seed = o.seed ?? 7;
  const imagesDir = join(dir, 'images');
  const name = (i: number) => `Person_${String.fromCharCode(65 + i)}`;
  const files = new Map<string, { rel: string; bytes: Buffer }>();
  for (let i = 0; i < ids; i++) {
    mkdirSync(join(imagesDir, name(i)), { recursive: true });
    for (let k = 1; k <= per; k++) {
      const rgb = renderSyntheticFace(seed, 10_000 + i, k, size);
      const grey = i === ids - 1;
      let bytes: Buffer;
      if (grey) {
        const g = new Uint8Array(size * size);
        for (let p = 0; p < g.length; p++) g[p] = rgb[p * 3 + 1]!;
        bytes = encodePgm(g, size, size);
      } else bytes = encodePng(rgb, size, size);
      const rel = `${name(i)}/${name(i)}_${String(k).padStart(4, '0')}.${grey ? 'pgm' : 'png'}`;
      writeFileSync(join(imagesDir, rel), bytes);
      files.set(`${i}:${k}`, { rel, bytes });
    }
  }
  // pairs, deterministic: fold f, same pair j uses identity (f + j) % ids; different pairs two identities apart
  const lines: string[] = [`${folds}\t${perFold}`];
  const list: string[] = ['# pathA\tpathB\tsame'];
  const bins: Uint8Array[] = [];
  const issame: boolean[] = [];
  const img = (i: number, k: number) => files.get(`${i}:${k}`)!;
  for (let f = 0; f < folds; f++) {
    for (let j = 0; j < perFold; j++) {
      const i = (f + j) % ids;
      const k1 = 1 + ((f + j) % per);
      const k2 = 1 + ((f + j + 1) % per);
      lines.push(`${name(i)}\t${k1}\t${k2}`);
      list.push(`images/${img(i, k1).rel}\timages/${img(i, k2).rel}\t1`);
      bins.push(img(i, k1).bytes, img(i, k2).bytes);
      issame.push(true);
    }
    for (let j = 0; j < perFold; j++) {
      const i1 = (f + j) % ids;
      const i2 = (f + j + 2) % ids;
      const k1 = 1 + (j % per);
      const k2 = 1 + ((j + f) % per);
      lines.push(`${name(i1)}\t${k1}\t${name(i2)}\t${k2}`);
      list.push(`images/${img(i1, k1).rel}\timages/${img(i2, k2).rel}\t0`);
      bins.push(img(i1, k1).bytes, img(i2, k2).bytes);
      issame.push(false);
    }
  }
  const pairsTxt = join(dir, 'pairs.txt');
  const pairList = join(dir, 'pairs.tsv');
  const bin = join(dir, 'synthetic.bin');
  writeFileSync(pairsTxt, lines.join('\n') + '\n');
  writeFileSync(pairList, list.join('\n') + '\n');
  writeFileSync(bin, picklePy2(bins, issame));
  return { dir, bin, pairsTxt, imagesDir, pairList, pairs: issame.length, issame };
}
