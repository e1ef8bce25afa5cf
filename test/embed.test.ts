/**
 * `shardface embed` end to end on PNG files: one JSON line per image with the
 * flip-fused unit embedding n(e + e_flip) and the magnitude ‖e‖ of the raw
 * embedding, the same numbers as computing them by hand from the checkpoint;
 * an unreadable file is reported and makes the exit status 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/ops/tf.js';
import { createBackbone } from '../src/models/index.js';
import { BACKBONE_FILE, stepDir, writeCheckpointFile, writeManifest } from '../src/checkpoint/checkpoint.js';
import type { StoredTensor } from '../src/checkpoint/tensor-file.js';
import { loadBackboneFromCheckpoint } from '../src/eval/load-backbone.js';
import { decodeImage } from '../src/data/decode.js';
import { encodePng } from '../src/data/image-file.js';
import { CLI } from './helpers/processes.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Line {
  image: string;
  embedding: number[];
  magnitude: number;
}

async function writeTinyCheckpoint(root: string): Promise<string> {
  const b = createBackbone('tiny', { seed: 9, embeddingSize: 64, inputSize: 32 });
  const tensors: Record<string, StoredTensor> = {};
  let k = 1;
  for (const [key, v] of b.state()) {
    const t = key.endsWith('.runningVar') ? tf.randomUniform(v.shape, 0.5, 2, 'float32', k++) : key.endsWith('.runningMean') ? tf.randomNormal(v.shape, 0, 0.2, 'float32', k++) : v.clone();
    tensors[key] = { data: (await t.data()) as Float32Array, shape: [...v.shape] };
    t.dispose();
  }
  b.dispose();
  const dir = stepDir(join(root, 'ckpt'), 12);
  const file = await writeCheckpointFile(dir, BACKBONE_FILE, tensors, {});
  const cfg = { backbone: 'tiny', embeddingSize: 64, imageSize: 32, seed: 9 };
  writeManifest(dir, {
    format: 'shardface-checkpoint',
    version: 1,
    step: 12,
    epoch: 0,
    world: 1,
    numClasses: 10,
    embeddingSize: 64,
    backbone: { ...file, name: 'tiny' },
    shards: [],
    config: cfg,
    createdAt: new Date().toISOString(),
  });
  return join(root, 'ckpt');
}

function writeNoisePng(path: string, width: number, height: number, seed: number): void {
  const rgb = new Uint8Array(width * height * 3);
  let s = seed;
  for (let i = 0; i < rgb.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    rgb[i] = (s >>> 16) & 255;
  }
  writeFileSync(path, encodePng(rgb, width, height));
}

/** The expected line, computed independently: tf.reverse for the mirror, tf norms. */
async function expected(checkpoint: string, path: string, size: number): Promise<{ embedding: number[]; magnitude: number; plain: number[] }> {
  const { backbone } = await loadBackboneFromCheckpoint(checkpoint);
  try {
    const img = await decodeImage(readFileSync(path), { size });
    return tf.tidy(() => {
      const x = tf.tensor4d(img.data, [1, size, size, 3]);
      const e = backbone.apply(x, false);
      const ef = backbone.apply(tf.reverse(x, 2) as tf.Tensor4D, false);
      const sum = tf.add(e, ef);
      return {
        embedding: Array.from(tf.div(sum, tf.norm(sum)).dataSync()),
        magnitude: tf.norm(e).dataSync()[0]!,
        plain: Array.from(tf.div(e, tf.norm(e)).dataSync()),
      };
    });
  } finally {
    backbone.dispose();
  }
}

function parseLines(stdout: string): Line[] {
  return stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line);
}

describe('shardface embed', () => {
  let tmp: string;
  let ckpt: string;
  let a: string;
  let b: string;
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'shardface-embed-'));
    ckpt = await writeTinyCheckpoint(tmp);
    a = join(tmp, 'a.png');
    b = join(tmp, 'b.png');
    writeNoisePng(a, 40, 36, 1); // resized and centre-cropped to 32×32
    writeNoisePng(b, 32, 32, 2);
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('--json prints {image, embedding, magnitude} per image, flip-fused and unit length', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'embed', '--checkpoint', ckpt, '--json', '--backend', 'cpu', a, b], { cwd: ROOT, maxBuffer: 1 << 24 });
    const lines = parseLines(stdout);
    expect(lines.map((l) => l.image)).toEqual([a, b]);
    for (const l of lines) {
      expect(Object.keys(l).sort()).toEqual(['embedding', 'image', 'magnitude']);
      expect(l.embedding.length).toBe(64);
      expect(Math.hypot(...l.embedding)).toBeCloseTo(1, 5);
      const want = await expected(ckpt, l.image, 32);
      expect(l.magnitude).toBeCloseTo(want.magnitude, 4);
      for (let k = 0; k < 64; k++) expect(l.embedding[k]).toBeCloseTo(want.embedding[k]!, 5);
    }
    // two different images, two different embeddings
    const cos = lines[0]!.embedding.reduce((s, v, k) => s + v * lines[1]!.embedding[k]!, 0);
    expect(cos).toBeLessThan(0.9999);
  });

  it('--no-flip gives n(e); --image-size resizes for tiny; the magnitude does not depend on flip', async () => {
    const noFlip = parseLines((await run(process.execPath, [CLI, 'embed', '--checkpoint', ckpt, '--json', '--no-flip', '--backend', 'cpu', a], { cwd: ROOT })).stdout)[0]!;
    const want = await expected(ckpt, a, 32);
    for (let k = 0; k < 64; k++) expect(noFlip.embedding[k]).toBeCloseTo(want.plain[k]!, 5);
    expect(noFlip.magnitude).toBeCloseTo(want.magnitude, 4);
    const big = parseLines((await run(process.execPath, [CLI, 'embed', '--checkpoint', ckpt, '--json', '--image-size', '48', '--backend', 'cpu', a], { cwd: ROOT })).stdout)[0]!;
    const want48 = await expected(ckpt, a, 48);
    for (let k = 0; k < 64; k++) expect(big.embedding[k]).toBeCloseTo(want48.embedding[k]!, 5);
  });

  it('reports an unreadable file on stderr, embeds the rest and exits 1', async () => {
    const bad = join(tmp, 'bad.png');
    writeFileSync(bad, 'not an image');
    const r = await run(process.execPath, [CLI, 'embed', '--checkpoint', ckpt, '--json', '--backend', 'cpu', a, bad, b], { cwd: ROOT }).catch((e) => e);
    expect(r.code).toBe(1);
    expect(parseLines(r.stdout).map((l: Line) => l.image)).toEqual([a, b]);
    expect(r.stderr).toContain(`${bad}: cannot decode image`);
  });

  it('prints a readable line without --json, and usage errors with exit 2', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'embed', '--checkpoint', ckpt, '--backend', 'cpu', b], { cwd: ROOT });
    expect(stdout).toMatch(new RegExp(`^${b.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\tmagnitude \\d+\\.\\d{4}\\t\\[.*\\(64 dims\\)$`, 'm'));
    const noImages = await run(process.execPath, [CLI, 'embed', '--checkpoint', ckpt], { cwd: ROOT }).catch((e) => e);
    expect(noImages.code).toBe(2);
    expect(noImages.stderr).toMatch(/at least one image/);
    const noCkpt = await run(process.execPath, [CLI, 'embed', '--checkpoint', join(tmp, 'missing'), a], { cwd: ROOT }).catch((e) => e);
    expect(noCkpt.code).toBe(2);
  });
});
