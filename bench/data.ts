/**
 * Data loading throughput: images per second decoded into training batches
 * (read + decode + normalise + flip), through the Loader with prefetch, as a
 * training step would see it.
 *
 * `data` is a path (RecordIO, image folder, list file) or `synthetic-rec:N`:
 * N synthetic faces (imageSize², JPEG quality 90, 100 identities) written to a
 * temporary folder, converted to RecordIO, and benchmarked from that.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { openDataset } from '../src/data/open.js';
import { DistributedSampler } from '../src/data/sampler.js';
import { Loader } from '../src/data/loader.js';
import { renderSyntheticFace } from '../src/data/synthetic.js';
import { convertToRecordIO } from '../src/data/convert.js';

export interface BenchDataOptions {
  data: string;
  batch: number;
  imageSize?: number;
  /** Timed batches (after one warm-up batch); default 20. */
  batches?: number;
  prefetch?: number;
  decodeThreads?: number;
}

/** Writes N synthetic faces as JPEG folders (100 identities) and converts them to RecordIO; returns the rec folder. */
export async function buildSyntheticRec(n: number, imageSize: number, root: string): Promise<string> {
  const ids = Math.min(100, n);
  const folder = join(root, 'folder');
  const unique: Buffer[] = []; // rendering is slow: at most 400 distinct faces, reused
  for (let i = 0; i < n; i++) {
    const id = i % ids;
    const dir = join(folder, `id${String(id).padStart(4, '0')}`);
    if (i < ids) mkdirSync(dir, { recursive: true });
    if (i < 400) {
      const rgb = renderSyntheticFace(7, id, Math.floor(i / ids), imageSize);
      unique.push(
        await sharp(rgb, { raw: { width: imageSize, height: imageSize, channels: 3 } })
          .jpeg({ quality: 90 })
          .toBuffer(),
      );
    }
    writeFileSync(join(dir, `${String(i).padStart(7, '0')}.jpg`), unique[i % unique.length]!);
  }
  const rec = join(root, 'rec');
  await convertToRecordIO({ from: folder, to: rec });
  return rec;
}

export async function benchData(o: BenchDataOptions): Promise<Record<string, unknown>> {
  const imageSize = o.imageSize ?? 112;
  const batches = o.batches ?? 20;
  let path = o.data;
  let tmp: string | null = null;
  const m = /^synthetic-rec:(\d+)$/.exec(o.data);
  let buildSeconds = 0;
  if (m) {
    tmp = mkdtempSync(join(tmpdir(), 'shardface-bench-data-'));
    const t = performance.now();
    path = await buildSyntheticRec(Number(m[1]), imageSize, tmp);
    buildSeconds = (performance.now() - t) / 1000;
  }
  try {
    const dataset = await openDataset(path, { imageSize });
    const sampler = new DistributedSampler({ size: dataset.size, world: 1, rank: 0, batchPerWorker: o.batch, seed: 1, dropLast: false });
    const loader = new Loader({ dataset, sampler, flip: true, prefetch: o.prefetch ?? 2, decodeThreads: o.decodeThreads ?? 0 });
    const steps = sampler.epochBatches();
    const at = (k: number) => [Math.floor(k / steps), k % steps] as const;
    await loader.batch(...at(0)); // warm-up (opens files, fills the prefetch queue)
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    for (let k = 1; k <= batches; k++) await loader.batch(...at(k));
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(c0);
    const cpuMsPerImage = (cpu.user + cpu.system) / 1000 / (batches * o.batch);
    await loader.close();
    return {
      bench: 'data',
      data: o.data,
      batch: o.batch,
      image_size: imageSize,
      batches,
      prefetch: loader.prefetch,
      decode_threads: loader.decodeThreads,
      uv_threadpool_size: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
      images: dataset.size,
      images_per_s: Math.round((batches * o.batch) / seconds),
      ms_per_batch: +((seconds * 1000) / batches).toFixed(2),
      // CPU time of this process per image (all threads): what the data path costs whatever else runs on the machine
      cpu_ms_per_image: +cpuMsPerImage.toFixed(3),
      cores: availableParallelism(),
      load_average: +loadavg()[0]!.toFixed(2),
      bad_samples: loader.badSamples.size,
      ...(m ? { build_seconds: +buildSeconds.toFixed(1) } : {}),
    };
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}
