/**
 * A real 2-worker training run with the gradient all-reduce over shared memory
 * ends with the same checkpoint, byte for byte, as the same run over the TCP
 * ring: on one host the shared-memory sum adds in the ring's order
 * (docs/architecture.md, "Data plane"). The shm run uses small buckets, so
 * several buckets and a parameter larger than a slot (in pieces) go through it.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { readManifest, stepDir } from '../src/checkpoint/checkpoint.js';
import { TINY_TRAIN_ARGS } from './helpers/train-args.js';

const root = mkdtempSync(join(tmpdir(), 'shardface-shm-'));

async function train(name: string, extra: string[]): Promise<{ runDir: string; lines: string[] }> {
  const runDir = join(root, name);
  const p = startCli(['train', ...TINY_TRAIN_ARGS, '--steps', '4', '--lr', '0.2', '--warmup-steps', '0', '--seed', '3', '--run-dir', runDir, ...extra]);
  const { code } = await p.exit;
  expect(code, p.lines.slice(-20).join('\n')).toBe(0);
  return { runDir, lines: p.lines };
}

function transportLines(lines: string[]): Record<string, unknown>[] {
  return lines
    .filter((l) => l.includes('collectiveTransport'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((j) => typeof j.collectiveTransport === 'string');
}

describe('training over shared memory', () => {
  it('2 workers: the shm run ends with the same checkpoint bytes and losses as the tcp run', async () => {
    const [shm, tcp] = await Promise.all([train('shm', ['--collective-transport', 'shm', '--bucket-mb', '0.05']), train('tcp', ['--collective-transport', 'tcp'])]);
    const shmSays = transportLines(shm.lines);
    expect(shmSays.map((j) => j.collectiveTransport)).toEqual(['shm', 'shm']);
    expect(transportLines(tcp.lines).map((j) => [j.collectiveTransport, j.reason])).toEqual([
      ['tcp', 'collectiveTransport is tcp'],
      ['tcp', 'collectiveTransport is tcp'],
    ]);
    const a = readManifest(stepDir(join(shm.runDir, 'ckpt'), 4));
    const b = readManifest(stepDir(join(tcp.runDir, 'ckpt'), 4));
    expect(a.backbone.sha256).toBe(b.backbone.sha256);
    expect(a.shards.map((s) => s.sha256)).toEqual(b.shards.map((s) => s.sha256));
    const losses = (dir: string) =>
      readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { loss: number }).loss);
    expect(losses(shm.runDir)).toEqual(losses(tcp.runDir));
    expect(losses(shm.runDir)).toHaveLength(4);
    expect(new Set(losses(shm.runDir)).size).toBeGreaterThan(1); // it trained
  });
});
