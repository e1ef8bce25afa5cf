/**
 * One internal form for every verification source: a list of images (encoded
 * bytes or files) and pairs of indices into it with their labels. The three
 * readers (.bin pack, LFW pairs.txt over an image folder, a pair list) all
 * produce it; everything downstream (decoding, embedding, the 10-fold
 * protocol) sees only this form, so a source cannot change the result.
 *
 * Each distinct image is listed once, in order of first appearance: by path
 * for files, by content for .bin bytes (a pack stores an image again for every
 * pair it is in). The same images in the same pair order therefore give the
 * same list whatever file they came from.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseBinPack } from './bin-pack.js';
import { lfwImagePath, parseLfwPairs, parsePairList, PairFileError, resolveListedPath } from './pair-files.js';

export type ImageSource = { kind: 'bytes'; bytes: Uint8Array; name: string } | { kind: 'file'; path: string };

export interface VerificationSet {
  /** Where the pairs came from, e.g. `bin:/data/lfw.bin`, `pairs:/lfw/pairs.txt::/lfw/images`, `list:/x/pairs.tsv`. */
  source: string;
  /** Distinct images, each listed once. */
  images: ImageSource[];
  /** Pair i is (images[a[i]], images[b[i]]), issame[i] = 1 for the same identity. */
  pairs: { a: Int32Array; b: Int32Array; issame: Uint8Array };
}

/** Which reader and which files. */
export type VerificationSpec = { kind: 'bin'; file: string } | { kind: 'lfw-pairs'; pairs: string; images: string } | { kind: 'pair-list'; file: string };

export class VerificationSetError extends Error {
  override name = 'VerificationSetError';
}

/** An image of a set that cannot be read or decoded; the message names it. */
export class ImageInputError extends Error {
  override name = 'ImageInputError';
}

function describeSpec(spec: VerificationSpec): string {
  if (spec.kind === 'bin') return `bin:${resolve(spec.file)}`;
  if (spec.kind === 'lfw-pairs') return `pairs:${resolve(spec.pairs)}::${resolve(spec.images)}`;
  return `list:${resolve(spec.file)}`;
}

/** Reads the files of `spec` (the pack's bytes are kept in memory; image files are only checked to exist). */
export function loadVerificationSet(spec: VerificationSpec): VerificationSet {
  const source = describeSpec(spec);
  if (spec.kind === 'bin') {
    const pack = parseBinPack(readInput(spec.file, '.bin pack'), spec.file);
    return fromImagePairs(source, pack.issame.length, (i) => ({ kind: 'bytes', bytes: pack.bins[i]!, name: `${spec.file}[${i}]` }), pack.issame);
  }
  if (spec.kind === 'lfw-pairs') {
    const text = readInput(spec.pairs, 'pairs.txt').toString('utf8');
    if (!existsSync(spec.images) || !statSync(spec.images).isDirectory()) throw new VerificationSetError(`images directory ${spec.images} does not exist`);
    const { pairs } = parseLfwPairs(text, spec.pairs);
    const path = (p: (typeof pairs)[number], which: 'a' | 'b') => {
      try {
        return lfwImagePath(spec.images, p[which]);
      } catch (e) {
        throw new PairFileError(`${spec.pairs}:${p.line}: ${(e as Error).message}`);
      }
    };
    return fromImagePairs(
      source,
      pairs.length,
      (i) => ({ kind: 'file', path: path(pairs[i >> 1]!, i % 2 === 0 ? 'a' : 'b') }),
      pairs.map((p) => p.same),
    );
  }
  const entries = parsePairList(readInput(spec.file, 'pair list').toString('utf8'), spec.file);
  const path = (i: number) => {
    const e = entries[i >> 1]!;
    const p = resolveListedPath(spec.file, i % 2 === 0 ? e.a : e.b);
    if (!existsSync(p)) throw new PairFileError(`${spec.file}:${e.line}: image ${p} does not exist`);
    return p;
  };
  return fromImagePairs(
    source,
    entries.length,
    (i) => ({ kind: 'file', path: path(i) }),
    entries.map((e) => e.same),
  );
}

/**
 * Builds the set from 2N images in pair order (image 2i and 2i+1 form pair i),
 * listing each distinct image once.
 */
function fromImagePairs(source: string, n: number, image: (i: number) => ImageSource, issame: boolean[]): VerificationSet {
  if (issame.length !== n) throw new VerificationSetError(`${source}: ${n} pairs but ${issame.length} labels`);
  const images: ImageSource[] = [];
  const slot = new Map<string, number>();
  const index = (src: ImageSource): number => {
    const key = src.kind === 'file' ? `file:${src.path}` : `sha1:${createHash('sha1').update(src.bytes).digest('hex')}`;
    let k = slot.get(key);
    if (k === undefined) {
      k = images.length;
      images.push(src);
      slot.set(key, k);
    }
    return k;
  };
  const a = new Int32Array(n);
  const b = new Int32Array(n);
  for (let p = 0; p < n; p++) {
    a[p] = index(image(2 * p));
    b[p] = index(image(2 * p + 1));
  }
  return { source, images, pairs: { a, b, issame: Uint8Array.from(issame, (s) => (s ? 1 : 0)) } };
}

function readInput(file: string, what: string): Buffer {
  if (!existsSync(file)) throw new VerificationSetError(`${what} ${file} does not exist`);
  if (statSync(file).isDirectory()) throw new VerificationSetError(`${what} ${file} is a directory, not a file`);
  return readFileSync(file);
}
