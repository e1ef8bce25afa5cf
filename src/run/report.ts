/**
 * A run's report: its curves (metrics.jsonl) as SVG and PNG files and one
 * self-contained HTML page with the SVGs inline, the summary and the config.
 * `train` writes it to RUN_DIR/report/ at the end of every run; `shardface
 * report RUN_DIR` writes it again (or for a run still going).
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { chartSvg, runCharts, type Row } from '../metrics/charts.js';
import type { RunSummary } from './summary.js';

export class ReportError extends Error {
  override name = 'ReportError';
}

export interface ReportFiles {
  dir: string;
  html: string;
  svgs: string[];
  pngs: string[];
}

const WIDTH = 800;
const HEIGHT = 320;
/** PNGs are rendered at twice the SVG's size, for sharp text on high-density screens. */
export const PNG_SCALE = 2;

/** The step records of metrics.jsonl; a line that is not a JSON object is an error naming its line number. */
export function readMetrics(path: string): Row[] {
  const rows: Row[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        throw new ReportError(`${path} line ${i + 1} is not JSON (${(e as Error).message}): ${line.slice(0, 80)}`);
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ReportError(`${path} line ${i + 1} is not a JSON object: ${line.slice(0, 80)}`);
      rows.push(v as Row);
    });
  return rows;
}

export async function writeReport(runDir: string, opts: { summary?: RunSummary; outDir?: string } = {}): Promise<ReportFiles> {
  if (!existsSync(runDir) || !statSync(runDir).isDirectory()) throw new ReportError(`${runDir} is not a directory`);
  const metricsPath = join(runDir, 'metrics.jsonl');
  if (!existsSync(metricsPath)) throw new ReportError(`${runDir} has no metrics.jsonl: not a shardface run directory`);
  const rows = readMetrics(metricsPath);
  const summary = (opts.summary as unknown as Record<string, unknown> | undefined) ?? readJson(join(runDir, 'summary.json'));
  const config = readJson(join(runDir, 'config.json'));
  const dir = opts.outDir ?? join(runDir, 'report');
  mkdirSync(dir, { recursive: true });

  const charts = runCharts(rows, 1500).map((spec) => ({ spec, svg: chartSvg(spec, WIDTH, HEIGHT) }));
  const svgs: string[] = [];
  const pngs: string[] = [];
  for (const { spec, svg } of charts) {
    const svgPath = join(dir, `${spec.id}.svg`);
    writeFileSync(svgPath, `<?xml version="1.0" encoding="UTF-8"?>\n${svg}\n`);
    svgs.push(svgPath);
    const pngPath = join(dir, `${spec.id}.png`);
    await sharp(Buffer.from(svg), { density: 72 * PNG_SCALE })
      .png()
      .toFile(pngPath);
    pngs.push(pngPath);
  }
  const html = join(dir, 'index.html');
  writeFileSync(html, reportHtml(runDir, rows, summary, config, charts));
  return { dir, html, svgs, pngs };
}

function readJson(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ReportError(`${path} is not JSON: ${(e as Error).message}`);
  }
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function reportHtml(
  runDir: string,
  rows: Row[],
  summary: Record<string, unknown> | null,
  config: Record<string, unknown> | null,
  charts: { spec: { id: string; title: string }; svg: string }[],
): string {
  const table = (o: Record<string, unknown>) =>
    `<table>${Object.entries(o)
      .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v))}</td></tr>`)
      .join('')}</table>`;
  const last = rows.at(-1);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>shardface report: ${esc(runDir)}</title>
<style>
body { font: 14px/1.4 "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 16px 24px; color: #222; }
table { border-collapse: collapse; margin-bottom: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: normal; }
figure { margin: 0 0 16px; }
figcaption { font-size: 12px; color: #666; }
</style>
</head>
<body>
<h1>shardface run report</h1>
<p>${esc(runDir)} — ${rows.length} steps recorded${last && typeof last.step === 'number' ? `, last step ${last.step}` : ''}; written ${esc(new Date().toISOString())}.</p>
<h2>Summary</h2>
${summary ? table(summary) : '<p>No summary.json (the run is still going, or did not end cleanly).</p>'}
<h2>Curves</h2>
${charts.map(({ spec, svg }) => `<figure id="${esc(spec.id)}">\n${svg}\n<figcaption>${esc(spec.title)}: <a href="${esc(spec.id)}.svg">SVG</a> · <a href="${esc(spec.id)}.png">PNG</a></figcaption></figure>`).join('\n')}
<h2>Configuration</h2>
${config ? table(config) : '<p>No config.json.</p>'}
</body>
</html>
`;
}
