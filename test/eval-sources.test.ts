/**
 * The three verification sources (.bin pack, LFW pairs.txt + images, pair
 * list) give the same images, pairs and accuracy; malformed inputs get clear
 * errors; TAR@FAR is null without enough negative pairs; the ROC CSV.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, unlinkSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBackbone, type Backbone } from '../src/models/index.js';
import { loadVerificationSet, VerificationSetError, type VerificationSet } from '../src/eval/verification-set.js';
import { parseLfwPairs, parsePairList } from '../src/eval/pair-files.js';
import { embedImageSources, rocCsv, scorePairs, verifySet, ImageInputError } from '../src/eval/verify-set.js';
import { parseValSpecs, loadValSets, scoreValSets } from '../src/eval/val-sets.js';
import { picklePy2, writePairFixture, type PairFixture } from './helpers/eval-fixtures.js';
import { Rng } from '../src/common/random.js';

let dir: string;
let fx: PairFixture;
let backbone: Backbone;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'shardface-eval-'));
  fx = writePairFixture(dir);
  backbone = createBackbone('tiny', { seed: 3, embeddingSize: 16, inputSize: 32 });
});
afterAll(() => {
  backbone?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('three sources, one internal form', () => {
  it('.bin, pairs.txt + images and a pair list give the same images, pairs, embeddings and accuracy', async () => {
    const sets: VerificationSet[] = [
      loadVerificationSet({ kind: 'bin', file: fx.bin }),
      loadVerificationSet({ kind: 'lfw-pairs', pairs: fx.pairsTxt, images: fx.imagesDir }),
      loadVerificationSet({ kind: 'pair-list', file: fx.pairList }),
    ];
    expect(sets.map((s) => s.source.split(':')[0])).toEqual(['bin', 'pairs', 'list']);
    for (const s of sets) {
      expect(s.pairs.issame.length).toBe(fx.pairs);
      expect(Array.from(s.pairs.issame)).toEqual(fx.issame.map(Number));
      // each distinct image once: .bin deduplicated by content, files by path
      expect(s.images.length).toBe(sets[0]!.images.length);
      expect(Array.from(s.pairs.a)).toEqual(Array.from(sets[0]!.pairs.a));
      expect(Array.from(s.pairs.b)).toEqual(Array.from(sets[0]!.pairs.b));
    }
    expect(sets[0]!.images.length).toBeLessThan(2 * fx.pairs);

    const opts = { imageSize: 32, batch: 8 };
    const emb = await Promise.all(sets.map((s) => embedImageSources(backbone, s.images, opts)));
    for (const e of emb.slice(1)) {
      expect(e.embeddings).toEqual(emb[0]!.embeddings);
      expect(e.flipped).toEqual(emb[0]!.flipped);
    }
    const results = await Promise.all(sets.map((s) => verifySet(backbone, s, opts)));
    for (const r of results.slice(1)) {
      expect(Math.abs(r.accuracy - results[0]!.accuracy)).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(r.std - results[0]!.std)).toBeLessThanOrEqual(1e-6);
      expect(r.thresholds).toEqual(results[0]!.thresholds);
    }
    const r = results[0]!;
    expect(r.pairs).toBe(60);
    expect(r.foldAccuracies.length).toBe(10);
    expect(r.accuracy).toBeGreaterThanOrEqual(0);
    expect(r.accuracy).toBeLessThanOrEqual(1);
    // 30 negative pairs: far too few for FAR 1e-3 or 1e-4
    expect(r.tarAtFar).toEqual({ '1e-3': null, '1e-4': null });
    expect(r.roc).not.toBeNull();
  });

  it('matches the docs/methods.md#ten-fold-accuracy protocol computed by hand from the same embeddings', async () => {
    const s = loadVerificationSet({ kind: 'pair-list', file: fx.pairList });
    const { embeddings, flipped } = await embedImageSources(backbone, s.images, { imageSize: 32 });
    const direct = scorePairs(embeddings, flipped, 16, s.pairs);
    const viaSet = await verifySet(backbone, s, { imageSize: 32 });
    expect(viaSet.accuracy).toBe(direct.accuracy);
    expect(viaSet.threshold).toBe(direct.threshold);
  });
});

describe('TAR@FAR and the ROC', () => {
  it('reports TAR at 1e-3 once there are ≥ 1000 negative pairs, null at 1e-4 below 10000', () => {
    const rng = new Rng(5);
    const dim = 4;
    const n = 2400; // images; pairs (2i, 2i+1)
    const e = new Float32Array(n * dim);
    for (let i = 0; i < e.length; i++) e[i] = rng.normal();
    const pairs = { a: new Int32Array(n / 2), b: new Int32Array(n / 2), issame: new Uint8Array(n / 2) };
    for (let p = 0; p < n / 2; p++) {
      pairs.a[p] = 2 * p;
      pairs.b[p] = 2 * p + 1;
      pairs.issame[p] = p % 6 === 0 ? 1 : 0; // 200 same, 1000 different
      if (pairs.issame[p]) for (let j = 0; j < dim; j++) e[(2 * p + 1) * dim + j] = e[2 * p * dim + j]! + 0.3 * rng.normal();
    }
    const r = scorePairs(e, null, dim, pairs);
    expect(r.tarAtFar['1e-3']).toBeTypeOf('number');
    expect(r.tarAtFar['1e-3']!).toBeGreaterThan(0.3);
    expect(r.tarAtFar['1e-4']).toBeNull();
    const csv = rocCsv(r.roc!).trim().split('\n');
    expect(csv[0]).toBe('fpr,tpr,distance_threshold,cosine_threshold');
    expect(csv[1]).toBe('0,0,-inf,inf');
    const last = csv[csv.length - 1]!.split(',').map(Number);
    expect(last[0]).toBe(1);
    expect(last[1]).toBe(1);
    // thresholds rise with FPR (distance) and fall (cosine)
    const rows = csv.slice(2).map((l) => l.split(',').map(Number));
    for (let i = 1; i < rows.length; i++) {
      expect(rows[i]![0]!).toBeGreaterThanOrEqual(rows[i - 1]![0]!);
      expect(rows[i]![2]!).toBeGreaterThan(rows[i - 1]![2]!);
      expect(rows[i]![3]!).toBeCloseTo(1 - rows[i]![2]! / 2, 12);
    }
  });
});

describe('bad inputs get clear errors', () => {
  it('pairs.txt: header, field counts, numbers, pair count', () => {
    expect(() => parseLfwPairs('', 'p.txt')).toThrow(/p\.txt: empty file/);
    expect(() => parseLfwPairs('ten 300\n', 'p.txt')).toThrow(/p\.txt:1: expected a header "FOLDS N" or "N"/);
    expect(() => parseLfwPairs('1 1\nAlice 1 2\nBob 1\n', 'p.txt')).toThrow(/p\.txt:3: expected "name n1 n2" \(same\) or "name1 n1 name2 n2" \(different\), got 2 fields/);
    expect(() => parseLfwPairs('1 1\nAlice 1 x\nBob 1 Carol 2\n', 'p.txt')).toThrow(/p\.txt:2: image numbers must be positive integers/);
    expect(() => parseLfwPairs('2 1\nAlice 1 2\nBob 1 Carol 2\n', 'p.txt')).toThrow(/announces 4 pairs \(2 × 2 × 1\), the file has 2/);
    const ok = parseLfwPairs('2\nA 1 2\nB 3 4\nA 1 B 2\nB 1 C 2\n');
    expect(ok).toMatchObject({ folds: 1, perFold: 2 });
    expect(ok.pairs.map((p) => p.same)).toEqual([true, true, false, false]);
  });

  it('pair list: field count and label', () => {
    expect(() => parsePairList('a.png\tb.png\n', 'l.tsv')).toThrow(/l\.tsv:1: expected "pathA<TAB>pathB<TAB>1\|0", got 2 fields/);
    expect(() => parsePairList('# c\n\na.png\tb.png\tyes\n', 'l.tsv')).toThrow(/l\.tsv:3: the label must be 1 \(same\) or 0 \(different\), got "yes"/);
    expect(() => parsePairList('# nothing\n', 'l.tsv')).toThrow(/l\.tsv: no pairs/);
    expect(parsePairList('my a.png\tmy b.png\t1\nc.png d.png 0\n')).toMatchObject([
      { a: 'my a.png', b: 'my b.png', same: true },
      { a: 'c.png', b: 'd.png', same: false },
    ]);
  });

  it('missing files, a missing image, an undecodable image', async () => {
    expect(() => loadVerificationSet({ kind: 'bin', file: join(dir, 'nope.bin') })).toThrow(VerificationSetError);
    expect(() => loadVerificationSet({ kind: 'bin', file: join(dir, 'nope.bin') })).toThrow(/\.bin pack .*nope\.bin does not exist/);
    expect(() => loadVerificationSet({ kind: 'pair-list', file: join(dir, 'nope.tsv') })).toThrow(/pair list .*nope\.tsv does not exist/);
    expect(() => loadVerificationSet({ kind: 'lfw-pairs', pairs: fx.pairsTxt, images: join(dir, 'nope') })).toThrow(/images directory .*nope does not exist/);

    const list = join(dir, 'missing.tsv');
    writeFileSync(list, 'images/Person_A/Person_A_0001.png\timages/Nobody/Nobody_0001.png\t0\n');
    expect(() => loadVerificationSet({ kind: 'pair-list', file: list })).toThrow(/missing\.tsv:1: image .*Nobody_0001\.png does not exist/);

    const sub = join(dir, 'lfw-missing');
    mkdirSync(join(sub, 'Zed'), { recursive: true });
    writeFileSync(join(sub, 'pairs.txt'), '1\nZed 1 2\nZed 1 Zed 2\n');
    writeFileSync(join(sub, 'Zed', 'Zed_0001.png'), 'x');
    expect(() => loadVerificationSet({ kind: 'lfw-pairs', pairs: join(sub, 'pairs.txt'), images: sub })).toThrow(/pairs\.txt:2: no image Zed #2: looked for .*Zed_0002\{\.jpg,\.jpeg,\.png,\.pgm\}/);

    // an undecodable image is named
    writeFileSync(join(sub, 'Zed', 'Zed_0002.jpg'), 'not an image');
    const s = loadVerificationSet({ kind: 'lfw-pairs', pairs: join(sub, 'pairs.txt'), images: sub });
    await expect(verifySet(backbone, s, { imageSize: 32 })).rejects.toThrow(ImageInputError);
    await expect(verifySet(backbone, s, { imageSize: 32 })).rejects.toThrow(/Zed_0001\.png: cannot decode image: not a JPEG, PNG, PGM or PPM image/);
  });

  it('a .bin that is a numpy pack', () => {
    const p = join(dir, 'numpy.bin');
    writeFileSync(p, Uint8Array.from([0x80, 0x02, 0x5d, 0x28, 0x63, ...Buffer.from('numpy\nndarray\n'), 0x2e]));
    expect(() => loadVerificationSet({ kind: 'bin', file: p })).toThrow(/stores numpy arrays \(numpy\.ndarray\)/);
  });
});

describe('train config `val`', () => {
  it('parses NAME=PATH entries into the three kinds', () => {
    expect(parseValSpecs('')).toEqual([]);
    expect(parseValSpecs('none')).toEqual([]);
    expect(parseValSpecs('lfw=data/lfw.bin, raw=lfw/pairs.txt::lfw/images ,mine=my.tsv')).toEqual([
      { name: 'lfw', spec: { kind: 'bin', file: 'data/lfw.bin' } },
      { name: 'raw', spec: { kind: 'lfw-pairs', pairs: 'lfw/pairs.txt', images: 'lfw/images' } },
      { name: 'mine', spec: { kind: 'pair-list', file: 'my.tsv' } },
    ]);
    expect(() => parseValSpecs('data/lfw.bin')).toThrow(/val: no NAME= in "data\/lfw\.bin"/);
    expect(() => parseValSpecs('a-b=x.bin')).toThrow(/letters, digits and _/);
    expect(() => parseValSpecs('a=x.bin,a=y.bin')).toThrow(/used twice/);
    expect(() => parseValSpecs('a=pairs.txt::')).toThrow(/needs both parts/);
  });

  it('loads and scores sets into val_NAME_* metrics', async () => {
    const sets = loadValSets(`syn=${fx.bin},lst=${fx.pairList}`);
    const m = await scoreValSets(backbone, sets, { imageSize: 32 });
    expect(Object.keys(m).sort()).toEqual(['val_lst_accuracy', 'val_lst_accuracy_std', 'val_lst_threshold', 'val_syn_accuracy', 'val_syn_accuracy_std', 'val_syn_threshold']);
    expect(m.val_syn_accuracy).toBe(m.val_lst_accuracy);
    expect(() => loadValSets(`x=${join(dir, 'gone.bin')}`)).toThrow(/val x: \.bin pack .*gone\.bin does not exist/);
  });
});

// keep the writer honest: a pack of one pair parses back
it('picklePy2 round-trips', () => {
  const p = join(dir, 'one.bin');
  writeFileSync(p, picklePy2([Uint8Array.of(1, 2), Uint8Array.of(1, 2)], [true]));
  const s = loadVerificationSet({ kind: 'bin', file: p });
  expect(s.images.length).toBe(1); // identical bytes listed once
  unlinkSync(p);
});
