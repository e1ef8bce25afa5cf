/**
 * The status page: one self-contained HTML document (inline CSS, inline
 * script, SVG drawn in the page; nothing fetched but `api/status`, polled once
 * a second). The curves are drawn by the same chart functions `shardface
 * report` uses (charts.ts, inlined as source).
 */
import { CHART_SCRIPT } from './charts.js';

/** How often the page polls api/status (ms). */
const POLL_MS = 1000;

const STYLE = `
body { font: 14px/1.4 "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 16px 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
#summary span { display: inline-block; margin-right: 18px; white-space: nowrap; }
#conn { font-size: 12px; color: #777; }
#conn.down { color: #c00; font-weight: bold; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
td.text { text-align: left; }
td.state-training, td.state-waiting { color: #1a7f37; }
td.state-silent, td.state-gone { color: #c00; font-weight: bold; }
#charts { display: flex; flex-wrap: wrap; gap: 12px; }
#charts > div { background: #fff; border: 1px solid #ddd; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
`;

/** The page's own logic (plain browser JavaScript); the chart functions are defined before it. */
const CLIENT = `
'use strict';
const $ = (id) => document.getElementById(id);
let updates = 0;
function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}
const fixed = (v, d) => (typeof v === 'number' && isFinite(v) ? v.toFixed(d) : '-');
const mib = (v) => (typeof v === 'number' ? (v / 1048576).toFixed(1) : '-');
function duration(s) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
  return (h ? h + ':' + String(m).padStart(2, '0') : String(m)) + ':' + String(x).padStart(2, '0');
}
function renderSummary(s) {
  const l = s.latest || {};
  const acc = typeof l.val_accuracy === 'number' ? l.val_accuracy : null;
  let lastAcc = null;
  for (const r of s.history) if (typeof r.val_accuracy === 'number') lastAcc = r.val_accuracy;
  const parts = [
    ['job', s.job], ['phase', s.phase], ['step', s.step + ' / ' + s.steps], ['elapsed', duration(s.elapsedSeconds)],
    ['loss', fixed(l.loss, 4)], ['lr', typeof l.lr === 'number' ? l.lr.toExponential(2) : '-'], ['images/s', fixed(l.images_per_s, 1)],
    ['verification', (acc ?? lastAcc) === null ? '-' : ((acc ?? lastAcc) * 100).toFixed(2) + '%'],
    ['restarts', s.counters.restarts], ['skipped steps', s.counters.skippedSteps],
  ];
  const box = $('summary');
  box.textContent = '';
  for (const [k, v] of parts) {
    const span = document.createElement('span');
    span.innerHTML = '<b></b> ';
    span.firstChild.textContent = k;
    span.appendChild(document.createTextNode(String(v)));
    box.appendChild(span);
  }
  document.title = 'shardface ' + s.job + ' · step ' + s.step + '/' + s.steps;
}
function renderWorkers(s) {
  const body = $('workers');
  body.textContent = '';
  for (const w of s.workers) {
    const tr = document.createElement('tr');
    tr.dataset.rank = w.rank === null ? '' : String(w.rank);
    cell(tr, w.rank === null ? '-' : String(w.rank));
    cell(tr, w.host, 'text');
    cell(tr, String(w.pid));
    cell(tr, w.device, 'text');
    cell(tr, w.backend, 'text');
    cell(tr, w.state, 'text state-' + w.state);
    cell(tr, fixed(w.lastSeenSecondsAgo, 1) + ' s ago');
    cell(tr, String(w.lastStep));
    cell(tr, fixed(w.stepSeconds, 3));
    cell(tr, fixed(w.imagesPerSecond, 1));
    cell(tr, mib(w.rssBytes));
    cell(tr, mib(w.ringBytesSent) + ' / ' + mib(w.ringBytesReceived));
    body.appendChild(tr);
  }
}
function renderBreakdown(s) {
  const phases = stepPhases();
  const colours = chartPalette();
  const head = $('breakdown-head');
  if (!head.childElementCount) {
    const tr = document.createElement('tr');
    for (const t of ['rank', ...phases.map((p) => p.name), 'total', '']) {
      const th = document.createElement('th');
      th.textContent = t;
      tr.appendChild(th);
    }
    head.appendChild(tr);
  }
  const body = $('breakdown');
  body.textContent = '';
  const totals = s.workers.map((w) => (w.phases ? phases.reduce((a, p) => a + (w.phases[p.label] || 0), 0) : 0));
  const longest = Math.max(1e-9, ...totals);
  s.workers.forEach((w, i) => {
    if (!w.phases) return;
    const tr = document.createElement('tr');
    cell(tr, String(w.rank));
    for (const p of phases) cell(tr, fixed((w.phases[p.label] || 0) * 1000, 1) + ' ms');
    cell(tr, fixed(totals[i] * 1000, 1) + ' ms');
    // one stacked bar per rank, scaled to the slowest rank
    let x = 0;
    let bar = '<svg xmlns="http://www.w3.org/2000/svg" width="240" height="14">';
    phases.forEach((p, k) => {
      const wpx = ((w.phases[p.label] || 0) / longest) * 240;
      bar += '<rect x="' + x.toFixed(1) + '" y="1" width="' + wpx.toFixed(1) + '" height="12" fill="' + colours[k % colours.length] + '"/>';
      x += wpx;
    });
    const td = document.createElement('td');
    td.className = 'text';
    td.innerHTML = bar + '</svg>';
    tr.appendChild(td);
    body.appendChild(tr);
  });
}
function renderCharts(s) {
  const box = $('charts');
  for (const spec of runCharts(s.history, 600)) {
    let div = $('chart-' + spec.id);
    if (!div) {
      div = document.createElement('div');
      div.id = 'chart-' + spec.id;
      box.appendChild(div);
    }
    div.innerHTML = chartSvg(spec, 560, 260);
  }
}
async function poll() {
  try {
    const r = await fetch('api/status', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const s = await r.json();
    renderSummary(s);
    renderWorkers(s);
    renderBreakdown(s);
    renderCharts(s);
    updates++;
    document.body.dataset.updates = String(updates);
    $('conn').className = '';
    $('conn').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('conn').className = 'down';
    $('conn').textContent = 'coordinator unreachable (' + e.message + '); the run may have ended';
  }
  setTimeout(poll, ${POLL_MS});
}
poll();
`;

export function statusPageHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>shardface</title>
<style>${STYLE}</style>
</head>
<body>
<h1>shardface run <span id="conn">connecting…</span></h1>
<div id="summary"></div>
<h2>Workers</h2>
<table>
<thead><tr><th>rank</th><th>host</th><th>pid</th><th>device</th><th>backend</th><th>state</th><th>last heard</th><th>last step</th><th>step s</th><th>images/s</th><th>RSS MiB</th><th>ring MiB sent / received</th></tr></thead>
<tbody id="workers"></tbody>
</table>
<h2>Last step by phase</h2>
<table><thead id="breakdown-head"></thead><tbody id="breakdown"></tbody></table>
<h2>Curves</h2>
<div id="charts"></div>
<script>
${CHART_SCRIPT}
${CLIENT}
</script>
</body>
</html>
`;
}
