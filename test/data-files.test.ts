import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { renderSyntheticFace } from '../src/data/synthetic.js';
import { convertToRecordIO } from '../src/data/convert.js';
import { openDataset, openTrainingData } from '../src/data/open.js';
import { parseDataSpec, isAsyncDataset, type AsyncDataset } from '../src/data/dataset.js';
import { decodeImage, encodePgm, normaliseInto } from '../src/data/decode.js';
import { RecordIOWriter, packRecord, encodeRecord, decodeRecord, RECORDIO_MAGIC } from '../src/data/recordio.js';
import { DistributedSampler } from '../src/data/sampler.js';
import { Loader } from '../src/data/loader.js';
import { resolveConfig, trainFacts } from '../src/config/index.js';
import { scanImageFolder } from '../src/data/data-files.js';

const S = 16;
let root: string;
let folder: string;
const truth = new Map<string, { label: number; rgb: Uint8Array }>();

async function png(rgb: Uint8Array, size = S): Promise<Buffer> {
  return sharp(rgb, { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toBuffer();
}

async function async(ds: unknown): Promise<AsyncDataset> {
  expect(isAsyncDataset(ds as AsyncDataset)).toBe(true);
  return ds as AsyncDataset;
}

async function loadAll(ds: AsyncDataset): Promise<{ images: Float32Array[]; labels: number[] }> {
  const images: Float32Array[] = [];
  const labels: number[] = [];
  for (let i = 0; i < ds.size; i++) {
    const out = new Float32Array(ds.imageSize * ds.imageSize * 3);
    labels.push(await ds.load(i, out, 0));
    images.push(out);
  }
  return { images, labels };
}

function expected(rgb: Uint8Array): Float32Array {
  const f = new Float32Array(rgb.length);
  normaliseInto(rgb, f, 0);
  return f;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'shardface-data-'));
  folder = join(root, 'faces');
  // 3 identities (b, a, c sorted → a=0, b=1, c=2), 2-3 images each, PNG (lossless)
  const ids = ['b_person', 'a_person', 'c_person'];
  for (const [n, name] of ids.entries()) {
    mkdirSync(join(folder, name), { recursive: true });
    for (let k = 0; k < 2 + (n % 2); k++) {
      const rgb = renderSyntheticFace(3, n, k, S);
      const file = join(folder, name, `img${k}.png`);
      writeFileSync(file, await png(rgb));
      truth.set(file, { label: [...ids].sort().indexOf(name), rgb });
    }
  }
  writeFileSync(join(folder, 'README.txt'), 'ignored');
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('image folder', () => {
  it('assigns labels by sorted folder name and decodes pixel-exact', async () => {
    const spec = parseDataSpec(folder);
    expect(spec).toMatchObject({ kind: 'folder', identities: 3, images: 7 });
    const ds = await async(await openDataset(spec, { imageSize: S }));
    const { images, labels } = await loadAll(ds);
    expect(labels).toEqual([0, 0, 0, 1, 1, 2, 2]);
    const files = [...truth.keys()].sort();
    files.forEach((f, i) => expect(images[i]).toEqual(expected(truth.get(f)!.rgb)));
  });

  it('trainFacts reads classes and images from the data', () => {
    const cfg = resolveConfig({ overrides: { data: folder, workers: 1, batch: 2, 'held-out-identities': 0 } });
    const f = trainFacts(cfg);
    expect(f).toMatchObject({ numClasses: 3, trainImages: 7, heldOutImages: 0, stepsPerEpoch: 3 });
    expect(() => resolveConfig({ overrides: { data: folder, workers: 4, batch: 1 } })).toThrow(/4 workers but only 3 classes/);
    expect(() => resolveConfig({ overrides: { data: join(root, 'nope') } })).toThrow(/no such file or folder/);
  });
});

describe('image folder with symbolic links', () => {
  /** A folder whose identities are links: a_person links to the real folder, b_person is a real folder of linked images. */
  function linkedFolder(name: string): string {
    const dir = join(root, name);
    mkdirSync(join(dir, 'b_person'), { recursive: true });
    symlinkSync(join(folder, 'a_person'), join(dir, 'a_person'), 'dir');
    for (const f of ['img0.png', 'img1.png']) symlinkSync(join(folder, 'b_person', f), join(dir, 'b_person', f));
    return dir;
  }

  it('follows linked identity folders and linked image files, and reads the same pixels', async () => {
    const dir = linkedFolder('linked');
    const layout = scanImageFolder(dir);
    expect(layout.classNames).toEqual(['a_person', 'b_person']);
    expect(Array.from(layout.labels)).toEqual([0, 0, 0, 1, 1]);
    const ds = await async(await openDataset(dir, { imageSize: S }));
    const { images } = await loadAll(ds);
    const originals = [...truth.keys()].sort().slice(0, 5);
    originals.forEach((f, i) => expect(images[i]).toEqual(expected(truth.get(f)!.rgb)));
  });

  it('a link to itself, an identity folder leading back to the data folder, and a dangling link are clear errors', () => {
    const self = linkedFolder('loop-self');
    symlinkSync(join(self, 'c_person'), join(self, 'c_person'));
    expect(() => scanImageFolder(self)).toThrow(/c_person is a symbolic link loop/);

    const back = linkedFolder('loop-back');
    symlinkSync(back, join(back, 'c_person'), 'dir');
    expect(() => scanImageFolder(back)).toThrow(/c_person: symbolic link loop: the identity folder leads back to .*the data folder itself/);
    const above = linkedFolder('loop-above');
    symlinkSync(root, join(above, 'c_person'), 'dir');
    expect(() => scanImageFolder(above)).toThrow(/symbolic link loop: .*a folder above the data folder/);

    const imgLoop = linkedFolder('loop-image');
    symlinkSync(join(imgLoop, 'b_person', 'x.png'), join(imgLoop, 'b_person', 'x.png'));
    expect(() => scanImageFolder(imgLoop)).toThrow(/b_person\/x\.png is a symbolic link loop/);

    const dangling = linkedFolder('dangling');
    symlinkSync(join(root, 'gone.png'), join(dangling, 'b_person', 'gone.png'));
    expect(() => scanImageFolder(dangling)).toThrow(/b_person\/gone\.png is a symbolic link to nothing/);
  });
});

describe('folder → RecordIO', () => {
  it('yields the same images and labels, insightface layout', async () => {
    const out = join(root, 'rec');
    const r = await convertToRecordIO({ from: folder, to: out });
    expect(r).toMatchObject({ images: 7, identities: 3, width: S, height: S });
    const spec = parseDataSpec(out);
    expect(spec).toMatchObject({ kind: 'recordio', identities: 3, images: 7 });
    expect(parseDataSpec(join(out, 'train.rec'))).toMatchObject({ kind: 'recordio' });
    const rec = await async(await openDataset(out, { imageSize: S }));
    const fromRec = await loadAll(rec);
    const fromFolder = await loadAll(await async(await openDataset(folder, { imageSize: S })));
    expect(fromRec.labels).toEqual(fromFolder.labels);
    fromRec.images.forEach((im, i) => expect(im).toEqual(fromFolder.images[i]));
    await rec.close();
  });

  it('shuffled conversion keeps every image with its own label', async () => {
    const out = join(root, 'rec-shuffled');
    await convertToRecordIO({ from: folder, to: out, shuffle: true, seed: 5 });
    const { images, labels } = await loadAll(await async(await openDataset(out, { imageSize: S })));
    const want = [...truth.values()].map((t) => ({ label: t.label, key: expected(t.rgb).slice(0, 12).join() }));
    const got = images.map((im, i) => ({ label: labels[i], key: im.slice(0, 12).join() }));
    expect(got.sort((a, b) => a.key.localeCompare(b.key))).toEqual(want.sort((a, b) => a.key.localeCompare(b.key)));
  });
});

describe('RecordIO written by hand', () => {
  async function write(dir: string, records: [number, Uint8Array][], property?: string) {
    mkdirSync(dir, { recursive: true });
    const w = new RecordIOWriter(join(dir, 'train.rec'), join(dir, 'train.idx'));
    for (const [k, p] of records) w.write(k, p);
    w.close();
    if (property) writeFileSync(join(dir, 'property'), property);
  }

  it("reads insightface's layout: header record, identity records with label ranges, images with [label, aligned]", async () => {
    const imgs = await Promise.all([0, 1, 2, 3].map((k) => png(renderSyntheticFace(9, k, 0, S))));
    // images at keys 1..4 (labels 0,0,1,1 stored face2rec2-style as [label, 1]); header → identities at keys 5,6
    const dir = join(root, 'insightface');
    await write(dir, [
      [1, packRecord({ label: [0, 1], id: 1 }, imgs[0])],
      [2, packRecord({ label: [0, 1], id: 2 }, imgs[1])],
      [3, packRecord({ label: [1, 1], id: 3 }, imgs[2])],
      [4, packRecord({ label: [1, 1], id: 4 }, imgs[3])],
      [0, packRecord({ label: [5, 7], id: 0 })],
      [5, packRecord({ label: [1, 3], id: 5 })],
      [6, packRecord({ label: [3, 5], id: 6 })],
    ]);
    expect(parseDataSpec(dir)).toMatchObject({ kind: 'recordio', identities: 2, images: 4 });
    const ds = await async(await openDataset(dir, { imageSize: S }));
    const { labels, images } = await loadAll(ds);
    expect(labels).toEqual([0, 0, 1, 1]);
    expect(images[2]).toEqual(expected(renderSyntheticFace(9, 2, 0, S)));
  });

  it('reads plain im2rec files without a header (labels from each record, classes = max + 1 or property)', async () => {
    const imgs = await Promise.all([0, 1, 2].map((k) => png(renderSyntheticFace(9, k, 1, S))));
    const dir = join(root, 'plain');
    await write(dir, [
      [0, packRecord({ label: 4 }, imgs[0])],
      [1, packRecord({ label: 1 }, imgs[1])],
      [7, packRecord({ label: 4 }, imgs[2])],
    ]);
    expect(parseDataSpec(join(dir, 'train.rec'))).toMatchObject({ kind: 'recordio', identities: 5, images: 3 });
    const { labels } = await loadAll(await async(await openDataset(dir, { imageSize: S })));
    expect(labels).toEqual([4, 1, 4]);
    const dir2 = join(root, 'plain-property');
    await write(dir2, [[0, packRecord({ label: 1 }, imgs[0])]], '10,16,16\n');
    expect(parseDataSpec(dir2)).toMatchObject({ identities: 10, images: 1 });
  });

  it('splits and rejoins payloads that contain the magic (continuation parts)', () => {
    const payload = new Uint8Array(40).map((_, i) => i);
    new DataView(payload.buffer).setUint32(8, RECORDIO_MAGIC, true);
    new DataView(payload.buffer).setUint32(20, RECORDIO_MAGIC, true);
    const bytes = encodeRecord(payload);
    expect(bytes.length).toBe(3 * 8 + 40 - 8); // three parts, the two magics dropped from the data
    const r = decodeRecord(bytes);
    expect(Array.from(r.payload)).toEqual(Array.from(payload));
    expect(r.bytesUsed).toBe(bytes.length);
    const odd = encodeRecord(new Uint8Array(5));
    expect(odd.length).toBe(8 + 8); // padded to 4 bytes
  });
});

describe('list files, PGM, grey-scale', () => {
  it('reads path<TAB>label lists with paths relative to the list', async () => {
    const files = [...truth.keys()].sort();
    const list = join(root, 'train.lst');
    writeFileSync(list, `# a list\n${files.map((f, i) => `${f.slice(root.length + 1)}\t${i % 2 ? 3 : 0}`).join('\n')}\n`);
    expect(parseDataSpec(list)).toMatchObject({ kind: 'list', identities: 4, images: files.length });
    const ds = await async(await openDataset(list, { imageSize: S }));
    const { labels, images } = await loadAll(ds);
    expect(labels).toEqual(files.map((_, i) => (i % 2 ? 3 : 0)));
    expect(images[0]).toEqual(expected(truth.get(files[0]!)!.rgb));
  });

  it('decodes PGM P2 and P5 and replicates grey to three channels', async () => {
    const grey = new Uint8Array(S * S).map((_, i) => (i * 7) % 256);
    const want = new Float32Array(S * S * 3);
    for (let i = 0; i < S * S; i++) for (let c = 0; c < 3; c++) want[i * 3 + c] = grey[i]! / 127.5 - 1;
    for (const ascii of [false, true]) {
      const r = await decodeImage(encodePgm(grey, S, S, ascii), { size: S });
      expect(r.channels).toBe(3);
      expect(r.source).toMatchObject({ format: 'pgm', channels: 1 });
      expect(r.data).toEqual(want);
    }
    const greyPng = await sharp(Buffer.from(grey), { raw: { width: S, height: S, channels: 1 } })
      .png()
      .toBuffer();
    expect((await decodeImage(greyPng, { size: S })).data).toEqual(want);
    const greyJpeg = await sharp(Buffer.from(grey), { raw: { width: S, height: S, channels: 1 } })
      .jpeg({ quality: 95 })
      .toBuffer();
    const j = (await decodeImage(greyJpeg, { size: S })).data;
    for (let i = 0; i < j.length; i += 3) expect(j[i]).toBe(j[i + 2]);
    // a PGM folder, resized from 24×20 (short side → 16, centre crop)
    const pgmDir = join(root, 'pgm');
    mkdirSync(join(pgmDir, 'x'), { recursive: true });
    writeFileSync(join(pgmDir, 'x', 'a.pgm'), encodePgm(new Uint8Array(24 * 20).fill(200), 24, 20));
    writeFileSync(join(pgmDir, 'x', 'b.pgm'), encodePgm(new Uint8Array(24 * 20).fill(10), 24, 20, true));
    const { images } = await loadAll(await async(await openDataset(pgmDir, { imageSize: S })));
    expect(images[0]!.every((v) => Math.abs(v - (200 / 127.5 - 1)) < 1e-6)).toBe(true);
    expect(images[1]!.every((v) => Math.abs(v - (10 / 127.5 - 1)) < 1e-6)).toBe(true);
  });
});

describe('async loader over files', () => {
  it('n workers × B equals 1 worker × n·B (flips and augmentation included), with prefetch', async () => {
    const { train } = await openTrainingData({ data: folder, imageSize: S, imagesPerIdentity: 0, heldOutIdentities: 0, seed: 1 });
    const augment = { cropScale: 0.6, colourJitter: 0.3, grey: 0.3 };
    const mk = (world: number, rank: number, b: number, prefetch: number) =>
      new Loader({ dataset: train, sampler: new DistributedSampler({ size: train.size, world, rank, batchPerWorker: b, seed: 4 }), flip: true, augment, prefetch });
    const single = mk(1, 0, 6, 0);
    const parts = [mk(2, 0, 3, 2), mk(2, 1, 3, 1)];
    for (const epoch of [0, 1, 2]) {
      const one = await single.batch(epoch, 0);
      const two = [await parts[0]!.batch(epoch, 0), await parts[1]!.batch(epoch, 0)];
      expect(Array.from(one.labels)).toEqual([...two[0]!.labels, ...two[1]!.labels]);
      expect(Array.from(one.images)).toEqual([...two[0]!.images, ...two[1]!.images]);
    }
  });
});
