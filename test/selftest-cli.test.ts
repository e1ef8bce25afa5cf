import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'shardface-selftest-'));

async function selftest(args: string[]): Promise<{ code: number | null; out: Record<string, unknown> | null; text: string }> {
  const p = startCli(['selftest', '--backend', 'cpu', ...args]);
  const { code } = await p.exit;
  const line = p.lines.find((l) => l.startsWith('{"loss"'));
  return { code, out: line ? (JSON.parse(line) as Record<string, unknown>) : null, text: p.lines.join('\n') };
}

describe('shardface selftest: sharded classifier (real processes) = one process', () => {
  const cases: [number, number, string][] = [
    [1, 12, 'arcface'],
    [2, 12, 'cosface'],
    [2, 37, 'arcface'],
    [3, 12, 'arcface'],
    [3, 37, 'cosface'],
    [4, 12, 'cosface'],
    [4, 37, 'arcface'],
  ];
  for (const [workers, classes, margin] of cases) {
    it(`n=${workers}, C=${classes} (${classes % workers === 0 ? 'divisible' : 'not divisible'}), ${margin}`, async () => {
      const r = await selftest(['--workers', String(workers), '--classes', String(classes), '--margin', margin, '--seed', String(workers * 7 + classes)]);
      expect(r.code, r.text).toBe(0);
      expect(r.out!.ok).toBe(true);
      expect(r.out!.workers).toBe(workers);
      expect(Math.abs((r.out!.loss as number) - (r.out!.loss_single as number))).toBeLessThan(1e-5 * Math.abs(r.out!.loss_single as number));
    });
  }

  it('exact margin gradient and Partial FC sampling also match', async () => {
    const r = await selftest(['--workers', '3', '--classes', '300', '--sample-rate', '0.2', '--margin-grad', 'exact']);
    expect(r.code, r.text).toBe(0);
    expect(r.out!.ok).toBe(true);
  });

  it('reproduces docs/methods.md#partial-fc-test-vectors, vector A from a case file (--dump)', async () => {
    const file = join(dir, 'spec-2.8a.json');
    writeFileSync(
      file,
      JSON.stringify({
        embeddings: [
          [1.0, 2.0, 0.5],
          [-0.5, 0.3, 1.2],
          [0.2, -1.0, 0.4],
          [0.9, 0.1, -0.3],
        ],
        labels: [1, 4, 5, 0],
        weight: [
          [0.8, 0.6, 0.2],
          [0.9, 2.1, 0.3],
          [0.2, -0.3, 0.5],
          [0.05, 0.2, 0.1],
          [-0.1, 0.8, 1.0],
          [0.3, -0.9, 0.2],
        ],
        margin: { type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 },
      }),
    );
    const r = await selftest(['--workers', '2', '--case', file, '--dump']);
    expect(r.code, r.text).toBe(0);
    expect(r.out!.loss as number).toBeCloseTo(4.35402806167, 4);
    const dX = [
      [-0.946823, -0.064612, 2.152095],
      [0.75445, -0.634694, 0.473028],
      [0.640269, 3.720135, 8.980203],
      [-1.58644, 5.961708, -2.772083],
    ];
    const dW = [
      [-5.812512, 5.34455, 7.2164],
      [5.058118, -1.713945, -3.176739],
      [-3.452982, -11.052287, -5.250179],
      [8.646099, -0.245758, -3.831534],
      [1.214911, 1.252653, -0.880631],
      [1.822605, 0.058794, -2.469336],
    ];
    const ge = r.out!.grad_embeddings as number[][];
    const gw = r.out!.grad_weight as number[][];
    dX.forEach((row, i) => row.forEach((v, d) => expect(ge[i]![d]!).toBeCloseTo(v, 3)));
    dW.forEach((row, i) => row.forEach((v, d) => expect(gw[i]![d]!).toBeCloseTo(v, 3)));
  });

  it("takes arcface_torch's names: margin_list (and the type it implies) and scale give the same docs/methods.md#partial-fc-test-vectors, vector A result", async () => {
    const file = join(dir, 'spec-2.8a-official.json');
    writeFileSync(
      file,
      JSON.stringify({
        embeddings: [
          [1.0, 2.0, 0.5],
          [-0.5, 0.3, 1.2],
          [0.2, -1.0, 0.4],
          [0.9, 0.1, -0.3],
        ],
        labels: [1, 4, 5, 0],
        weight: [
          [0.8, 0.6, 0.2],
          [0.9, 2.1, 0.3],
          [0.2, -0.3, 0.5],
          [0.05, 0.2, 0.1],
          [-0.1, 0.8, 1.0],
          [0.3, -0.9, 0.2],
        ],
        margin: { margin_list: [1.0, 0.5, 0.0], scale: 64 },
      }),
    );
    const r = await selftest(['--workers', '2', '--case', file]);
    expect(r.code, r.text).toBe(0);
    expect(r.out).toMatchObject({ ok: true, loss_type: 'arcface' });
    expect(r.out!.loss as number).toBeCloseTo(4.35402806167, 4);
  });

  const bad: [string, unknown, RegExp][] = [
    [
      'conflicting names for s',
      {
        embeddings: [
          [1, 2],
          [3, 4],
        ],
        labels: [0, 1],
        weight: [
          [1, 0],
          [0, 1],
        ],
        margin: { type: 'arcface', s: 64, scale: 30 },
      },
      /margin\.scale and margin\.s both set s/,
    ],
    [
      'ragged rows',
      {
        embeddings: [[1, 2], [3]],
        labels: [0, 1],
        weight: [
          [1, 0],
          [0, 1],
        ],
        margin: { type: 'arcface' },
      },
      /embeddings\[1\]/,
    ],
    [
      'a label out of range',
      {
        embeddings: [
          [1, 2],
          [3, 4],
        ],
        labels: [0, 7],
        weight: [
          [1, 0],
          [0, 1],
        ],
        margin: { type: 'arcface' },
      },
      /labels\[1\]/,
    ],
    [
      'N not divisible by n',
      {
        embeddings: [
          [1, 2],
          [3, 4],
          [5, 6],
        ],
        labels: [0, 1, 0],
        weight: [
          [1, 0],
          [0, 1],
        ],
        margin: { type: 'arcface' },
      },
      /divisible|embeddings/,
    ],
    [
      'an unknown margin type',
      {
        embeddings: [
          [1, 2],
          [3, 4],
        ],
        labels: [0, 1],
        weight: [
          [1, 0],
          [0, 1],
        ],
        margin: { type: 'sphereface' },
      },
      /margin\.type/,
    ],
  ];
  for (const [what, content, msg] of bad) {
    it(`a case file with ${what} gets a clear error naming the field`, async () => {
      const file = join(dir, `${what.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(content));
      const r = await selftest(['--workers', '2', '--case', file]);
      expect(r.code).toBe(2);
      expect(r.text).toMatch(msg);
    });
  }
});
