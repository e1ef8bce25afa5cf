/**
 * `shardface export`: the exported graph model loads in a fresh Node process
 * that imports only @tensorflow/tfjs (with the loader written into the
 * export's README), and gives the embeddings shardface's `Backbone.apply(x,
 * false)` gives for the checkpoint: tiny from a real training run, and
 * mobilefacenet, vargfacenet and iresnet18 at 112×112 from checkpoint
 * directories written here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/ops/tf.js';
import { initBackend } from '../src/ops/backend.js';
import { createBackbone, type BackboneName } from '../src/models/index.js';
import { BACKBONE_FILE, stepDir, writeCheckpointFile, writeManifest } from '../src/checkpoint/checkpoint.js';
import type { StoredTensor } from '../src/checkpoint/tensor-file.js';
import { loadBackboneFromCheckpoint } from '../src/eval/load-backbone.js';
import { exportCheckpoint } from '../src/export/export-checkpoint.js';
import { NODE_LOADER } from '../src/export/usage.js';
import { CLI } from './helpers/processes.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs in a fresh `node` whose only import is @tensorflow/tfjs: the README's loader, then one predict. */
const FRESH_SCRIPT = `${NODE_LOADER}
const [dir, inFile, outFile, shape] = process.argv.slice(1);
const model = await loadGraphModelFromDir(dir);
const buf = await readFile(inFile);
const x = tf.tensor(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4), JSON.parse(shape));
const y = model.predict(x);
const { writeFile } = await import('node:fs/promises');
await writeFile(outFile, Buffer.from((await y.data()).buffer));
console.log(JSON.stringify({ shape: y.shape, card: model.metadata?.shardface ?? null }));
`;

async function predictFresh(dir: string, x: Float32Array, shape: number[], tmp: string): Promise<{ y: Float32Array; shape: number[]; card: Record<string, unknown> | null }> {
  const inFile = join(tmp, 'x.bin');
  const outFile = join(tmp, 'y.bin');
  writeFileSync(inFile, Buffer.from(x.buffer, x.byteOffset, x.byteLength));
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', FRESH_SCRIPT, dir, inFile, outFile, JSON.stringify(shape)], { cwd: ROOT, maxBuffer: 1 << 24 });
  const info = JSON.parse(stdout.trim().split('\n').pop()!) as { shape: number[]; card: Record<string, unknown> | null };
  const b = readFileSync(outFile);
  return { y: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), ...info };
}

/** Embeddings of the checkpoint through shardface itself. */
async function predictShardface(checkpoint: string, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const { backbone } = await loadBackboneFromCheckpoint(checkpoint);
  try {
    const t = tf.tensor4d(x, shape as [number, number, number, number]);
    const y = backbone.apply(t, false);
    const out = (await y.data()) as Float32Array;
    t.dispose();
    y.dispose();
    return out;
  } finally {
    backbone.dispose();
  }
}

/** Largest per-row relative L2 difference ‖a − b‖/‖b‖. */
function relativeError(a: Float32Array, b: Float32Array, d: number): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let r = 0; r < b.length / d; r++) {
    let diff = 0;
    let ref = 0;
    for (let k = r * d; k < (r + 1) * d; k++) {
      diff += (a[k]! - b[k]!) ** 2;
      ref += b[k]! ** 2;
    }
    worst = Math.max(worst, Math.sqrt(diff / ref));
  }
  return worst;
}

function randomImages(n: number, size: number, seed: number): Float32Array {
  return tf.tidy(() => tf.randomUniform([n, size, size, 3], -1, 1, 'float32', seed).dataSync() as Float32Array);
}

/**
 * A checkpoint directory as training writes it, for a backbone built here. BN
 * statistics, γ, β and PReLU slopes are moved off their initial values, so a
 * wrong folding or a swapped constant cannot hide behind 0s and 1s.
 */
async function writeBackboneCheckpoint(root: string, name: BackboneName, step: number): Promise<string> {
  const cfg = { backbone: name, embeddingSize: 512, imageSize: 112, seed: 5 };
  const b = createBackbone(name, { seed: cfg.seed, embeddingSize: cfg.embeddingSize, inputSize: cfg.imageSize });
  const tensors: Record<string, StoredTensor> = {};
  let k = 100;
  for (const [key, v] of b.state()) {
    let t: tf.Tensor;
    if (key.endsWith('.runningVar') || key.endsWith('.gamma')) t = tf.randomUniform(v.shape, 0.7, 1.3, 'float32', k++);
    else if (key.endsWith('.runningMean') || key.endsWith('.beta')) t = tf.randomNormal(v.shape, 0, 0.1, 'float32', k++);
    else if (key.endsWith('.alpha')) t = tf.randomUniform(v.shape, 0, 0.4, 'float32', k++);
    else t = v.clone();
    tensors[key] = { data: (await t.data()) as Float32Array, shape: [...v.shape] };
    t.dispose();
  }
  b.dispose();
  const dir = stepDir(join(root, 'ckpt'), step);
  const file = await writeCheckpointFile(dir, BACKBONE_FILE, tensors, { step: String(step), backbone: name });
  writeManifest(dir, {
    format: 'shardface-checkpoint',
    version: 1,
    step,
    epoch: 0,
    world: 1,
    numClasses: 10,
    embeddingSize: cfg.embeddingSize,
    backbone: { ...file, name },
    shards: [],
    config: cfg,
    createdAt: new Date().toISOString(),
  });
  return join(root, 'ckpt');
}

describe('shardface export', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'shardface-export-'));
    await initBackend('auto');
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('tiny from a training run: the CLI export loads with plain tfjs in a fresh process and matches', async () => {
    const runDir = join(tmp, 'run');
    await run(process.execPath, [CLI, 'train', '--config', 'configs/demo.json', '--steps', '3', '--warmup-epochs', '0', '--workers', '1', '--log-format', 'json', '--run-dir', runDir], {
      cwd: ROOT,
      maxBuffer: 1 << 26,
    });
    const out = join(tmp, 'tiny-model');
    const { stdout } = await run(process.execPath, [CLI, 'export', '--checkpoint', join(runDir, 'ckpt'), '--out', out], { cwd: ROOT });
    const summary = JSON.parse(stdout.trim());
    expect(summary).toMatchObject({ backbone: 'tiny', step: 3, embeddingSize: 128, imageSize: 32 });
    for (const f of ['model.json', 'group1-shard1of1.bin', 'shardface.json', 'README.md']) expect(existsSync(join(out, f))).toBe(true);
    const card = JSON.parse(readFileSync(join(out, 'shardface.json'), 'utf8'));
    expect(card).toMatchObject({ backbone: 'tiny', embeddingSize: 128, imageSize: 32, preprocessing: '(x/255-0.5)/0.5, NHWC RGB', step: 3 });
    expect(readFileSync(join(out, 'README.md'), 'utf8')).toContain(NODE_LOADER.trim());

    const x = randomImages(4, 32, 1);
    const fresh = await predictFresh(out, x, [4, 32, 32, 3], tmp);
    expect(fresh.shape).toEqual([4, 128]);
    expect(fresh.card).toMatchObject({ backbone: 'tiny', step: 3 });
    const want = await predictShardface(join(runDir, 'ckpt'), x, [4, 32, 32, 3]);
    expect(relativeError(fresh.y, want, 128)).toBeLessThan(1e-4);

    // tiny pools globally, so its graph takes other sizes too
    const x48 = randomImages(2, 48, 2);
    const fresh48 = await predictFresh(out, x48, [2, 48, 48, 3], tmp);
    expect(relativeError(fresh48.y, await predictShardface(join(runDir, 'ckpt'), x48, [2, 48, 48, 3]), 128)).toBeLessThan(1e-4);
  }, 480_000);

  for (const name of ['mobilefacenet', 'vargfacenet', 'iresnet18'] as const) {
    it(`${name} at 112×112 loads with plain tfjs in a fresh process and matches Backbone.apply`, async () => {
      const ckpt = await writeBackboneCheckpoint(join(tmp, name), name, 7);
      const out = join(tmp, `${name}-model`);
      const r = await exportCheckpoint({ checkpoint: ckpt, out });
      expect(r.card).toMatchObject({ backbone: name, embeddingSize: 512, imageSize: 112, step: 7, anyInputSize: false });
      if (name !== 'iresnet18') expect(r.ops.Sum).toBeGreaterThan(0); // grouped convolutions present

      const x = randomImages(1, 112, 3);
      const fresh = await predictFresh(out, x, [1, 112, 112, 3], tmp);
      expect(fresh.shape).toEqual([1, 512]);
      const want = await predictShardface(ckpt, x, [1, 112, 112, 3]);
      expect(relativeError(fresh.y, want, 512)).toBeLessThan(1e-4);
      rmSync(join(tmp, name), { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }, 400_000);
  }

  it('refuses --format layers and a missing checkpoint with a usage error', async () => {
    const layers = await run(process.execPath, [CLI, 'export', '--checkpoint', tmp, '--out', join(tmp, 'x'), '--format', 'layers'], { cwd: ROOT }).catch((e) => e);
    expect(layers.code).toBe(2);
    expect(layers.stderr).toMatch(/--format layers is not supported/);
    const missing = await run(process.execPath, [CLI, 'export', '--checkpoint', join(tmp, 'nope'), '--out', join(tmp, 'x')], { cwd: ROOT }).catch((e) => e);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/does not exist/);
  });
});
