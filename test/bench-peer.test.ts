/**
 * `bench train --peer-arcface-torch DIR` (bench/peer-arcface-torch.ts and the
 * harness bench/peer/arcface_torch_step.py): bad settings fail before our own
 * run starts, with one line; the harness times a step of whatever DIR's
 * `backbones.get_model` builds. arcface_torch itself is not part of the repo,
 * so the harness runs here against a stand-in checkout holding a small torch
 * network under the same entry point.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arcfaceTorchNetwork, peerArgs, runArcfaceTorchPeer } from '../bench/peer-arcface-torch.js';
import { startCli } from './helpers/processes.js';

const JOB = { backbone: 'mobilefacenet', batch: 4, imageSize: 112, embeddingSize: 8 };

/** An arcface_torch-shaped folder: backbones/__init__.py with get_model(name, num_features). */
function standInCheckout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'shardface-arcface-torch-'));
  mkdirSync(join(dir, 'backbones'));
  writeFileSync(
    join(dir, 'backbones', '__init__.py'),
    [
      'import torch',
      'def get_model(name, num_features=512):',
      '    assert name == "mbf", name',
      '    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.BatchNorm2d(4), torch.nn.PReLU(4), torch.nn.Flatten(), torch.nn.Linear(4 * 28 * 28, num_features))',
      '',
    ].join('\n'),
  );
  return dir;
}

describe('bench train --peer-arcface-torch', () => {
  it("maps our backbones to arcface_torch's names; refuses the rest, a folder without backbones/, and other sizes", () => {
    expect(arcfaceTorchNetwork('mobilefacenet')).toBe('mbf');
    expect(arcfaceTorchNetwork('iresnet50')).toBe('r50');
    expect(() => arcfaceTorchNetwork('vargfacenet')).toThrow(/arcface_torch has no counterpart of vargfacenet/);
    const empty = mkdtempSync(join(tmpdir(), 'shardface-no-arcface-'));
    expect(() => peerArgs({ dir: empty, python: 'python3' }, JOB)).toThrow(/no backbones\/__init__\.py there \(give the recognition\/arcface_torch folder/);
    expect(() => peerArgs({ dir: standInCheckout(), python: 'python3' }, { ...JOB, imageSize: 96 })).toThrow(/take 112×112 input, not 96/);
    expect(peerArgs({ dir: standInCheckout(), python: 'python3', threads: 3 }, JOB)).toEqual(expect.arrayContaining(['--network', 'mbf', '--batch', '4', '--threads', '3', '--embedding-size', '8']));
  });

  it('the CLI fails on a bad folder before training (exit 1, one line)', async () => {
    const p = startCli(['bench', 'train', '--workers', '1', '--peer-arcface-torch', join(tmpdir(), 'nowhere-arcface')]);
    const { code } = await p.exit;
    expect(code).toBe(1);
    expect(p.lines.join('\n')).toMatch(/--peer-arcface-torch .*nowhere-arcface: no backbones\/__init__\.py there/);
  });

  it("times the stand-in's step and reports images/s (or names the missing torch)", async () => {
    const python = '/usr/bin/python3';
    const hasTorch = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
    const run = runArcfaceTorchPeer({ dir: standInCheckout(), python, threads: 1 }, JOB);
    if (!hasTorch) return void (await expect(run).rejects.toThrow(/the PyTorch harness exited with 1: .*torch/));
    const r = await run;
    expect(r).toMatchObject({ peer: 'arcface_torch', network: 'mbf', batch: 4, threads: 1, steps: 4 });
    expect(r.step_seconds).toBeGreaterThan(0);
    expect(r.images_per_s).toBeCloseTo(4 / r.step_seconds, 6);
  }, 300_000); // importing torch alone takes tens of seconds on a busy 2-core machine
});
