/**
 * What `shardface train` prints: piped, log records of every process and
 * nothing else; at a terminal (a pseudo-terminal from script(1)), the progress
 * bar and the summary only, with every record in the run directory's files.
 * Workers print a raw line of their own (as a library would) through a
 * --require hook, to show such lines are carried in the same format.
 */
import { describe, expect, it } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './helpers/processes.js';
import { LineForwarder } from '../src/log/forward.js';

const TRAIN = [
  'train',
  '--workers',
  '2',
  '--steps',
  '3',
  '--batch',
  '8',
  '--imageSize',
  '16',
  '--embeddingSize',
  '16',
  '--data',
  'synthetic:20',
  '--imagesPerIdentity',
  '4',
  '--heldOutIdentities',
  '0',
  '--backend',
  'cpu-native',
  '--logEvery',
  '1',
];
const RAW = 'a library printing to stderr';

function rawHook(dir: string): string {
  const hook = join(dir, 'raw-line.cjs');
  // only in workers: print a non-JSON line when the process ends (its rank is known by then)
  writeFileSync(hook, `if (process.argv.includes('worker')) process.on('exit', () => process.stderr.write(${JSON.stringify(RAW)} + '\\n'));\n`);
  return hook;
}

const records = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('train output', () => {
  it('piped: every line on stdout and stderr is a JSON record with role, rank and step', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-pipe-'));
    const env = { ...process.env, NODE_OPTIONS: `--require ${rawHook(dir)}` };
    const r = await new Promise<{ code: number; signal: string | null; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, ...TRAIN, '--runDir', join(dir, 'run')], { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, signal: err?.signal ?? null, stdout, stderr }),
      ),
    );
    expect(r.code, `signal ${r.signal}; stderr: ${r.stderr.slice(-2000)}`).toBe(0);
    const lines = [...r.stdout.split('\n'), ...r.stderr.split('\n')].filter((l) => l.trim() !== '');
    for (const l of lines) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON line: ${l}`);
      }
      expect(typeof rec.role, l).toBe('string');
      expect(typeof rec.level, l).toBe('number');
      expect(rec, l).toHaveProperty('rank');
      expect(rec, l).toHaveProperty('step');
    }
    const recs = records(r.stdout + r.stderr);
    expect(new Set(recs.map((x) => x.role))).toEqual(new Set(['coordinator', 'worker']));
    // worker lines carry their rank once joined, and the step they are in
    const joined = recs.filter((x) => x.role === 'worker' && x.msg === 'joined job');
    expect(joined.map((x) => x.rank).sort()).toEqual([0, 1]);
    expect(recs.filter((x) => x.role === 'coordinator' && x.msg === 'step').map((x) => x.step)).toEqual([1, 2, 3]);
    // the summary is one record, not text
    const summary = recs.find((x) => x.msg === 'training finished');
    expect(summary).toMatchObject({ role: 'coordinator', ok: true, steps: 3 });
    // the workers' raw lines arrive wrapped, stamped with the rank and step they last logged
    const raw = recs.filter((x) => x.msg === RAW);
    expect(raw).toHaveLength(2);
    for (const x of raw) expect(x).toMatchObject({ role: 'worker', stream: 'stderr', level: 40 });
    expect(raw.map((x) => x.rank).sort()).toEqual([0, 1]);
    expect(raw.map((x) => x.localRank).sort()).toEqual([0, 1]);
  });

  const noScript = spawnSync('script', ['--version']).error ? 'script(1) from util-linux is not installed' : null;
  it.skipIf(noScript !== null)(`at a terminal: only the progress bar and the summary${noScript ? ` (skipped: ${noScript})` : ''}`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-tty-'));
    const runDir = join(dir, 'run');
    const cmd = [process.execPath, CLI, ...TRAIN, '--runDir', runDir].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: `--require ${rawHook(dir)}`, COLUMNS: '120' }, timeout: 120_000 });
    expect(r.status, r.stdout.slice(-2000)).toBe(0);
    // split the screen output at carriage returns and newlines; drop the erase-line sequence
    const pieces = r.stdout
      .replaceAll('\u001b[2K', '')
      .split(/[\r\n]+/)
      .filter((p) => p.trim() !== '');
    const bar = pieces.filter((p) => /^[█░]+ +\d+\/3 {2}loss \d+\.\d{3} {2}lr \S+ {2}\d+ img\/s {2}ETA \d+:\d\d$/.test(p));
    expect(bar.map((p) => /(\d+)\/3/.exec(p)![1])).toEqual(['1', '2', '3']);
    const summaryStart = pieces.indexOf('shardface: training finished');
    expect(summaryStart).toBeGreaterThan(0);
    const summary = pieces.slice(summaryStart);
    expect(summary.map((p) => p.trim().split(/\s{2,}/)[0])).toEqual([
      'shardface: training finished',
      'steps',
      'throughput',
      'final loss',
      'skipped',
      'verification',
      'checkpoint',
      'run directory',
      'report',
      'logs',
    ]);
    const before = pieces.slice(0, summaryStart);
    for (const p of before) expect(bar.includes(p) || /^starting 2 workers: /.test(p) || /^shardface: status page http:\/\/127.0.0.1:\d+\/ /.test(p), `unexpected on the terminal: ${p}`).toBe(true);
    expect(r.stdout).not.toContain(RAW);
    // every record went to the files instead, the workers' raw lines included
    const train = records(readFileSync(join(runDir, 'train.log'), 'utf8'));
    expect(train.some((x) => x.msg === 'step' && x.step === 3)).toBe(true);
    expect(train.every((x) => x.role === 'coordinator')).toBe(true);
    const workers = records(readFileSync(join(runDir, 'workers.log'), 'utf8'));
    expect(workers.every((x) => x.role === 'worker')).toBe(true);
    expect(workers.filter((x) => x.msg === 'joined job')).toHaveLength(2);
    expect(workers.filter((x) => x.msg === RAW)).toHaveLength(2);
  });
});

describe('LineForwarder', () => {
  it('passes log records through and wraps anything else with the rank and step last seen', () => {
    const f = new LineForwarder();
    const rec = JSON.stringify({ level: 30, role: 'worker', rank: 3, step: 17, msg: 'step' });
    expect(f.forward(rec, { index: 1, pid: 42 }, 'stdout')).toMatchObject({ line: rec, wrapped: false });
    const w = f.forward('Segmentation fault', { index: 1, pid: 42 }, 'stderr');
    expect(w.wrapped).toBe(true);
    expect(JSON.parse(w.line)).toMatchObject({ level: 40, role: 'worker', rank: 3, step: 17, pid: 42, localRank: 1, stream: 'stderr', msg: 'Segmentation fault' });
    // another child has reported nothing yet; JSON that is not a log record is wrapped as text
    const other = f.forward('{"hello":1}', { index: 0, pid: 43 }, 'stdout');
    expect(JSON.parse(other.line)).toMatchObject({ level: 30, rank: null, step: null, msg: '{"hello":1}' });
    expect(JSON.parse(f.forward('{broken', { index: 0, pid: 43 }, 'stdout').line).msg).toBe('{broken');
  });
});
