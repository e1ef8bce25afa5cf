import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { renderSyntheticFace } from '../src/data/synthetic.js';
import { startCli } from './helpers/processes.js';

// Runs the compiled CLI (npx tsc -p . first).
let root: string;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'shardface-data-cli-'));
  for (let id = 0; id < 3; id++) {
    mkdirSync(join(root, 'faces', `p${id}`), { recursive: true });
    for (let k = 0; k < 2; k++) {
      const jpg = await sharp(renderSyntheticFace(2, id, k, 24), { raw: { width: 24, height: 24, channels: 3 } })
        .jpeg()
        .toBuffer();
      writeFileSync(join(root, 'faces', `p${id}`, `${k}.jpg`), jpg);
    }
  }
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function cli(args: string[]) {
  const p = startCli(args);
  const { code } = await p.exit;
  return { code, lines: p.lines };
}

describe('shardface data', () => {
  it('convert --from folder --to rec writes train.rec, train.idx, property; info reads both', async () => {
    const out = join(root, 'rec');
    const c = await cli(['data', 'convert', '--from', 'folder', join(root, 'faces'), '--to', 'rec', out, '--shuffle', '--seed', '3', '--json']);
    expect(c.code, c.lines.join('\n')).toBe(0);
    expect(JSON.parse(c.lines.at(-1)!)).toMatchObject({ images: 6, identities: 3, width: 24, height: 24 });
    for (const f of ['train.rec', 'train.idx', 'property']) expect(existsSync(join(out, f))).toBe(true);
    expect(readFileSync(join(out, 'property'), 'utf8').trim()).toBe('3,24,24');

    const i = await cli(['data', 'info', out, '--json']);
    expect(i.code, i.lines.join('\n')).toBe(0);
    expect(JSON.parse(i.lines.at(-1)!)).toMatchObject({ kind: 'recordio', layout: 'insightface', identities: 3, images: 6, width: 24, height: 24, format: 'jpeg' });
    const f = await cli(['data', 'info', join(root, 'faces')]);
    expect(f.code).toBe(0);
    expect(f.lines.join('\n')).toMatch(/identities\s+3[\s\S]*images\s+6[\s\S]*24×24 jpeg/);
  });

  it('errors are clear', async () => {
    const missing = await cli(['data', 'info', join(root, 'missing')]);
    expect(missing.code).toBe(1);
    expect(missing.lines.join('\n')).toMatch(/does not exist/);
    const bad = await cli(['data', 'convert', '--from', 'folder', join(root, 'faces')]);
    expect(bad.code).toBe(2);
    expect(bad.lines.join('\n')).toMatch(/--to rec OUT is needed/);
  });
});
