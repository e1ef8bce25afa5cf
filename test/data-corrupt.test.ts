import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { renderSyntheticFace } from '../src/data/synthetic.js';
import { openDataset } from '../src/data/open.js';
import { BadSampleError, type AsyncDataset } from '../src/data/dataset.js';
import { RecordIOWriter, packRecord } from '../src/data/recordio.js';
import { DistributedSampler } from '../src/data/sampler.js';
import { DataError, Loader, skippedInBatch, type BadSampleEvent } from '../src/data/loader.js';
import { scanRecordIO } from '../src/data/data-files.js';
import { checkRecordIO } from '../src/data/recordio-check.js';

const S = 16;
let dir: string;
const LABELS = [0, 1, 2, 0, 2, 1, 1];
// dataset index = .idx order: keys 0,1,2,3,4,6 then 5 (appended), so index 5 is key 6 and index 6 is key 5
const BAD: Record<number, RegExp> = { 2: /bad magic/, 3: /cannot decode image/, 5: /truncated record/, 6: /past the end/ };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'shardface-corrupt-'));
  const w = new RecordIOWriter(join(dir, 'train.rec'), join(dir, 'train.idx'));
  for (let k = 0; k < 7; k++) {
    if (k === 5) continue; // written below as an index entry past the end
    const png = await sharp(renderSyntheticFace(1, k, 0, S), { raw: { width: S, height: S, channels: 3 } })
      .png()
      .toBuffer();
    const image = k === 3 ? png.subarray(0, 40) : png; // undecodable: a PNG cut after its header
    w.write(k, packRecord({ label: LABELS[k]!, id: k }, image));
  }
  w.close();
  appendFileSync(join(dir, 'train.idx'), `5\t${statSync(join(dir, 'train.rec')).size + 1000}\n`);
  writeFileSync(join(dir, 'property'), `3,${S},${S}\n`);
  // bad magic on record 2, truncate record 6 (the last one)
  const idx = readFileSync(join(dir, 'train.idx'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split('\t').map(Number));
  const off2 = idx.find(([k]) => k === 2)![1]!;
  const rec = readFileSync(join(dir, 'train.rec'));
  rec.writeUInt32LE(0xdeadbeef, off2);
  writeFileSync(join(dir, 'train.rec'), rec);
  truncateSync(join(dir, 'train.rec'), rec.length - 30);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function loader(ds: AsyncDataset, o: { strictData?: boolean; prefetch?: number; onBadSample?: (e: BadSampleEvent) => void } = {}) {
  return new Loader({ dataset: ds, sampler: new DistributedSampler({ size: ds.size, world: 1, rank: 0, batchPerWorker: ds.size, seed: 3 }), ...o });
}

describe('corrupt RecordIO data', () => {
  it('each bad record is a BadSampleError naming file, image and reason', async () => {
    const ds = (await openDataset(dir, { imageSize: S })) as AsyncDataset;
    const out = new Float32Array(S * S * 3);
    for (let i = 0; i < ds.size; i++) {
      const p = ds.load(i, out, 0);
      if (BAD[i]) {
        const e = await p.catch((x: unknown) => x);
        expect(e).toBeInstanceOf(BadSampleError);
        expect((e as BadSampleError).file).toBe(join(dir, 'train.rec'));
        expect((e as BadSampleError).index).toBe(i);
        expect((e as BadSampleError).reason).toMatch(BAD[i]!);
      } else expect(await p).toBe(LABELS[i]);
    }
    await ds.close();
  });

  it('skips, counts and reports bad records; replacements keep their own labels', async () => {
    const ds = (await openDataset(dir, { imageSize: S })) as AsyncDataset;
    const events: BadSampleEvent[] = [];
    const l = loader(ds, { prefetch: 0, onBadSample: (e) => events.push(e) });
    for (const epoch of [0, 1]) {
      const b = await l.batch(epoch, 0);
      for (let k = 0; k < b.indices.length; k++) {
        const src = b.sources![k]!;
        expect(BAD[src]).toBeUndefined();
        expect(b.labels[k]).toBe(LABELS[src]);
        if (!BAD[b.indices[k]!]) expect(src).toBe(b.indices[k]);
      }
    }
    expect([...l.badSamples.keys()].sort()).toEqual([2, 3, 5, 6]);
    expect(events.map((e) => e.index).sort()).toEqual([2, 3, 5, 6]); // reported once each, not per epoch
    for (const e of events) expect(e.reason).toMatch(BAD[e.index]!);
    expect(l.replacements).toBe(8); // 4 bad slots × 2 epochs (no prefetch)
    // deterministic: a second loader picks the same replacements
    const again = await loader(ds, { onBadSample: () => {} }).batch(0, 0);
    expect(Array.from(again.sources!)).toEqual(Array.from((await loader(ds, { onBadSample: () => {} }).batch(0, 0)).sources!));
    await l.close();
  });

  it('checkRecordIO names each broken record (bad magic at its offset, past the end, truncated) and counts the readable ones', () => {
    const layout = scanRecordIO(join(dir, 'train.rec'));
    const idx = readFileSync(join(dir, 'train.idx'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('\t').map(Number));
    const at = (k: number) => idx.find(([key]) => key === k)![1]!;
    const c = checkRecordIO(layout);
    expect(c.records).toBe(7);
    // key 3 holds an undecodable image, but its record is intact: the check reads framing and IRHeader, not pixels
    expect(c.readableRecords).toBe(4);
    expect(c.readableImages).toBe(4);
    expect(c.problems).toEqual([
      `key 2 at offset ${at(2)}: bad magic 0xdeadbeef at offset ${at(2)} (expected 0xced7230a)`,
      expect.stringMatching(new RegExp(`^key 6 at offset ${at(6)}: truncated record: a part of \\d+ bytes at ${at(6)}, but the file ends \\d+ bytes after its header$`)),
      `key 5 at offset ${at(5)}: index entry past the end of the file (${statSync(join(dir, 'train.rec')).size} bytes)`,
    ]);
  });

  it('skippedInBatch counts the replaced slots of a batch', async () => {
    const ds = (await openDataset(dir, { imageSize: S })) as AsyncDataset;
    const l = loader(ds, { prefetch: 0, onBadSample: () => {} });
    const b = await l.batch(0, 0);
    const bad = Array.from(b.indices).filter((i) => BAD[i] !== undefined).length;
    expect(bad).toBe(4);
    expect(skippedInBatch(b)).toBe(bad);
    await l.close();
  });

  it('strictData turns the first bad record into a clear error', async () => {
    const ds = (await openDataset(dir, { imageSize: S })) as AsyncDataset;
    const e = await loader(ds, { strictData: true })
      .batch(0, 0)
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DataError);
    expect((e as Error).message).toContain(join(dir, 'train.rec'));
    expect((e as Error).message).toMatch(/image \d( \(record \d\))?: (bad magic|cannot decode|index offset .* past the end|truncated record)/);
    expect((e as Error).message).toMatch(/strictData/);
  });

  it('an unreadable file in an image folder is skipped the same way', async () => {
    const folder = join(dir, 'folder');
    mkdirSync(join(folder, 'a'), { recursive: true });
    mkdirSync(join(folder, 'b'), { recursive: true });
    const png = await sharp(renderSyntheticFace(1, 0, 0, S), { raw: { width: S, height: S, channels: 3 } })
      .png()
      .toBuffer();
    writeFileSync(join(folder, 'a', '1.png'), png);
    writeFileSync(join(folder, 'a', '2.jpg'), Buffer.from('not a jpeg at all'));
    writeFileSync(join(folder, 'b', '1.png'), png);
    const ds = (await openDataset(folder, { imageSize: S })) as AsyncDataset;
    const events: BadSampleEvent[] = [];
    const b = await loader(ds, { onBadSample: (e) => events.push(e) }).batch(0, 0);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ file: join(folder, 'a', '2.jpg'), index: 1 });
    expect(events[0]!.reason).toMatch(/not a JPEG, PNG, PGM or PPM/);
    for (let k = 0; k < 3; k++) expect(b.labels[k]).toBe(b.sources![k] === 2 ? 1 : 0);
  });
});
