/**
 * `shardface eval` end to end on a checkpoint from a 3-step `shardface train`
 * (which also scores a `val` set during training), and its errors on bad
 * inputs. Uses dist/: compile with `npx tsc -p .` first.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli as cli } from './helpers/processes.js';
import { writePairFixture, type PairFixture } from './helpers/eval-fixtures.js';
import { loadBackboneFromCheckpoint, resolveCheckpointDir, CheckpointError } from '../src/eval/load-backbone.js';
import { readTensorFile } from '../src/checkpoint/tensor-file.js';
import { createBackbone } from '../src/models/index.js';

let dir: string;
let run: string;
let fx: PairFixture;
let train: { code: number; stdout: string; stderr: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'shardface-eval-cli-'));
  fx = writePairFixture(join(dir, 'fixture'));
  run = join(dir, 'run');
  train = await cli(['train', '--config', 'configs/demo.json', '--steps', '3', '--warmup-epochs', '0', '--run-dir', run, '--val', `syn=${fx.bin},lst=${fx.pairList}`, '--val-every', '2']);
}, 180_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('shardface eval on a trained checkpoint', () => {
  it('training wrote a checkpoint and val_NAME_* metrics at valEvery and the last step', () => {
    expect(train.code, train.stderr.slice(-2000)).toBe(0);
    expect(existsSync(join(run, 'ckpt', 'step-000003', 'manifest.json'))).toBe(true);
    const rows = readFileSync(join(run, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>);
    expect(rows.map((r) => r.step)).toEqual([1, 2, 3]);
    expect(rows[0]!.val_syn_accuracy).toBeUndefined();
    for (const r of rows.slice(1)) {
      for (const k of ['val_syn_accuracy', 'val_syn_accuracy_std', 'val_syn_threshold', 'val_lst_accuracy']) expect(r[k], k).toBeTypeOf('number');
      expect(r.val_syn_accuracy).toBe(r.val_lst_accuracy);
      expect(r['val_syn_tar_at_far_1e-3']).toBeUndefined(); // 30 negative pairs: not enough for FAR 1e-3
    }
  });

  it('prints one JSON line, the same for .bin, pairs.txt + images and a pair list, equal to the in-training score', async () => {
    const ckpt = join(run, 'ckpt');
    const outs = await Promise.all([
      cli(['eval', '--checkpoint', ckpt, '--bin', fx.bin]),
      cli(['eval', '--checkpoint', ckpt, '--pairs', fx.pairsTxt, '--images', fx.imagesDir]),
      cli(['eval', '--checkpoint', ckpt, '--pair-list', fx.pairList, '--batch', '7']),
    ]);
    const results = outs.map((o) => {
      expect(o.code, o.stderr).toBe(0);
      const lines = o.stdout.trim().split('\n');
      expect(lines.length).toBe(1);
      return JSON.parse(lines[0]!) as Record<string, unknown>;
    });
    for (const r of results) {
      expect(Object.keys(r).sort()).toEqual(['accuracy', 'accuracy_std', 'checkpoint', 'pairs', 'source', 'step', 'tar_at_far', 'threshold']);
      expect(r).toMatchObject({ pairs: 60, step: 3, checkpoint: join(run, 'ckpt', 'step-000003'), tar_at_far: { '1e-3': null, '1e-4': null } });
      expect(Math.abs((r.accuracy as number) - (results[0]!.accuracy as number))).toBeLessThanOrEqual(1e-6);
      expect(r.threshold).toBe(results[0]!.threshold);
    }
    expect(results.map((r) => String(r.source).split(':')[0])).toEqual(['bin', 'pairs', 'list']);
    // the workers scored the same backbone on the same pairs at step 3
    const last = JSON.parse(readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').pop()!) as Record<string, number>;
    expect(Math.abs((results[0]!.accuracy as number) - last.val_syn_accuracy!)).toBeLessThanOrEqual(1e-6);
    expect(results[0]!.threshold).toBeCloseTo(last.val_syn_threshold!, 9);
  });

  it('accepts a step directory and writes the ROC CSV', async () => {
    const csv = join(dir, 'roc.csv');
    const o = await cli(['eval', '--checkpoint', join(run, 'ckpt', 'step-000003'), '--pair-list', fx.pairList, '--roc-csv', csv, '--backend', 'cpu']);
    expect(o.code, o.stderr).toBe(0);
    const rows = readFileSync(csv, 'utf8').trim().split('\n');
    expect(rows[0]).toBe('fpr,tpr,distance_threshold,cosine_threshold');
    expect(rows[1]).toBe('0,0,-inf,inf');
    expect(rows[rows.length - 1]!.startsWith('1,1,')).toBe(true);
  });

  it('loadBackboneFromCheckpoint restores every tensor of backbone.safetensors', async () => {
    const { backbone, manifest, dir: stepDir } = await loadBackboneFromCheckpoint(join(run, 'ckpt'));
    expect(stepDir).toBe(join(run, 'ckpt', 'step-000003'));
    expect(manifest.step).toBe(3);
    const { tensors } = readTensorFile(join(stepDir, 'backbone.safetensors'));
    const fresh = createBackbone('tiny', { seed: 1, embeddingSize: 128, inputSize: 32 });
    let changed = 0;
    for (const [name, v] of backbone.state()) {
      expect(Array.from(v.dataSync())).toEqual(Array.from(tensors[name]!.data));
      if (Array.from(fresh.state().get(name)!.dataSync()).some((x, i) => x !== tensors[name]!.data[i])) changed++;
    }
    expect(changed).toBeGreaterThan(0); // trained, not the seed's initialisation
    backbone.dispose();
    fresh.dispose();
  });
});

describe('shardface eval: bad inputs', () => {
  it('a checkpoint without manifest, a corrupt backbone file, a missing directory', async () => {
    const broken = join(dir, 'broken', 'ckpt');
    cpSync(join(run, 'ckpt'), broken, { recursive: true });
    unlinkSync(join(broken, 'step-000003', 'manifest.json'));
    expect(() => resolveCheckpointDir(join(broken, 'step-000003'))).toThrow(CheckpointError);
    let o = await cli(['eval', '--checkpoint', join(broken, 'step-000003'), '--pair-list', fx.pairList]);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/shardface eval: .*step-000003 is not a complete checkpoint \(no manifest\.json\)/);
    o = await cli(['eval', '--checkpoint', broken, '--pair-list', fx.pairList]);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/none of its 1 step directories is complete \(no manifest\.json/);
    o = await cli(['eval', '--checkpoint', join(dir, 'nowhere'), '--pair-list', fx.pairList]);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/checkpoint .*nowhere does not exist/);

    const corrupt = join(dir, 'corrupt', 'ckpt');
    cpSync(join(run, 'ckpt'), corrupt, { recursive: true });
    const f = join(corrupt, 'step-000003', 'backbone.safetensors');
    const b = readFileSync(f);
    b[b.length - 1] ^= 0xff;
    writeFileSync(f, b);
    o = await cli(['eval', '--checkpoint', corrupt, '--pair-list', fx.pairList]);
    expect(o.code).toBe(1);
    expect(o.stderr).toMatch(/cannot load the backbone of .*step-000003: .*checksum mismatch/);
  });

  it('missing pair files, a numpy .bin, a malformed pairs.txt: exit 1 with the reason', async () => {
    const ckpt = join(run, 'ckpt');
    const numpy = join(dir, 'numpy.bin');
    writeFileSync(numpy, Uint8Array.from([0x80, 0x02, 0x5d, 0x28, 0x63, ...Buffer.from('numpy.core.multiarray\n_reconstruct\n'), 0x2e]));
    const badPairs = join(dir, 'bad-pairs.txt');
    writeFileSync(badPairs, '10 3\nPerson_A 1 2\nPerson_A one 2\n');
    const cases: [string[], RegExp][] = [
      [['--bin', join(dir, 'missing.bin')], /\.bin pack .*missing\.bin does not exist/],
      [['--pair-list', join(dir, 'missing.tsv')], /pair list .*missing\.tsv does not exist/],
      [['--bin', numpy], /numpy\.bin: the pack stores numpy arrays \(numpy\.core\.multiarray\._reconstruct\)/],
      [['--pairs', badPairs, '--images', fx.imagesDir], /bad-pairs\.txt:3: image numbers must be positive integers/],
    ];
    const outs = await Promise.all(cases.map(([args]) => cli(['eval', '--checkpoint', ckpt, ...args])));
    outs.forEach((o, i) => {
      expect(o.code, o.stderr).toBe(1);
      expect(o.stderr).toMatch(cases[i]![1]);
      expect(o.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
      expect(o.stdout).toBe('');
    });
  });

  it('usage errors: no source, two sources, --pairs without --images, a bad --crop (exit 2)', async () => {
    const ckpt = join(run, 'ckpt');
    const cases: [string[], RegExp][] = [
      [['eval', '--checkpoint', ckpt], /exactly one of --bin FILE, --pairs FILE --images DIR, --pair-list FILE \(got 0\)/],
      [['eval', '--checkpoint', ckpt, '--bin', fx.bin, '--pair-list', fx.pairList], /exactly one of .* \(got 2\)/],
      [['eval', '--checkpoint', ckpt, '--pairs', fx.pairsTxt], /--pairs needs --images DIR/],
      [['eval', '--checkpoint', ckpt, '--bin', fx.bin, '--crop', '0.5,0.5,0.6,0.1'], /--crop 0\.5,0\.5,0\.6,0\.1: the box must .* lie inside the image/],
      [['eval', '--bin', fx.bin], /eval needs --checkpoint/],
    ];
    const outs = await Promise.all(cases.map(([args]) => cli(args)));
    outs.forEach((o, i) => {
      expect(o.code, o.stderr).toBe(2);
      expect(o.stderr).toMatch(cases[i]![1]);
    });
  });
});
