import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { checkpointProblems, newestVerifiedCheckpoint, stepDir } from '../src/checkpoint/checkpoint.js';

// A real run whose disk fills up: a 3 MiB tmpfs holds two of this run's ~1.2 MB checkpoints, not a third.
describe('training onto a disk that fills up', () => {
  const mnt = mkdtempSync(join(tmpdir(), 'shardface-full-'));
  let mounted = false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt], { stdio: 'pipe' });
    mounted = true;
  } catch (e) {
    if (process.getuid?.() === 0) throw new Error(`cannot mount a tmpfs as root: ${(e as Error).message}`);
  }
  afterAll(() => {
    if (mounted) execFileSync('umount', [mnt]);
  });

  it.skipIf(!mounted)('stops with one clear line, keeps the previous checkpoint usable and writes a complete summary (needs root for a tmpfs)', async () => {
    const runDir = join(mnt, 'run');
    mkdirSync(runDir);
    const p = startCli([
      'train',
      '--workers',
      '2',
      '--batch',
      '16',
      '--image-size',
      '16',
      '--embedding-size',
      '16',
      '--data',
      'synthetic:20',
      '--images-per-identity',
      '4',
      '--held-out-identities',
      '0',
      '--verification-pairs',
      '0',
      '--epochs',
      '3',
      '--checkpoint-every',
      '2',
      '--run-dir',
      runDir,
      '--log-format',
      'json',
    ]);
    const { code } = await p.exit;
    const out = p.lines.join('\n');
    expect(code, out.slice(-3000)).toBe(1);
    expect(out).not.toMatch(/\n\s+at /); // no stack trace
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary.ok).toBe(false);
    expect(summary.error).toMatch(/cannot write .*step-000006.*safetensors: no space left on device \(ENOSPC\)/);
    expect(summary.checkpoint).toBe(stepDir(join(runDir, 'ckpt'), 4));
    const ck = join(runDir, 'ckpt');
    expect(checkpointProblems(stepDir(ck, 4))).toEqual([]);
    expect(newestVerifiedCheckpoint(ck).dir).toBe(stepDir(ck, 4));
    // what the failed write started is gone (no .tmp files), and no manifest marks step 6 complete
    expect(existsSync(join(stepDir(ck, 6), 'manifest.json'))).toBe(false);
    for (const d of readdirSync(ck)) expect(readdirSync(join(ck, d)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
