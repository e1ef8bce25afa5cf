/**
 * A RecordIO file cut in half (an interrupted copy): `data info` lists every
 * broken record and the readable count and exits 1; training counts the
 * skipped images in metrics.jsonl and summary.json, and fails with an error
 * naming the count and the share once they exceed maxBadImageShare.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { renderSyntheticFace } from '../src/data/synthetic.js';
import { startCli } from './helpers/processes.js';

// Runs the compiled CLI (npx tsc -p . first).
let root: string;
let rec: string;
/** Index entries whose whole record lies before the cut, counted from the uncut file's offsets. */
let intact: number;
let entries: number;
const IDS = 8;
const PER_ID = 5;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'shardface-truncated-'));
  for (let id = 0; id < IDS; id++) {
    mkdirSync(join(root, 'faces', `p${id}`), { recursive: true });
    for (let k = 0; k < PER_ID; k++) {
      const jpg = await sharp(renderSyntheticFace(6, id, k, 32), { raw: { width: 32, height: 32, channels: 3 } })
        .jpeg()
        .toBuffer();
      writeFileSync(join(root, 'faces', `p${id}`, `${k}.jpg`), jpg);
    }
  }
  rec = join(root, 'rec');
  const c = startCli(['data', 'convert', '--from', 'folder', join(root, 'faces'), '--to', 'rec', rec]);
  expect((await c.exit).code, c.lines.join('\n')).toBe(0);
  const size = statSync(join(rec, 'train.rec')).size;
  const offsets = readFileSync(join(rec, 'train.idx'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Number(l.split('\t')[1]));
  const sorted = [...offsets].sort((a, b) => a - b);
  const cut = Math.floor(size / 2);
  entries = offsets.length;
  intact = sorted.filter((_, i) => (i + 1 < sorted.length ? sorted[i + 1]! : size) <= cut).length;
  truncateSync(join(rec, 'train.rec'), cut);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function cli(args: string[]) {
  const p = startCli(args);
  const { code } = await p.exit;
  return { code, lines: p.lines };
}

describe('a RecordIO file cut in half', () => {
  it('data info reports each broken record and the readable count, and exits 1', async () => {
    expect(entries).toBe(1 + IDS * PER_ID + IDS); // header, images, identity records
    expect(intact).toBeGreaterThan(5);
    expect(intact).toBeLessThan(entries - 5);
    const j = await cli(['data', 'info', rec, '--json']);
    expect(j.code, j.lines.join('\n')).toBe(1);
    const facts = JSON.parse(j.lines.find((l) => l.startsWith('{'))!);
    expect(facts.records).toBe(entries);
    expect(facts.readableRecords).toBe(intact);
    expect(facts.problemCount).toBe(entries - intact);
    expect(facts.problems).toHaveLength(entries - intact);
    // one record straddles the cut, the rest start past it
    expect(facts.problems.filter((p: string) => /truncated record/.test(p))).toHaveLength(1);
    expect(facts.problems.filter((p: string) => /index entry past the end of the file/.test(p))).toHaveLength(entries - intact - 1);
    for (const p of facts.problems) expect(p).toMatch(/^key \d+ at offset \d+: /);

    const t = await cli(['data', 'info', join(rec, 'train.rec')]);
    expect(t.code).toBe(1);
    const text = t.lines.join('\n');
    expect(text).toContain(`records     ${entries} in the index, ${intact} readable`);
    expect(text).toMatch(new RegExp(`problems    ${entries - intact}:`));
    expect(text).toMatch(/more \(--json lists up to 1000\)/);

    // --quick skips the whole-file walk: the scan still finds the unreadable header record
    const q = await cli(['data', 'info', rec, '--quick', '--json']);
    const quick = JSON.parse(q.lines.find((l) => l.startsWith('{'))!);
    expect(quick.records).toBeNull();
    expect(quick.problems.join('\n')).toMatch(/header record 0: .*plain im2rec/);
    expect(q.code).toBe(1);
  });

  const train = (runDir: string, extra: string[] = []) =>
    startCli([
      'train',
      '--data',
      rec,
      '--workers',
      '2',
      '--batch',
      '8',
      '--image-size',
      '32',
      '--embedding-size',
      '16',
      '--epochs',
      '2',
      '--warmup-epochs',
      '0',
      '--margin.s',
      '16',
      '--run-dir',
      runDir,
      '--log-format',
      'json',
      ...extra,
    ]);

  it('training counts the skipped images in metrics.jsonl and summary.json (under maxBadImageShare)', async () => {
    const runDir = join(root, 'run-ok');
    const p = train(runDir, ['--max-bad-image-share', '0.9']);
    const { code } = await p.exit;
    expect(code, p.lines.slice(-15).join('\n')).toBe(0);
    const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary.ok).toBe(true);
    const perStep = metrics.map((m) => m.skipped_images as number);
    const total = perStep.reduce((a, b) => a + b, 0);
    // about half the images lie past the cut: far more than none, fewer than all
    expect(total).toBeGreaterThan(metrics.length * 16 * 0.2);
    expect(total).toBeLessThan(metrics.length * 16 * 0.9);
    expect(summary.skipped_images).toBe(total);
    expect(summary.skipped_image_share).toBeCloseTo(total / (metrics.length * 16), 10);
    // the workers logged each unreadable image once
    expect(readFileSync(join(runDir, 'workers.log'), 'utf8')).toMatch(/unreadable training image skipped/);
  });

  it('over maxBadImageShare (default 0.01) the run fails with an error naming the count and the share', async () => {
    const runDir = join(root, 'run-fail');
    const p = train(runDir);
    const { code } = await p.exit;
    expect(code, p.lines.slice(-15).join('\n')).toBe(1);
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary.ok).toBe(false);
    expect(summary.steps).toBe(1);
    expect(summary.skipped_images).toBeGreaterThan(0);
    const m = /^(\d+) of the (\d+) training images drawn so far were unreadable and skipped \((\d+\.\d\d)%\), more than maxBadImageShare 0\.01 \(1\.00%\)/.exec(summary.error);
    expect(m, summary.error).not.toBeNull();
    expect(Number(m![1])).toBe(summary.skipped_images);
    expect(Number(m![2])).toBe(16);
    expect(Number(m![3])).toBeCloseTo((100 * summary.skipped_images) / 16, 2);
    expect(summary.error).toMatch(/shardface data info/);
    // piped, the run's last record is the summary, with the same error
    const final = p.lines
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return null;
        }
      })
      .find((r) => r?.msg === 'training failed');
    expect(final?.error).toBe(summary.error);
  });
});
