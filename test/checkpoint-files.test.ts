import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTensorFile, writeTensorFile, TensorFileError } from '../src/checkpoint/tensor-file.js';
import { checkpointProblems, newestVerifiedCheckpoint, pruneCheckpoints, shardFile, stepDir, writeCheckpointFile, writeManifest, BACKBONE_FILE, type Manifest } from '../src/checkpoint/checkpoint.js';
import { mergeClassifier } from '../src/checkpoint/merge.js';
import { writeFileAtomic } from '../src/common/atomic-file.js';
import { runCli } from './helpers/processes.js';

const root = mkdtempSync(join(tmpdir(), 'shardface-ckpt-'));
const fileSha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
/** coreutils' sha256sum, a hash computed outside this process and outside Node. */
const sha256sum = (p: string) => execFileSync('sha256sum', [p], { encoding: 'utf8' }).split(' ')[0];
const ramp = (n: number, k = 1) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 * k));

function flipByte(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] = b[at]! ^ 0xff;
  writeFileSync(path, b);
}

/** A 2-shard checkpoint with known rows: shard r holds classes [r·5, r·5+5) of a 10 × 4 classifier. */
async function fakeCheckpoint(ckptRoot: string, step: number): Promise<{ dir: string; weight: Float32Array }> {
  const dir = stepDir(ckptRoot, step);
  const weight = ramp(40, step);
  const shards: Manifest['shards'] = [];
  for (const rank of [0, 1]) {
    const rows = weight.slice(rank * 20, rank * 20 + 20);
    const f = await writeCheckpointFile(dir, shardFile(rank), { weight: { data: rows, shape: [5, 4] }, momentum: { data: rows.map((v) => v / 2), shape: [5, 4] } }, { rank: String(rank) });
    shards.push({ ...f, rank, classStart: rank * 5, classCount: 5 });
  }
  const bb = await writeCheckpointFile(dir, BACKBONE_FILE, { 'conv.w': { data: ramp(12), shape: [3, 4] } }, {});
  const m: Manifest = {
    format: 'shardface-checkpoint',
    version: 1,
    step,
    epoch: 0,
    world: 2,
    numClasses: 10,
    embeddingSize: 4,
    backbone: { ...bb, name: 'tiny' },
    shards,
    config: {},
    createdAt: new Date(0).toISOString(),
  };
  writeManifest(dir, m);
  return { dir, weight };
}

describe('tensor files: streamed, checksummed, atomic', () => {
  it('round-trips every dtype and pieced tensors; the returned SHA-256 is the file bytes', async () => {
    const p = join(root, 'a.safetensors');
    const f32 = ramp(1000);
    const pieces = [ramp(6), ramp(6, 2)];
    const r = await writeTensorFile(
      p,
      {
        f32: { data: f32, shape: [10, 100] },
        i32: { data: Int32Array.from([1, -2, 3]), shape: [3] },
        u8: { data: Uint8Array.from([7, 8]), shape: [2] },
        f64: { data: Float64Array.from([Math.PI]), shape: [1] },
        joined: { dtype: 'F32', shape: [3, 4], pieces: () => pieces },
      },
      { hello: 'world' },
    );
    expect(r.sha256).toBe(fileSha(p));
    expect(r.bytes).toBe(statSync(p).size);
    const back = readTensorFile(p, r.sha256);
    expect(back.metadata).toEqual({ hello: 'world' });
    expect(Array.from(back.tensors.f32!.data)).toEqual(Array.from(f32));
    expect(Array.from(back.tensors.i32!.data)).toEqual([1, -2, 3]);
    expect(Array.from(back.tensors.f64!.data)).toEqual([Math.PI]);
    expect(Array.from(back.tensors.joined!.data)).toEqual([...pieces[0]!, ...pieces[1]!]);
    // `only` keeps one tensor but still checks the whole file
    expect(Object.keys(readTensorFile(p, r.sha256, (n) => n === 'u8').tensors)).toEqual(['u8']);
    expect(existsSync(p + '.tmp')).toBe(false);
  });

  it('crosses the 4 MiB write and 64 MiB read piece boundaries intact; the SHA-256 is sha256sum of the file', async () => {
    const p = join(root, 'big.safetensors');
    const big = new Float32Array(17 * 2 ** 20 + 3); // 68 MiB
    for (let i = 0; i < big.length; i += 4099) big[i] = i;
    big[big.length - 1] = -1;
    const r = await writeTensorFile(p, { big: { data: big, shape: [big.length] } });
    expect(r.sha256).toBe(sha256sum(p));
    const back = readTensorFile(p, r.sha256).tensors.big!.data;
    expect(back.length).toBe(big.length);
    expect(back[big.length - 1]).toBe(-1);
    expect(back[4099 * 1000]).toBe(4099 * 1000);
  });

  it("a checkpoint manifest's SHA-256 and size of each file are sha256sum's and stat's, pieces crossing the write piece", async () => {
    const dir = stepDir(join(root, 'sums', 'ckpt'), 1);
    // 5 MiB rows split unevenly, so pieces straddle the 4 MiB write piece; plus tensors smaller than one piece
    const rows = ramp(1_310_720 + 5, 3);
    const pieces = [rows.subarray(0, 1_000_003), rows.subarray(1_000_003, 1_200_000), rows.subarray(1_200_000)];
    const shard = await writeTensorFile(join(dir, shardFile(0)), { weight: { dtype: 'F32', shape: [rows.length], pieces: () => pieces }, momentum: { data: ramp(999), shape: [999] } }, { rank: '0' });
    const bb = await writeCheckpointFile(dir, BACKBONE_FILE, { a: { data: ramp(4_194_305, 5), shape: [4_194_305] }, b: { data: Int32Array.from([3, 1]), shape: [2] } }, {});
    const m: Manifest = {
      format: 'shardface-checkpoint',
      version: 1,
      step: 1,
      epoch: 0,
      world: 1,
      numClasses: 1,
      embeddingSize: rows.length,
      backbone: { ...bb, name: 'tiny' },
      shards: [{ file: shardFile(0), ...shard, rank: 0, classStart: 0, classCount: 1 }],
      config: {},
      createdAt: new Date(0).toISOString(),
    };
    writeManifest(dir, m);
    const written = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    for (const f of [written.backbone, ...written.shards]) {
      expect(f.sha256).toBe(sha256sum(join(dir, f.file)));
      expect(f.bytes).toBe(statSync(join(dir, f.file)).size);
    }
    expect(Array.from(readTensorFile(join(dir, shardFile(0)), shard.sha256).tensors.weight!.data)).toEqual(Array.from(rows));
    expect(checkpointProblems(dir)).toEqual([]);
  });

  it('rejects a truncated file, a flipped byte and a piece of the wrong size with errors naming the file', async () => {
    const p = join(root, 'b.safetensors');
    const r = await writeTensorFile(p, { w: { data: ramp(64), shape: [8, 8] } });
    flipByte(p, statSync(p).size - 5);
    expect(() => readTensorFile(p, r.sha256)).toThrow(/b\.safetensors: checksum mismatch/);
    truncateSync(p, statSync(p).size - 16);
    expect(() => readTensorFile(p)).toThrow(/b\.safetensors: tensor w lies outside the file \(truncated\?\)/);
    await expect(writeTensorFile(join(root, 'c.safetensors'), { w: { dtype: 'F32', shape: [2, 2], pieces: () => [ramp(3)] } })).rejects.toThrow(
      /tensor w got 12 bytes for shape \[2,2\] \(16 expected\)/,
    );
    expect(existsSync(join(root, 'c.safetensors'))).toBe(false);
    expect(existsSync(join(root, 'c.safetensors.tmp'))).toBe(false);
  });
});

describe('a full disk', () => {
  const mnt = join(root, 'tiny-disk');
  mkdirSync(mnt);
  let mounted = false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'pipe' });
    mounted = true;
  } catch (e) {
    if (process.getuid?.() === 0) throw new Error(`cannot mount a 1 MiB tmpfs as root: ${(e as Error).message}`);
  }
  afterAll(() => {
    if (mounted) execFileSync('umount', [mnt]);
  });
  it.skipIf(!mounted)('fails with one line naming the file and ENOSPC, and leaves the previous file intact (needs root for a tmpfs)', async () => {
    const p = join(mnt, 'shard.safetensors');
    const small = await writeTensorFile(p, { w: { data: ramp(1000), shape: [1000] } });
    let err: unknown;
    try {
      await writeTensorFile(p, { w: { data: ramp(400_000), shape: [400_000] } }); // 1.6 MB > 1 MiB
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TensorFileError);
    expect((err as Error).message).toBe(`cannot write ${p}: no space left on device (ENOSPC)`);
    expect(fileSha(p)).toBe(small.sha256);
    expect(readdirSync(mnt)).toEqual(['shard.safetensors']);
    const summary = join(mnt, 'summary.json');
    expect(() => writeFileAtomic(summary, 'x'.repeat(2 ** 21))).toThrow(`cannot write ${summary}: no space left on device (ENOSPC)`);
    expect(existsSync(summary)).toBe(false);
  });
});

describe('checkpoints: verification, newest usable, pruning, merge', () => {
  it('finds the newest checkpoint whose every file verifies and says why newer ones were passed over', async () => {
    const ck = join(root, 'run1', 'ckpt');
    await fakeCheckpoint(ck, 10);
    const b = await fakeCheckpoint(ck, 20);
    const c = await fakeCheckpoint(ck, 30);
    mkdirSync(stepDir(ck, 40)); // an interrupted write: no manifest
    expect(checkpointProblems(b.dir)).toEqual([]);
    flipByte(join(c.dir, shardFile(1)), 100);
    truncateSync(join(b.dir, BACKBONE_FILE), 50);
    const r = newestVerifiedCheckpoint(ck);
    expect(r.dir).toBe(stepDir(ck, 10));
    expect(r.rejected.map((x) => [x.dir, x.problems])).toEqual([
      [stepDir(ck, 40), [`${stepDir(ck, 40)} is not a complete checkpoint (no manifest.json)`]],
      [c.dir, ['shard 1 (classes 5..9): classifier-shard-1.safetensors checksum mismatch (file corrupt or replaced)']],
      [b.dir, [expect.stringMatching(/^backbone: backbone\.safetensors has 50 bytes, the manifest says \d+ \(truncated\?\)$/)]],
    ]);
  });

  it('keeps the newest K complete checkpoints and removes the remains of interrupted writes', async () => {
    const ck = join(root, 'run2', 'ckpt');
    for (const s of [5, 10, 15, 20]) await fakeCheckpoint(ck, s);
    mkdirSync(stepDir(ck, 12));
    mkdirSync(stepDir(ck, 25)); // newer than every complete one: may be being written now, so it stays
    expect(pruneCheckpoints(ck, 2).sort()).toEqual([stepDir(ck, 5), stepDir(ck, 10), stepDir(ck, 12)].sort());
    expect(readdirSync(ck).sort()).toEqual(['step-000015', 'step-000020', 'step-000025']);
    expect(pruneCheckpoints(ck, 0)).toEqual([]);
  });

  it('merges the shards into the whole classifier, rows in class order with their optimizer slots', async () => {
    const { dir, weight } = await fakeCheckpoint(join(root, 'run3', 'ckpt'), 7);
    const out = join(root, 'merged.safetensors');
    const r = await mergeClassifier(dir, out);
    expect(r).toMatchObject({ numClasses: 10, embeddingSize: 4, tensors: ['weight', 'momentum'], sha256: fileSha(out) });
    const t = readTensorFile(out, r.sha256);
    expect(t.tensors.weight!.shape).toEqual([10, 4]);
    expect(Array.from(t.tensors.weight!.data)).toEqual(Array.from(weight));
    expect(Array.from(t.tensors.momentum!.data)).toEqual(Array.from(weight.map((v) => v / 2)));
    expect(t.metadata).toMatchObject({ format: 'shardface-classifier', step: '7', numClasses: '10' });
  });

  it('shardface ckpt info / merge through the CLI, and their errors', async () => {
    const run = join(root, 'run4');
    const ck = join(run, 'ckpt');
    await fakeCheckpoint(ck, 3);
    const bad = await fakeCheckpoint(ck, 6);
    flipByte(join(bad.dir, shardFile(0)), 90);
    let o = await runCli(['ckpt', 'info', run, '--json']);
    expect(o.code, o.stderr).toBe(0);
    const info = JSON.parse(o.stdout);
    expect(info.newestVerified).toBe(stepDir(ck, 3));
    expect(info.checkpoints.map((c: { step: number; verified: boolean }) => [c.step, c.verified])).toEqual([
      [6, false],
      [3, true],
    ]);
    o = await runCli(['ckpt', 'info', run]);
    expect(o.stdout).toMatch(/step {7}6 {2}CORRUPT[\s\S]*shard 0 \(classes 0\.\.4\): classifier-shard-0\.safetensors checksum mismatch[\s\S]*newest that verifies: .*step-000003/);
    const out = join(root, 'cli-merged.safetensors');
    o = await runCli(['ckpt', 'merge', stepDir(ck, 3), '--out', out]);
    expect(o.code, o.stderr).toBe(0);
    expect(JSON.parse(o.stdout)).toMatchObject({ out, numClasses: 10 });
    o = await runCli(['ckpt', 'merge', bad.dir, '--out', out]);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/shardface ckpt: .*step-000006 does not verify: shard 0 .*checksum mismatch/);
    o = await runCli(['ckpt', 'merge', run]);
    expect(o.code).toBe(2);
    expect(o.stderr).toMatch(/ckpt merge needs --out FILE/);
    o = await runCli(['ckpt', 'info', join(root, 'nope')]);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/shardface ckpt: .*nope does not exist/);
  });
});
