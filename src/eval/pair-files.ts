/**
 * Text files that name verification pairs:
 *
 *  - LFW `pairs.txt`: a header `FOLDS N` (FOLDS sets of N matched then N
 *    mismatched pairs; LFW's View 2 is `10 300`) or just `N` (one set, as in
 *    pairsDevTrain.txt), then one pair per line, fields separated by blanks:
 *      `name n1 n2`          same person, images n1 and n2 (1-based)
 *      `name1 n1 name2 n2`   different people
 *    Image n of `name` is `IMAGES/name/name_%04d.jpg`; when that file is
 *    missing the same name with .jpeg, .png or .pgm is used.
 *  - A pair list: one pair per line, `pathA<TAB>pathB<TAB>1|0` (1 = same);
 *    blank lines and lines starting with `#` are skipped; relative paths are
 *    relative to the list's directory. Lines without a TAB may separate the
 *    three fields by blanks (then paths cannot contain blanks).
 *
 * Parsing is kept apart from the file system so malformed files are easy to test.
 */
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';

export class PairFileError extends Error {
  override name = 'PairFileError';
}

export interface PairEntry {
  a: string;
  b: string;
  same: boolean;
  /** 1-based line in the file, for messages. */
  line: number;
}

export interface LfwImageRef {
  name: string;
  /** 1-based image number. */
  number: number;
}

export interface LfwPair {
  a: LfwImageRef;
  b: LfwImageRef;
  same: boolean;
  line: number;
}

/** Extensions tried, in order, for an LFW image. */
const LFW_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.pgm'];

function lines(text: string): { text: string; line: number }[] {
  return text.split(/\r?\n/).map((t, i) => ({ text: t.trim(), line: i + 1 }));
}

function positiveInt(s: string): number | null {
  return /^[0-9]+$/.test(s) && Number(s) >= 1 && Number.isSafeInteger(Number(s)) ? Number(s) : null;
}

/** Reads an LFW-style pairs.txt (header `FOLDS N` or `N`), checking the pair count the header announces. */
export function parseLfwPairs(text: string, source = 'pairs.txt'): { folds: number; perFold: number; pairs: LfwPair[] } {
  const all = lines(text).filter((l) => l.text !== '');
  const head = all.shift();
  if (!head) throw new PairFileError(`${source}: empty file (expected a header line "FOLDS N" or "N")`);
  const h = head.text.split(/\s+/).map(positiveInt);
  if ((h.length !== 1 && h.length !== 2) || h.some((x) => x === null))
    throw new PairFileError(`${source}:${head.line}: expected a header "FOLDS N" or "N" (positive integers), got ${JSON.stringify(head.text)}`);
  const folds = h.length === 2 ? h[0]! : 1;
  const perFold = h.length === 2 ? h[1]! : h[0]!;
  const pairs: LfwPair[] = [];
  for (const { text: t, line } of all) {
    const f = t.split(/\s+/);
    const bad = (why: string) => new PairFileError(`${source}:${line}: ${why}: ${JSON.stringify(t)}`);
    if (f.length === 3) {
      const [name, n1, n2] = [f[0]!, positiveInt(f[1]!), positiveInt(f[2]!)];
      if (n1 === null || n2 === null) throw bad('image numbers must be positive integers ("name n1 n2")');
      pairs.push({ a: { name, number: n1 }, b: { name, number: n2 }, same: true, line });
    } else if (f.length === 4) {
      const [name1, n1, name2, n2] = [f[0]!, positiveInt(f[1]!), f[2]!, positiveInt(f[3]!)];
      if (n1 === null || n2 === null) throw bad('image numbers must be positive integers ("name1 n1 name2 n2")');
      pairs.push({ a: { name: name1, number: n1 }, b: { name: name2, number: n2 }, same: false, line });
    } else {
      throw bad(`expected "name n1 n2" (same) or "name1 n1 name2 n2" (different), got ${f.length} fields`);
    }
  }
  const expected = 2 * folds * perFold;
  if (pairs.length !== expected) throw new PairFileError(`${source}: the header "${head.text}" announces ${expected} pairs (2 × ${folds} × ${perFold}), the file has ${pairs.length}`);
  return { folds, perFold, pairs };
}

/** The file of LFW image `ref` under `imagesDir`: name/name_%04d with the first of LFW_EXTENSIONS that exists. */
export function lfwImagePath(imagesDir: string, ref: LfwImageRef): string {
  const stem = join(imagesDir, ref.name, `${ref.name}_${String(ref.number).padStart(4, '0')}`);
  for (const ext of LFW_EXTENSIONS) if (existsSync(stem + ext)) return stem + ext;
  throw new PairFileError(`no image ${ref.name} #${ref.number}: looked for ${stem}{${LFW_EXTENSIONS.join(',')}}`);
}

/** Reads a pair list `pathA<TAB>pathB<TAB>1|0`; paths are returned as written. */
export function parsePairList(text: string, source = 'pair list'): PairEntry[] {
  const out: PairEntry[] = [];
  for (const { text: raw, line } of lines(text)) {
    if (raw === '' || raw.startsWith('#')) continue;
    const f = raw.includes('\t') ? raw.split('\t').map((x) => x.trim()) : raw.split(/\s+/);
    if (f.length !== 3 || f[0] === '' || f[1] === '')
      throw new PairFileError(`${source}:${line}: expected "pathA<TAB>pathB<TAB>1|0", got ${f.length} field${f.length === 1 ? '' : 's'}: ${JSON.stringify(raw)}`);
    if (f[2] !== '0' && f[2] !== '1') throw new PairFileError(`${source}:${line}: the label must be 1 (same) or 0 (different), got ${JSON.stringify(f[2])}`);
    out.push({ a: f[0]!, b: f[1]!, same: f[2] === '1', line });
  }
  if (out.length === 0) throw new PairFileError(`${source}: no pairs`);
  return out;
}

/** A path from a pair list, relative to the list's directory unless absolute. */
export function resolveListedPath(listFile: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dirname(listFile), p);
}
