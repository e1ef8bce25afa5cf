/**
 * `shardface report RUN_DIR` (the real CLI) on a run directory: valid PNGs of
 * the right size, SVGs that parse with a path per series, an HTML page with
 * the plots inline; bad run directories get a clear error.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { runCli } from './helpers/processes.js';
import { descendants, parseXml } from './helpers/xml.js';
import { ReportError, writeReport } from '../src/run/report.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const IDS = ['loss', 'lr', 'throughput', 'accuracy', 'step-time'];

function runDir(lines: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'shardface-report-'));
  writeFileSync(join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
  return dir;
}

function records(n: number): string[] {
  return Array.from({ length: n }, (_, i) => {
    const step = i + 1;
    return JSON.stringify({
      step,
      epoch: Math.floor(i / 10),
      loss: 20 * Math.exp(-step / 30) + 1,
      lr: 0.1,
      images_per_s: 400 + (i % 7),
      step_seconds: 0.2,
      grad_norm: 3,
      data_seconds: 0.01,
      forward_seconds: 0.03,
      classifier_seconds: 0.02,
      backward_seconds: 0.08,
      comm_seconds: 0.04,
      optimizer_seconds: 0.02,
      ...(step % 20 === 0 ? { val_accuracy: 0.6 + step / 1000, val_accuracy_std: 0.02, val_threshold: 1.2 } : {}),
    });
  });
}

describe('shardface report', () => {
  it('writes SVG and PNG plots and a self-contained HTML report, printing their paths', async () => {
    const dir = runDir(records(120));
    writeFileSync(join(dir, 'summary.json'), JSON.stringify({ ok: true, steps: 120, final_loss: 1.4, run_dir: dir }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ workers: 2, backbone: 'tiny' }));
    const r = await runCli(['report', dir]);
    expect(r.code, r.stderr).toBe(0);
    const out = join(dir, 'report');
    const printed = r.stdout.trim().split('\n');
    expect(printed).toEqual([join(out, 'index.html'), ...IDS.map((id) => join(out, `${id}.svg`)), ...IDS.map((id) => join(out, `${id}.png`))]);

    const expectedSeries: Record<string, number> = { loss: 1, lr: 1, throughput: 1, accuracy: 1, 'step-time': 6 };
    for (const id of IDS) {
      const png = readFileSync(join(out, `${id}.png`));
      expect(png.subarray(0, 8)).toEqual(PNG_SIGNATURE);
      const meta = await sharp(png).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['png', 1600, 640]); // 800 × 320 at 2×
      const svg = parseXml(readFileSync(join(out, `${id}.svg`), 'utf8'));
      expect(svg.name).toBe('svg');
      expect([svg.attrs.width, svg.attrs.height]).toEqual(['800', '320']);
      const paths = descendants(svg).filter((e) => e.name === 'path' && e.attrs.class === 'series');
      expect(paths.length, id).toBe(expectedSeries[id]);
      for (const p of paths) expect(p.attrs.d, `${id} ${p.attrs['data-series']}`).toMatch(/^M[\d.]+ [\d.]+ L/);
    }
    // the accuracy curve has the six evaluations (steps 20 … 120)
    const acc = parseXml(readFileSync(join(out, 'accuracy.svg'), 'utf8'));
    const d = descendants(acc).find((e) => e.name === 'path' && e.attrs.class === 'series')!.attrs.d!;
    expect(d.match(/[ML]/g)).toHaveLength(6);

    const html = readFileSync(join(out, 'index.html'), 'utf8');
    expect(html.match(/<svg xmlns/g)).toHaveLength(5);
    for (const id of IDS) expect(html).toContain(`<figure id="${id}">`);
    expect(html).toContain('final_loss');
    expect(html).toContain('backbone');
    expect(html).not.toMatch(/<script|<img|<link|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });

  it('--out puts the report elsewhere', async () => {
    const dir = runDir(records(3));
    const out = join(dir, 'elsewhere');
    const r = await runCli(['report', dir, '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(join(out, 'index.html'));
  });

  it('bad run directories: clear errors (exit 1 from the CLI); no directory given: usage, exit 2', async () => {
    const missing = await runCli(['report', join(tmpdir(), 'shardface-no-such-run')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/shardface report: .*shardface-no-such-run is not a directory/);
    const none = await runCli(['report']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('report takes one run directory');

    const empty = mkdtempSync(join(tmpdir(), 'shardface-report-empty-'));
    await expect(writeReport(empty)).rejects.toThrow('has no metrics.jsonl: not a shardface run directory');
    await expect(writeReport(runDir([...records(2), '{"step": 3, "loss": ', ...records(1)]))).rejects.toThrow(/metrics\.jsonl line 3 is not JSON/);
    await expect(writeReport(runDir(['[1, 2]']))).rejects.toThrow('line 1 is not a JSON object');
    const badSummary = runDir(records(2));
    writeFileSync(join(badSummary, 'summary.json'), '{oops');
    await expect(writeReport(badSummary)).rejects.toThrow(ReportError);
    await expect(writeReport(badSummary)).rejects.toThrow('summary.json is not JSON');
    // nothing was written for a bad input
    expect(existsSync(join(badSummary, 'report'))).toBe(false);
  });
});
