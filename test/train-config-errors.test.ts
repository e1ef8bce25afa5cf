import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'shardface-cfg-'));

async function train(args: string[]) {
  const runDir = join(dir, `run-${Math.random().toString(36).slice(2)}`);
  const p = startCli(['train', '--run-dir', runDir, ...args]);
  const { code } = await p.exit;
  return { code, text: p.lines.join('\n'), runDir, p };
}

describe('bad training configs fail before any process starts', () => {
  const cases: [string, () => string[], RegExp][] = [
    ['an unknown key on the command line', () => ['--sample-rat', '0.1'], /sample-rat|sampleRat/],
    [
      'an unknown key in a config file',
      () => {
        const f = join(dir, 'unknown.json');
        writeFileSync(f, JSON.stringify({ workers: 2, learningRate: 0.1 }));
        return ['--config', f];
      },
      /learningRate/,
    ],
    [
      'a wrong type in a config file',
      () => {
        const f = join(dir, 'type.json');
        writeFileSync(f, JSON.stringify({ batch: 'lots' }));
        return ['--config', f];
      },
      /batch/,
    ],
    ['workers < 1', () => ['--workers', '0'], /workers/],
    ['a batch that does not fit the data', () => ['--data', 'synthetic:10', '--images-per-identity', '4', '--batch', '64', '--workers', '2'], /batch/],
    ['a sample rate out of range', () => ['--sample-rate', '1.5'], /sampleRate|sample-rate/],
    ['an unknown backbone', () => ['--backbone', 'resnet9000'], /backbone/],
    ['a DCQ queue that is not a multiple of the global batch', () => ['--classifier', 'dcq', '--dcq.queue-size', '1000'], /dcq\.queueSize.*multiple/],
    ['a val set that does not exist', () => ['--val', 'lfw=/no/such/lfw.bin'], /val.*no such file/],
  ];
  for (const [what, args, message] of cases) {
    it(`rejects ${what}`, async () => {
      const r = await train(args());
      expect(r.code).toBe(2);
      expect(r.text).toMatch(message);
      expect(existsSync(r.runDir)).toBe(false); // nothing was started or written
      expect(r.p.json().some((l) => l.role === 'worker')).toBe(false);
    });
  }

  it('--print-config shows the resolved configuration and starts nothing', async () => {
    const r = await train(['--print-config', '--sample-rate', '0.25']);
    expect(r.code).toBe(0);
    expect(r.text).toMatch(/sampleRate: 0\.25/);
    expect(existsSync(r.runDir)).toBe(false);
  });
});

describe('legal but probably unintended settings are warned about when the run starts', () => {
  it('a single identity trains to loss 0: the coordinator warns at the start, and train.log has it too', async () => {
    const r = await train([
      '--data',
      'synthetic:1',
      '--workers',
      '1',
      '--batch',
      '4',
      '--images-per-identity',
      '8',
      '--held-out-identities',
      '0',
      '--steps',
      '1',
      '--image-size',
      '32',
      '--embedding-size',
      '16',
      '--log-format',
      'json',
    ]);
    expect(r.code, r.text.slice(-2000)).toBe(0);
    const warning = r.p.json().find((l) => l.level === 40 && l.role === 'coordinator' && /single identity/.test(String(l.msg)));
    expect(warning, r.text.slice(-2000)).toBeDefined();
    expect(String(warning!.msg)).toMatch(/config: the training set \(synthetic:1\) has a single identity: .*loss is 0/);
    expect(readFileSync(join(r.runDir, 'train.log'), 'utf8')).toMatch(/single identity/);
  });
});
