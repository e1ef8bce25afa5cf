/**
 * The pure parts of watching a run: chart specs from step records, SVG from
 * chart specs (parsed back and its coordinates checked against the data),
 * the status page's inlined copy of the same functions, the bounded history
 * and worker states.
 */
import { describe, expect, it } from 'vitest';
import { Script, createContext, runInContext } from 'node:vm';
import { CHART_SCRIPT, chartSvg, decimate, formatTick, niceTicks, runCharts, stepPhases, type ChartSpec, type Row } from '../src/metrics/charts.js';
import { RunHistory, workerState } from '../src/metrics/status.js';
import { statusPageHtml } from '../src/metrics/status-page.js';
import type { MemberView } from '../src/coordinator/membership.js';
import { descendants, parseXml, type XmlElement } from './helpers/xml.js';

/** The [x, y] vertices of an SVG path made of M/L commands (and Z). */
function vertices(d: string): [number, number][] {
  const out: [number, number][] = [];
  const re = /([MLZ])\s*(?:(-?[\d.]+)\s+(-?[\d.]+))?/g;
  let m: RegExpExecArray | null;
  let used = 0;
  while ((m = re.exec(d)) !== null) {
    if (m[1] !== 'Z') out.push([Number(m[2]), Number(m[3])]);
    used += m[0].length;
  }
  expect(used + (d.match(/\s/g)?.length ?? 0)).toBeGreaterThanOrEqual(d.length); // nothing but M/L/Z and numbers
  return out;
}

const seriesPaths = (svg: XmlElement) => descendants(svg).filter((e) => e.name === 'path' && e.attrs.class === 'series');

function rows(n: number): Row[] {
  return Array.from({ length: n }, (_, i) => {
    const step = i + 1;
    const r: Row = {
      step,
      loss: 10 / step,
      lr: 0.1 * (1 - i / n),
      images_per_s: 100 + i,
      data_seconds: 0.01,
      forward_seconds: 0.02,
      classifier_seconds: 0.03,
      backward_seconds: 0.04,
      comm_seconds: 0.05,
      optimizer_seconds: 0.06,
    };
    if (step % 10 === 0) Object.assign(r, { val_accuracy: 0.5 + step / 1000, val_lfw_accuracy: 0.6, val_lfw_accuracy_std: 0.01 });
    return r;
  });
}

describe('ticks and labels', () => {
  it('niceTicks covers the range with 1/2/5 × 10^k steps', () => {
    for (const [lo, hi] of [
      [0, 1],
      [0.0979, 0.1001],
      [-3, 17],
      [1, 36000],
      [2.5e-5, 7.5e-5],
    ] as const) {
      const t = niceTicks(lo, hi, 5);
      expect(t.length).toBeGreaterThanOrEqual(3);
      expect(t.length).toBeLessThanOrEqual(11);
      expect(t[0]!).toBeGreaterThanOrEqual(lo - 1e-12);
      expect(t.at(-1)!).toBeLessThanOrEqual(hi + 1e-12);
      const step = t[1]! - t[0]!;
      const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
      expect(
        [1, 2, 5].some((k) => Math.abs(mantissa - k) < 1e-6),
        `step ${step}`,
      ).toBe(true);
      // the first tick is within one step of lo, the last within one step of hi
      expect(t[0]! - lo).toBeLessThan(step);
      expect(hi - t.at(-1)!).toBeLessThan(step);
    }
    expect(niceTicks(3, 3, 5)).toEqual([3]);
  });

  it('formatTick is short', () => {
    expect(formatTick(0)).toBe('0');
    expect(formatTick(0.30000000000000004)).toBe('0.3');
    expect(formatTick(25000)).toBe('25000');
    expect(formatTick(250000)).toBe('2.5e5');
    expect(formatTick(0.00005)).toBe('5.0e-5');
  });
});

describe('decimate', () => {
  it('returns short series as they are and long ones as at most max bucket means', () => {
    const short: [number, number][] = [
      [1, 2],
      [2, 3],
    ];
    expect(decimate(short, 10)).toBe(short);
    const line = Array.from({ length: 10_001 }, (_, i): [number, number] => [i, 3 * i + 1]);
    const d = decimate(line, 100);
    expect(d.length).toBe(100);
    // means of points on a line lie on the line, in order, spanning the range
    for (const [x, y] of d) expect(y).toBeCloseTo(3 * x + 1, 6);
    for (let i = 1; i < d.length; i++) expect(d[i]![0]).toBeGreaterThan(d[i - 1]![0]);
    expect(d[0]![0]).toBeLessThan(100);
    expect(d.at(-1)![0]).toBeGreaterThan(9900);
    // and the overall mean is kept (equal buckets)
    const mean = (p: [number, number][]) => p.reduce((a, q) => a + q[1], 0) / p.length;
    expect(mean(decimate(line.slice(0, 10_000), 100))).toBeCloseTo(mean(line.slice(0, 10_000)), 6);
  });
});

describe('runCharts', () => {
  it('makes the five charts from step records', () => {
    const charts = runCharts(rows(50));
    expect(charts.map((c) => c.id)).toEqual(['loss', 'lr', 'throughput', 'accuracy', 'step-time']);
    const by = Object.fromEntries(charts.map((c) => [c.id, c]));
    expect(by.loss!.series[0]!.points).toEqual(rows(50).map((r) => [r.step, r.loss]));
    expect(by.accuracy!.series.map((s) => s.name)).toEqual(['held-out pairs', 'lfw']);
    expect(by.accuracy!.series[0]!.points).toEqual([10, 20, 30, 40, 50].map((s) => [s, 0.5 + s / 1000]));
    expect(by['step-time']!.kind).toBe('stacked');
    expect(by['step-time']!.series.map((s) => s.name)).toEqual(stepPhases().map((p) => p.name));
    expect(by['step-time']!.series[4]!.points[0]).toEqual([1, 0.05]);
  });

  it('leaves gaps for missing values and decimates long runs', () => {
    const r = rows(5);
    r[2]!.loss = null;
    expect(runCharts(r)[0]!.series[0]!.points.map((p) => p[0])).toEqual([1, 2, 4, 5]);
    const long = runCharts(rows(5000), 500);
    for (const c of long) for (const s of c.series) expect(s.points.length).toBeLessThanOrEqual(500);
  });
});

describe('chartSvg', () => {
  const spec: ChartSpec = {
    id: 't',
    title: 'Loss <&> "quoted"',
    yLabel: 'loss',
    kind: 'line',
    series: [
      {
        name: 'a & b',
        points: [
          [0, 0],
          [10, 5],
          [20, 10],
        ],
      },
      { name: 'one', points: [[5, 7]] },
    ],
  };

  it('is well-formed XML with an <svg> root, escaped text and one path per series', () => {
    const svg = parseXml(chartSvg(spec, 640, 300));
    expect(svg.name).toBe('svg');
    expect(svg.attrs).toMatchObject({ xmlns: 'http://www.w3.org/2000/svg', width: '640', height: '300' });
    const texts = descendants(svg)
      .filter((e) => e.name === 'text')
      .map((e) => e.text);
    expect(texts).toContain('Loss <&> "quoted"');
    expect(texts).toContain('a & b');
    expect(seriesPaths(svg).map((p) => p.attrs['data-series'])).toEqual(['a & b', 'one']);
    // a lone point also gets a visible marker
    expect(descendants(svg).filter((e) => e.name === 'circle')).toHaveLength(1);
  });

  it('maps the data linearly onto the plot: x from left to right edge, y increasing upwards', () => {
    const only: ChartSpec = { ...spec, series: [spec.series[0]!] };
    const svg = parseXml(chartSvg(only, 640, 300));
    const frame = descendants(svg).find((e) => e.name === 'rect' && e.attrs.fill === 'none')!;
    const [fx, fy, fw, fh] = ['x', 'y', 'width', 'height'].map((k) => Number(frame.attrs[k]));
    const v = vertices(seriesPaths(svg)[0]!.attrs.d!);
    expect(v).toHaveLength(3);
    expect(v[0]![0]).toBeCloseTo(fx!, 0);
    expect(v[2]![0]).toBeCloseTo(fx! + fw!, 0);
    expect(v[1]![0]).toBeCloseTo(fx! + fw! / 2, 0);
    // y: 5% padding either side of [0, 10]
    const y = (val: number) => fy! + fh! - ((val + 0.5) / 11) * fh!;
    for (const [i, val] of [0, 5, 10].entries()) expect(v[i]![1]).toBeCloseTo(y(val), 0);
  });

  it('stacks areas: each upper edge is the running sum', () => {
    const stacked: ChartSpec = {
      id: 's',
      title: 's',
      yLabel: 's',
      kind: 'stacked',
      series: [
        {
          name: 'a',
          points: [
            [1, 1],
            [2, 1],
          ],
        },
        {
          name: 'b',
          points: [
            [1, 2],
            [2, 3],
          ],
        },
      ],
    };
    const svg = parseXml(chartSvg(stacked, 640, 300));
    const frame = descendants(svg).find((e) => e.name === 'rect' && e.attrs.fill === 'none')!;
    const fy = Number(frame.attrs.y);
    const fh = Number(frame.attrs.height);
    const y = (val: number) => fy + fh - (val / 4) * fh; // stacked charts start at 0, no padding: max total 4
    const [a, b] = seriesPaths(svg).map((p) => vertices(p.attrs.d!));
    // a: upper 1,1 then back along 0,0; b: upper 3,4 then back along 1,1
    expect(a!.map((p) => p[1])).toEqual([y(1), y(1), y(0), y(0)].map((q) => Math.round(q * 10) / 10));
    expect(b!.map((p) => p[1])).toEqual([y(3), y(4), y(1), y(1)].map((q) => Math.round(q * 10) / 10));
  });

  it('draws an empty chart as "no data yet", still valid', () => {
    const svg = parseXml(chartSvg({ ...spec, series: [{ name: 'x', points: [] }] }));
    expect(seriesPaths(svg)).toHaveLength(0);
    expect(descendants(svg).some((e) => e.text === 'no data yet')).toBe(true);
  });
});

describe('the status page', () => {
  it('inlines the very chart functions: the browser copy draws the same SVG', () => {
    const ctx = createContext({});
    runInContext(`${CHART_SCRIPT}\nthis.out = chartSvg(runCharts(rowsIn)[4], 560, 260);`, Object.assign(ctx, { rowsIn: rows(30) }));
    expect((ctx as { out: string }).out).toBe(chartSvg(runCharts(rows(30))[4]!, 560, 260));
  });

  it('is one self-contained document whose script compiles', () => {
    const html = statusPageHtml();
    const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
    expect(scripts).toHaveLength(1);
    expect(() => new Script(scripts[0]!)).not.toThrow();
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect(html).toContain("fetch('api/status'");
  });
});

describe('RunHistory', () => {
  it('keeps at most its capacity, spanning the whole run, and every verification record', () => {
    const h = new RunHistory(200);
    const all = rows(1000);
    for (const r of all) h.push(r);
    const kept = h.all();
    expect(kept.length).toBeLessThanOrEqual(200 + 1);
    expect(kept.length).toBeGreaterThan(100);
    expect(kept[0]!.step).toBe(1);
    expect(kept.at(-1)!.step).toBe(1000);
    expect(kept.filter((r) => r.val_accuracy !== undefined)).toHaveLength(100); // 1000 / 10, all kept
    for (let i = 1; i < kept.length; i++) expect(kept[i]!.step!).toBeGreaterThan(kept[i - 1]!.step!);
  });

  it('stays bounded even when every record has a verification', () => {
    const h = new RunHistory(50);
    for (let s = 1; s <= 1000; s++) h.push({ step: s, val_accuracy: 0.5 });
    expect(h.all().length).toBeLessThanOrEqual(51);
    expect(() => new RunHistory(1)).toThrow(/capacity/);
  });
});

describe('workerState', () => {
  const w = (o: Partial<MemberView>): MemberView => ({
    rank: 0,
    requestedRank: null,
    host: 'h',
    pid: 1,
    dataAddress: 'tcp://x:1',
    device: 'cpu',
    backend: 'cpu',
    lastSeen: 1000,
    lastStep: 3,
    ready: true,
    gone: false,
    ...o,
  });
  const job = { phase: 'running' as const, step: 4, heartbeatMs: 100 };
  it('names what the coordinator knows', () => {
    expect(workerState(w({}), job, 1100)).toBe('training');
    expect(workerState(w({ lastStep: 4 }), job, 1100)).toBe('waiting');
    expect(workerState(w({}), job, 1301)).toBe('silent');
    expect(workerState(w({ gone: true }), job, 1100)).toBe('gone');
    expect(workerState(w({ rank: null }), { ...job, phase: 'joining' }, 1100)).toBe('registered');
    expect(workerState(w({ ready: false }), { ...job, phase: 'starting' }, 1100)).toBe('loading');
    expect(workerState(w({}), { ...job, phase: 'done' }, 1100)).toBe('stopped');
  });
});
