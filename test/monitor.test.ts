/**
 * Watching a real run: `shardface train` with 2 workers serves Prometheus
 * metrics and the status page while it trains; a scrape is parsed and checked
 * against metrics.jsonl and against itself (the ring bytes one rank sent are
 * the bytes the other received; the phases add up to the step), headless
 * Chromium renders the page, and a stopped run still writes its report.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import sharp from 'sharp';
import { runCli, startCli, startCoordinator, type Proc } from './helpers/processes.js';
import { parsePrometheus } from './helpers/prometheus-text.js';
import { Browser } from './helpers/chromium.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const DOCS_SCREENSHOT = fileURLToPath(new URL('../docs/status-page.png', import.meta.url));
const PHASES = ['data', 'forward', 'classifier', 'backward', 'allreduce', 'optimizer'];

interface Status {
  step: number;
  history: { step: number; loss: number; val_accuracy?: number }[];
  workers: { rank: number; host: string; state: string; lastSeenSecondsAgo: number }[];
}

async function status(url: string): Promise<Status> {
  const r = await fetch(`${url}api/status`);
  expect(r.status).toBe(200);
  const text = await r.text();
  // the page has no authentication: it must never carry a worker's credentials
  expect(text).not.toMatch(/"(session|curveKey|token)"/);
  return JSON.parse(text) as Status;
}

describe('watching a training run', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'shardface-monitor-'));
  const runDir = join(tmp, 'run');
  let p: Proc;
  let url = '';

  beforeAll(async () => {
    p = startCli([
      'train',
      // the ring carries the gradients (on one host they would go through shared memory, which no byte counter sees)
      '--collective-transport',
      'tcp',
      '--workers',
      '2',
      '--batch',
      '16',
      '--image-size',
      '24',
      '--embedding-size',
      '32',
      '--data',
      'synthetic:40',
      '--images-per-identity',
      '10',
      '--held-out-identities',
      '10',
      '--verification-pairs',
      '100',
      '--epochs',
      '1000',
      '--eval-every',
      '4',
      '--run-dir',
      runDir,
      '--log-format',
      'json',
    ]);
    const line = await p.waitFor((l) => l.msg === 'status page and metrics', 30_000);
    url = line.url as string;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    // long enough to have curves: several steps and at least one verification
    const until = Date.now() + 60_000;
    for (;;) {
      const s = await status(url);
      if (s.history.length >= 8 && s.history.some((h) => typeof h.val_accuracy === 'number')) break;
      if (Date.now() > until) throw new Error(`run too slow: ${JSON.stringify(s).slice(0, 400)}\n${p.lines.slice(-10).join('\n')}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }, 90_000);

  afterAll(async () => {
    if (p && p.child.exitCode === null) {
      p.child.kill('SIGTERM');
      await p.exit;
    }
  });

  it('serves Prometheus metrics with the named series and values that agree with metrics.jsonl', async () => {
    const res = await fetch(`${url}metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const m = parsePrometheus(await res.text());
    const v = (name: string, labels?: Record<string, string>) => {
      const x = m.value(name, labels);
      expect(x, `${name} ${JSON.stringify(labels ?? {})}`).toBeTypeOf('number');
      return x!;
    };
    for (const [name, type] of [
      ['shardface_step', 'gauge'],
      ['shardface_loss', 'gauge'],
      ['shardface_lr', 'gauge'],
      ['shardface_images_per_second', 'gauge'],
      ['shardface_worker_phase_seconds_total', 'counter'],
      ['shardface_worker_bytes_sent_total', 'counter'],
      ['shardface_restarts_total', 'counter'],
      ['shardface_skipped_steps_total', 'counter'],
      ['shardface_step_duration_seconds', 'histogram'],
      ['shardface_worker_rss_bytes', 'gauge'],
    ])
      expect(m.families.get(name!)?.type, name).toBe(type);

    const step = v('shardface_step');
    expect(step).toBeGreaterThanOrEqual(8);
    expect(v('shardface_steps_planned')).toBe(12_000); // 40 identities × 10 images / 32 per step = 12 steps per epoch, × 1000 epochs
    // the scraped loss and lr are those of the same step in metrics.jsonl, to the last digit
    const rec = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .find((r) => r.step === step);
    expect(rec, `step ${step} in metrics.jsonl`).toBeDefined();
    expect(v('shardface_loss')).toBe(rec.loss);
    expect(v('shardface_lr')).toBe(rec.lr);
    expect(v('shardface_images_per_second')).toBe(rec.images_per_s);
    expect(v('shardface_loss')).toBeGreaterThan(0);
    expect(v('shardface_lr')).toBeGreaterThan(0);
    // 32 images per step: the counter is exactly steps × global batch
    expect(v('shardface_images_total')).toBe(step * 32);
    expect(v('shardface_step_duration_seconds_count')).toBe(step);

    for (const rank of ['0', '1']) {
      const stepSeconds = v('shardface_worker_step_seconds', { rank });
      expect(v('shardface_worker_images_per_second', { rank })).toBeCloseTo(16 / stepSeconds, 6);
      // the six phases partition the worker's step (up to the few microseconds between the clocks)
      const phases = PHASES.map((phase) => v('shardface_worker_phase_seconds', { rank, phase }));
      for (const s of phases) expect(s).toBeGreaterThanOrEqual(0);
      const sum = phases.reduce((a, b) => a + b, 0);
      expect(sum).toBeLessThanOrEqual(stepSeconds + 1e-6);
      expect(sum).toBeGreaterThan(0.95 * stepSeconds);
      for (const phase of PHASES) expect(v('shardface_worker_phase_seconds_total', { rank, phase })).toBeGreaterThanOrEqual(v('shardface_worker_phase_seconds', { rank, phase }));
      expect(v('shardface_worker_rss_bytes', { rank })).toBeGreaterThan(20 << 20);
      expect(v('shardface_worker_rss_bytes', { rank })).toBeLessThan(8 * 2 ** 30);
      expect(v('shardface_worker_bytes_sent_total', { rank, plane: 'control' })).toBeGreaterThan(0);
      expect(v('shardface_worker_bytes_received_total', { rank, plane: 'control' })).toBeGreaterThan(0);
      expect(v('shardface_worker_up', { rank })).toBe(1);
      expect(v('shardface_worker_last_seen_seconds', { rank })).toBeLessThan(10);
    }
    // a 2-rank ring: what rank 0 sent, rank 1 received, byte for byte (both counted up to the same step)
    const sent0 = v('shardface_worker_bytes_sent_total', { rank: '0', plane: 'ring' });
    expect(sent0).toBeGreaterThan(1 << 20);
    expect(v('shardface_worker_bytes_received_total', { rank: '1', plane: 'ring' })).toBe(sent0);
    expect(v('shardface_worker_bytes_received_total', { rank: '0', plane: 'ring' })).toBe(v('shardface_worker_bytes_sent_total', { rank: '1', plane: 'ring' }));
    expect(v('shardface_restarts_total')).toBe(0);
    expect(v('shardface_skipped_steps_total')).toBe(0);
    const acc = v('shardface_verification_accuracy', { set: 'held-out' });
    expect(acc).toBeGreaterThanOrEqual(0);
    expect(acc).toBeLessThanOrEqual(1);
    expect(v('shardface_workers_expected')).toBe(2);
    expect(v('shardface_workers_registered')).toBe(2);
    const info = m.samples('shardface_worker_info');
    expect(info.map((s) => s.labels.rank).sort()).toEqual(['0', '1']);
    for (const s of info) expect(s.labels.host).toBe(hostname());
    expect(v('shardface_coordinator_process_resident_memory_bytes')).toBeGreaterThan(0);
    // none of the job's own series is ever NaN or infinite
    for (const [name] of m.families) if (!name.startsWith('shardface_coordinator_')) for (const x of m.samples(name)) if (!name.endsWith('_bucket')) expect(Number.isFinite(x.value), name).toBe(true);
  });

  it('answers only GET on its three paths', async () => {
    expect((await fetch(`${url}nope`)).status).toBe(404);
    expect((await fetch(`${url}metrics`, { method: 'POST' })).status).toBe(405);
    const page = await fetch(url);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    // self-contained: nothing loaded from elsewhere
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });

  it('renders the status page in headless Chromium: worker rows, curves with points, step breakdown', async () => {
    const browser = Browser.launch();
    try {
      const page = await browser.newPage(1280, 1500);
      await page.navigate(url);
      await page.waitFor<boolean>("document.querySelectorAll('#workers tr').length === 2 && Number(document.body.dataset.updates) >= 2", 40_000);
      const rows = await page.evaluate<string[][]>("[...document.querySelectorAll('#workers tr')].map((tr) => [...tr.children].map((td) => td.textContent))");
      expect(rows.map((r) => r[0])).toEqual(['0', '1']);
      for (const r of rows) {
        expect(r[1]).toBe(hostname());
        expect(['training', 'waiting']).toContain(r[5]);
        expect(r[6]).toMatch(/^\d+\.\d s ago$/);
      }
      // every curve has a path with points (M… L…); the loss path has as many points as the history has steps
      const charts = await page.evaluate<Record<string, { name: string; points: number }[]>>(
        `Object.fromEntries([...document.querySelectorAll('#charts > div')].map((d) => [d.id, [...d.querySelectorAll('path.series')].map((p) => ({ name: p.dataset.series, points: (p.getAttribute('d').match(/[ML]/g) || []).length }))]))`,
      );
      expect(Object.keys(charts).sort()).toEqual(['chart-accuracy', 'chart-loss', 'chart-lr', 'chart-step-time', 'chart-throughput']);
      for (const id of ['chart-loss', 'chart-lr', 'chart-throughput']) expect(charts[id]![0]!.points, id).toBeGreaterThanOrEqual(8);
      expect(charts['chart-accuracy']![0]!.points).toBeGreaterThanOrEqual(1);
      expect(charts['chart-step-time']!.map((s) => s.name)).toEqual(['data', 'forward', 'classifier exchange', 'backward', 'all-reduce', 'optimizer']);
      const breakdown = await page.evaluate<number>("document.querySelectorAll('#breakdown tr').length");
      expect(breakdown).toBe(2);
      const png = await page.screenshot();
      expect(png.subarray(0, 8)).toEqual(PNG_SIGNATURE);
      const shot = join(tmp, 'status-page.png');
      writeFileSync(shot, png);
      const meta = await sharp(shot).metadata();
      expect(meta.width).toBeGreaterThanOrEqual(1280);
      if (process.env.SHARDFACE_UPDATE_DOCS) {
        mkdirSync(join(DOCS_SCREENSHOT, '..'), { recursive: true });
        writeFileSync(DOCS_SCREENSHOT, png);
      }
    } finally {
      await browser.close();
    }
  }, 90_000);

  it('a stopped run still writes its report and prints its path', async () => {
    p.child.kill('SIGTERM');
    const { code } = await p.exit;
    expect(code).toBe(143); // a graceful stop: 128 + SIGTERM
    const html = join(runDir, 'report', 'index.html');
    // piped, the summary is the final JSON record, and it names the report
    const last = p.lines
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return null;
        }
      })
      .filter((r) => r?.msg === 'training stopped');
    expect(
      last.map((r) => r.report),
      p.lines.slice(-12).join('\n'),
    ).toEqual([html]);
    for (const id of ['loss', 'lr', 'throughput', 'accuracy', 'step-time']) {
      expect(existsSync(join(runDir, 'report', `${id}.svg`)), id).toBe(true);
      expect(readFileSync(join(runDir, 'report', `${id}.png`)).subarray(0, 8)).toEqual(PNG_SIGNATURE);
    }
    expect(JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')).report).toBe(html);
  });
});

describe('monitoring endpoint: bad settings', () => {
  const base = ['train', '--workers', '1', '--batch', '8', '--data', 'synthetic:10', '--images-per-identity', '4', '--held-out-identities', '0', '--steps', '1'];

  it('a port in use stops the run before it starts, naming the port, and leaves the run directory alone', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as { port: number }).port;
    const runDir = join(mkdtempSync(join(tmpdir(), 'shardface-busy-')), 'run');
    try {
      const r = await runCli([...base, '--metrics-port', String(port), '--run-dir', runDir], 30_000);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`cannot serve metrics on 127.0.0.1:${port}: the port is in use`);
      expect(existsSync(runDir)).toBe(false);
    } finally {
      busy.close();
    }
  });

  it('an empty host and an out-of-range port are refused by the config check, naming the key', async () => {
    const empty = await runCli([...base, '--metrics-host', '', '--run-dir', join(tmpdir(), 'shardface-never')], 30_000);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('config key "metricsHost" (from command line (--metrics-host)) must be a string, got ""');
    const range = await runCli([...base, '--metrics-port', '70000'], 30_000);
    expect(range.code).toBe(2);
    expect(range.stderr).toContain('config key "metricsPort" (from command line (--metrics-port)) must be an integer in [-1, 65535], got "70000"');
  });
});

describe('shardface coordinator serves the same endpoint', () => {
  it('a plain job: workers and step times while it runs; --metrics-port -1: none', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '1', '--steps', '6', '--step-delay-ms', '300', '--job', 'watch-plain']);
    try {
      const url = (await coord.waitFor((l) => typeof l.url === 'string')).url as string;
      const before = parsePrometheus(await (await fetch(`${url}metrics`)).text());
      expect(before.value('shardface_workers_expected')).toBe(1);
      expect(before.value('shardface_workers_registered')).toBe(0);
      const worker = startCli(['worker', '--coordinator', addr, '--backend', 'cpu']);
      await coord.waitFor((l) => l.msg === 'all workers ready; starting');
      const until = Date.now() + 20_000;
      let m = before;
      while ((m.value('shardface_step') ?? 0) < 2 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 200));
        m = parsePrometheus(await (await fetch(`${url}metrics`)).text());
      }
      expect(m.value('shardface_step')).toBeGreaterThanOrEqual(2);
      // an empty job has no loss: the series stays at its initial 0 rather than NaN
      expect(m.value('shardface_loss')).toBe(0);
      expect(m.value('shardface_steps_planned')).toBe(6);
      expect(m.samples('shardface_worker_info')[0]!.labels).toMatchObject({ rank: '0', host: hostname(), backend: 'cpu' });
      // steps take the 300 ms step delay (the first step's wall time also holds the wait for the worker)
      expect(m.value('shardface_step_duration_seconds_sum')! / m.value('shardface_step_duration_seconds_count')!).toBeGreaterThanOrEqual(0.29);
      expect(m.value('shardface_worker_bytes_sent_total', { rank: '0', plane: 'control' })).toBeGreaterThan(0);
      const s = await status(url);
      expect(s.workers.map((w) => [w.rank, w.host])).toEqual([[0, hostname()]]);
      expect((await coord.exit).code).toBe(0);
      expect((await worker.exit).code).toBe(0);
    } finally {
      coord.child.kill();
    }
    const off = startCli(['coordinator', '--bind', 'tcp://127.0.0.1:0', '--workers', '1', '--steps', '1', '--join-timeout', '1', '--metrics-port', '-1']);
    await off.exit;
    expect(off.json().some((l) => 'url' in l)).toBe(false);
    expect(off.json().some((l) => l.msg === 'coordinator listening')).toBe(true);
  });
});
