/**
 * The curves of a run, as data and as SVG: pure functions from step records
 * (the lines of metrics.jsonl) to chart specs, and from a chart spec to an SVG
 * string. `shardface report` writes these SVGs to files; the status page runs
 * the very same functions in the browser: {@link CHART_SCRIPT} is their
 * source, so every function here must be self-contained (no imports, no
 * module-level constants) and may call only the others listed there.
 */

/** One line of metrics.jsonl (or of the status page's history): step, loss, lr, … */
export type Row = Record<string, number | null | undefined>;

export interface Series {
  name: string;
  /** [x, y] pairs in increasing x; non-finite y leave a gap. */
  points: [number, number][];
}

export interface ChartSpec {
  /** File-name-safe id: loss, lr, throughput, accuracy, step-time. */
  id: string;
  title: string;
  yLabel: string;
  /** line: one curve per series; stacked: areas stacked in series order (series share their x values). */
  kind: 'line' | 'stacked';
  series: Series[];
}

/**
 * The step-time breakdown, in the order a step runs: the key in a worker's
 * step metrics, the key in metrics.jsonl, the Prometheus `phase` label and the
 * name charts show.
 */
export function stepPhases(): { worker: string; record: string; label: string; name: string }[] {
  return [
    { worker: 'dataSeconds', record: 'data_seconds', label: 'data', name: 'data' },
    { worker: 'forwardSeconds', record: 'forward_seconds', label: 'forward', name: 'forward' },
    { worker: 'classifierSeconds', record: 'classifier_seconds', label: 'classifier', name: 'classifier exchange' },
    { worker: 'backwardSeconds', record: 'backward_seconds', label: 'backward', name: 'backward' },
    { worker: 'commSeconds', record: 'comm_seconds', label: 'allreduce', name: 'all-reduce' },
    { worker: 'optimizerSeconds', record: 'optimizer_seconds', label: 'optimizer', name: 'optimizer' },
  ];
}

/**
 * At most `max` points: consecutive points are averaged in equal buckets, so a
 * million-step run still draws as a few hundred path segments.
 */
export function decimate(points: [number, number][], max: number): [number, number][] {
  if (points.length <= max || max < 1) return points;
  const out: [number, number][] = [];
  const per = points.length / max;
  for (let b = 0; b < max; b++) {
    const lo = Math.floor(b * per);
    const hi = Math.max(lo + 1, Math.floor((b + 1) * per));
    let sx = 0;
    let sy = 0;
    let n = 0;
    for (let i = lo; i < hi && i < points.length; i++) {
      const p = points[i]!;
      if (!Number.isFinite(p[1])) continue;
      sx += p[0];
      sy += p[1];
      n++;
    }
    if (n > 0) out.push([sx / n, sy / n]);
  }
  return out;
}

/** The charts of a run from its step records: loss, learning rate, throughput, verification accuracy, step-time breakdown. */
export function runCharts(rows: Row[], maxPoints?: number): ChartSpec[] {
  const limit = maxPoints ?? 1000;
  const pick = (key: string): [number, number][] => {
    const pts: [number, number][] = [];
    for (const r of rows) {
      const v = r[key];
      if (typeof v === 'number' && typeof r.step === 'number' && Number.isFinite(v)) pts.push([r.step, v]);
    }
    return decimate(pts, limit);
  };
  const has = (key: string) => rows.some((r) => typeof r[key] === 'number');
  const loss: Series[] = [{ name: 'loss', points: pick('loss') }];
  if (has('distill_loss')) loss.push({ name: 'distill loss', points: pick('distill_loss') });
  const accuracy: Series[] = [{ name: 'held-out pairs', points: pick('val_accuracy') }];
  const valKeys: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (/^val_.+_accuracy$/.test(k) && !valKeys.includes(k)) valKeys.push(k);
  for (const k of valKeys) accuracy.push({ name: k.slice(4, -'_accuracy'.length), points: pick(k) });
  // the breakdown is stacked, so every phase needs a value at every step drawn (0 where a worker did not report it)
  const timed = rows.filter((r) => typeof r.step === 'number' && stepPhases().some((p) => typeof r[p.record] === 'number'));
  const phases: Series[] = stepPhases().map((p) => ({
    name: p.name,
    points: decimate(
      timed.map((r): [number, number] => {
        const v = r[p.record];
        return [r.step as number, typeof v === 'number' && Number.isFinite(v) ? v : 0];
      }),
      limit,
    ),
  }));
  return [
    { id: 'loss', title: 'Training loss', yLabel: 'loss', kind: 'line', series: loss },
    { id: 'lr', title: 'Learning rate', yLabel: 'lr', kind: 'line', series: [{ name: 'lr', points: pick('lr') }] },
    { id: 'throughput', title: 'Throughput (whole job)', yLabel: 'images/s', kind: 'line', series: [{ name: 'images/s', points: pick('images_per_s') }] },
    { id: 'accuracy', title: 'Verification accuracy', yLabel: 'accuracy', kind: 'line', series: accuracy },
    { id: 'step-time', title: 'Step time by phase (slowest worker)', yLabel: 'seconds', kind: 'stacked', series: phases },
  ];
}

/** Series colours, in series order. */
function chartPalette(): string[] {
  return ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
}

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 × a power of ten apart). */
export function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** A tick label: short, exponent form for very small or large values. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

/**
 * One chart as a standalone SVG document: title, axes with round ticks, grid,
 * one `<path class="series">` per series that has points (data-series = its
 * name), legend. Text is escaped; sizes are in pixels.
 */
export function chartSvg(spec: ChartSpec, width?: number, height?: number): string {
  const W = width ?? 640;
  const H = height ?? 300;
  const palette = chartPalette();
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const left = 64;
  const right = 16;
  const bottom = 40;
  // legend rows under the title, wrapped to the plot's width
  const legend: { name: string; x: number; row: number; colour: string }[] = [];
  let lx = left;
  let row = 0;
  spec.series.forEach((s, i) => {
    const w = 22 + s.name.length * 6.2;
    if (lx + w > W - right && lx > left) {
      lx = left;
      row++;
    }
    legend.push({ name: s.name, x: lx, row, colour: palette[i % palette.length]! });
    lx += w;
  });
  const top = 44 + row * 15;
  const pw = W - left - right;
  const ph = H - top - bottom;
  // stacked: each series is drawn between the running total below it and that total plus itself
  const stacked = spec.kind === 'stacked';
  const drawn: { name: string; upper: [number, number][]; lower: [number, number][] | null }[] = [];
  let base: number[] = [];
  for (const s of spec.series) {
    if (stacked) {
      const upper = s.points.map((p, i): [number, number] => [p[0], (base[i] ?? 0) + (Number.isFinite(p[1]) ? p[1] : 0)]);
      const lower = s.points.map((p, i): [number, number] => [p[0], base[i] ?? 0]);
      base = upper.map((p) => p[1]);
      drawn.push({ name: s.name, upper, lower });
    } else drawn.push({ name: s.name, upper: s.points, lower: null });
  }
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = stacked ? 0 : Infinity;
  let y1 = -Infinity;
  for (const d of drawn)
    for (const p of d.upper) {
      if (!Number.isFinite(p[1])) continue;
      x0 = Math.min(x0, p[0]);
      x1 = Math.max(x1, p[0]);
      y0 = Math.min(y0, p[1]);
      y1 = Math.max(y1, p[1]);
    }
  const empty = !(x1 >= x0);
  if (empty) {
    x0 = 0;
    x1 = 1;
    y0 = 0;
    y1 = 1;
  }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    const pad = Math.abs(y0) * 0.1 || 1;
    y0 -= pad;
    y1 += pad;
  } else if (!stacked) {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const sx = (x: number) => left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => top + ph - ((y - y0) / (y1 - y0)) * ph;
  const num = (v: number) => String(Math.round(v * 10) / 10);
  const line = (pts: [number, number][]) => {
    let d = '';
    let pen = false;
    for (const p of pts) {
      if (!Number.isFinite(p[1])) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${num(sx(p[0]))} ${num(sy(p[1]))} `;
      pen = true;
    }
    return d.trim();
  };
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${left}" y="17" font-size="14" font-weight="bold" fill="#222">${esc(spec.title)}</text>`);
  for (const t of niceTicks(y0, y1, 5)) {
    const y = num(sy(t));
    parts.push(`<line x1="${left}" x2="${left + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#555">${esc(formatTick(t))}</text>`);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    const x = num(sx(t));
    parts.push(`<line x1="${x}" x2="${x}" y1="${top + ph}" y2="${top + ph + 4}" stroke="#888"/>`);
    parts.push(`<text x="${x}" y="${top + ph + 16}" text-anchor="middle" fill="#555">${esc(formatTick(t))}</text>`);
  }
  parts.push(`<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  parts.push(`<text x="${left + pw / 2}" y="${H - 6}" text-anchor="middle" fill="#333">step</text>`);
  parts.push(`<text transform="translate(14 ${top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">${esc(spec.yLabel)}</text>`);
  if (empty) parts.push(`<text x="${left + pw / 2}" y="${top + ph / 2}" text-anchor="middle" fill="#999">no data yet</text>`);
  drawn.forEach((d, i) => {
    const colour = palette[i % palette.length];
    if (d.upper.length === 0) return;
    if (d.lower) {
      const back = d.lower.slice().reverse();
      const area = `${line(d.upper)} ${line(back).replace(/^M/, 'L')} Z`;
      parts.push(`<path class="series" data-series="${esc(d.name)}" d="${area}" fill="${colour}" fill-opacity="0.75" stroke="${colour}" stroke-width="0.5"/>`);
    } else {
      const lone = d.upper.filter((p) => Number.isFinite(p[1])).length === 1;
      parts.push(`<path class="series" data-series="${esc(d.name)}" d="${line(d.upper)}" fill="none" stroke="${colour}" stroke-width="1.6" stroke-linejoin="round"/>`);
      // a single point (one evaluation so far) would be an invisible path: mark it
      if (lone) for (const p of d.upper) if (Number.isFinite(p[1])) parts.push(`<circle cx="${num(sx(p[0]))}" cy="${num(sy(p[1]))}" r="3" fill="${colour}"/>`);
    }
  });
  for (const l of legend) {
    const y = 26 + l.row * 15;
    parts.push(`<rect x="${num(l.x)}" y="${y}" width="10" height="10" fill="${l.colour}"/>`);
    parts.push(`<text x="${num(l.x + 14)}" y="${y + 9}" fill="#333">${esc(l.name)}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}

/** The source of the functions above, for the status page's inline script (same charts in the browser, no second copy). */
export const CHART_SCRIPT = [stepPhases, decimate, runCharts, chartPalette, niceTicks, formatTick, chartSvg].map((f) => f.toString()).join('\n');
