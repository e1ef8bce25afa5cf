import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { renderSyntheticFace } from '../src/data/synthetic.js';
import { startCli } from './helpers/processes.js';

describe('training on real files: an image folder converted to insightface RecordIO', () => {
  it('2 workers train from train.rec (JPEG decoded with prefetch) and exit 0', async () => {
    const root = mkdtempSync(join(tmpdir(), 'shardface-rec-train-'));
    for (let id = 0; id < 12; id++) {
      mkdirSync(join(root, 'faces', `person${id}`), { recursive: true });
      for (let k = 0; k < 6; k++) {
        const jpg = await sharp(renderSyntheticFace(4, id, k, 40), { raw: { width: 40, height: 40, channels: 3 } })
          .jpeg({ quality: 90 })
          .toBuffer();
        writeFileSync(join(root, 'faces', `person${id}`, `${k}.jpg`), jpg);
      }
    }
    const convert = startCli(['data', 'convert', '--from', 'folder', join(root, 'faces'), '--to', 'rec', join(root, 'rec'), '--shuffle']);
    expect((await convert.exit).code, convert.lines.join('\n')).toBe(0);

    const runDir = join(root, 'run');
    const p = startCli([
      'train',
      '--data',
      join(root, 'rec'),
      '--workers',
      '2',
      '--batch',
      '8',
      '--image-size',
      '32',
      '--embedding-size',
      '32',
      '--epochs',
      '2',
      '--warmup-epochs',
      '0',
      '--margin.s',
      '16',
      '--margin.m2',
      '0.2',
      '--run-dir',
      runDir,
      '--log-format',
      'json',
    ]);
    const { code } = await p.exit;
    expect(code, p.lines.slice(-15).join('\n')).toBe(0);
    const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(metrics).toHaveLength(8); // 72 images / 16 per step = 4 steps × 2 epochs
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary.ok).toBe(true);
    const m = JSON.parse(readFileSync(join(summary.checkpoint, 'manifest.json'), 'utf8'));
    expect(m.numClasses).toBe(12);
  });
});
