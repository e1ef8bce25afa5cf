import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, startCoordinator } from './helpers/processes.js';

describe('multi-node style training: coordinator --config + workers started by a scheduler', () => {
  it('trains with ranks from SLURM_PROCID and a shared token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-ext-'));
    const config = join(dir, 'train.json');
    writeFileSync(
      config,
      JSON.stringify({ workers: 2, batch: 16, imageSize: 16, embeddingSize: 32, data: 'synthetic:20', imagesPerIdentity: 8, heldOutIdentities: 0, steps: 3, backend: 'cpu-native' }),
    );
    writeFileSync(join(dir, 'token'), 'team-secret');
    const runDir = join(dir, 'run');
    const { coord, address: addr } = await startCoordinator(['--config', config, '--workers', '2', '--token-file', join(dir, 'token'), '--job', 'slurm-42', '--run-dir', runDir]);
    await coord.waitFor((l) => /waiting for 2 workers/.test(String(l.msg)));
    const workers = [1, 0].map((r) => startCli(['worker', '--coordinator', addr, '--job', 'slurm-42', '--token-file', join(dir, 'token')], { SLURM_PROCID: String(r) }));
    const [c, ...w] = await Promise.all([coord.exit, ...workers.map((p) => p.exit)]);
    expect(c.code, coord.lines.slice(-10).join('\n')).toBe(0);
    w.forEach((x) => expect(x.code).toBe(0));
    expect(workers[0]!.json().find((l) => l.msg === 'joined job')!.rank).toBe(1);
    const backends = workers.map((p) => p.json().find((l) => l.msg === 'compute backend')!.backend);
    expect(backends).toEqual(['cpu-native', 'cpu-native']); // taken from the job's config
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ ok: true, steps: 3 });
  });
});
