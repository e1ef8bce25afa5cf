/**
 * Image folder (or list file) → insightface RecordIO, laid out as
 * insightface's face2rec2 writes it:
 *   keys 1..N      image records: IRHeader(flag 0, label, id = key, 0) + encoded image
 *   key 0          header: IRHeader(flag 2, labels [N+1, N+1+C], id 0)
 *   keys N+1..N+C  identity records: IRHeader(flag 2, labels [start, end), id = key), label j at N+1+j
 * plus `property` = `C,height,width`. JPEG and PNG bytes are copied as they
 * are; PGM/PPM (which mxnet's decoder may not read) are re-encoded as PNG,
 * losslessly. An identity's images stay contiguous: --shuffle shuffles the
 * order of identities and of the images within each, never the labels.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Rng } from '../common/random.js';
import { parseNetpbm, probeImage, sniffFormat } from './decode.js';
import { packRecord, RecordIOWriter } from './recordio.js';
import { scanDataPath, type FileListLayout } from './data-files.js';

export interface ConvertOptions {
  /** An image folder or a list file. */
  from: string;
  /** Output folder: train.rec, train.idx, property. */
  to: string;
  shuffle?: boolean;
  seed?: number;
  /** Called every 1000 images. */
  onProgress?: (done: number, total: number) => void;
}

export interface ConvertResult {
  rec: string;
  idx: string;
  property: string;
  images: number;
  identities: number;
  width: number;
  height: number;
  /** Images whose size differs from the first one's. */
  otherSizes: number;
  /** Images that were re-encoded (PGM/PPM → PNG). */
  reencoded: number;
}

export async function convertToRecordIO(o: ConvertOptions): Promise<ConvertResult> {
  const layout = scanDataPath(o.from);
  if (!layout) throw new Error(`${o.from} does not exist`);
  if (layout.kind === 'recordio') throw new Error(`${o.from} is already RecordIO`);
  const order = imageOrder(layout, o.shuffle ?? false, o.seed ?? 1);
  mkdirSync(o.to, { recursive: true });
  const rec = join(o.to, 'train.rec');
  const idx = join(o.to, 'train.idx');
  const property = join(o.to, 'property');
  const writer = new RecordIOWriter(rec, idx);
  const n = order.length;
  const ranges = new Array<[number, number]>(layout.numClasses).fill([0, 0]);
  let width = 0;
  let height = 0;
  let otherSizes = 0;
  let reencoded = 0;
  try {
    let key = 1;
    let runLabel = -1;
    let runStart = 1;
    for (let i = 0; i < n; i++) {
      const file = layout.files[order[i]!]!;
      const label = layout.labels[order[i]!]!;
      let bytes: Uint8Array = readFileSync(file);
      const format = sniffFormat(bytes);
      if (format === 'pgm' || format === 'ppm') {
        const img = parseNetpbm(bytes);
        bytes = await sharp(img.pixels, { raw: { width: img.width, height: img.height, channels: img.channels } })
          .png()
          .toBuffer();
        reencoded++;
      }
      const info = await probeImage(bytes).catch((e: Error) => {
        throw new Error(`${file}: ${e.message}`);
      });
      if (i === 0) [width, height] = [info.width, info.height];
      else if (info.width !== width || info.height !== height) otherSizes++;
      if (label !== runLabel) {
        if (runLabel >= 0) ranges[runLabel] = [runStart, key];
        runLabel = label;
        runStart = key;
      }
      writer.write(key, packRecord({ label, id: key }, bytes));
      key++;
      if (o.onProgress && (i + 1) % 1000 === 0) o.onProgress(i + 1, n);
    }
    if (runLabel >= 0) ranges[runLabel] = [runStart, key];
    const first = n + 1;
    writer.write(0, packRecord({ label: [first, first + layout.numClasses], id: 0 }));
    for (let j = 0; j < layout.numClasses; j++) writer.write(first + j, packRecord({ label: ranges[j]!, id: first + j }));
  } finally {
    writer.close();
  }
  writeFileSync(property, `${layout.numClasses},${height},${width}\n`);
  return { rec, idx, property, images: n, identities: layout.numClasses, width, height, otherSizes, reencoded };
}

/** Dataset indices grouped by label (label order, or shuffled identities and images with `shuffle`). */
function imageOrder(layout: FileListLayout, shuffle: boolean, seed: number): number[] {
  const byLabel: number[][] = Array.from({ length: layout.numClasses }, () => []);
  layout.labels.forEach((l, i) => byLabel[l]!.push(i));
  const labels = byLabel.map((_, j) => j);
  if (shuffle) {
    const r = Rng.derive(seed, 'convert-shuffle');
    r.shuffle(labels);
    for (const group of byLabel) r.shuffle(group);
  }
  return labels.flatMap((j) => byLabel[j]!);
}
