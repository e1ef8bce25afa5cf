import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { HEAD_DW, HEAD_DX, vectorA, VECTOR_A_LOSS } from './helpers/vector-a.js';

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
    writeFileSync(file, JSON.stringify({ ...vectorA(), margin: { type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 } }));
    const r = await selftest(['--workers', '2', '--case', file, '--dump']);
    expect(r.code, r.text).toBe(0);
    expect(r.out!.loss as number).toBeCloseTo(VECTOR_A_LOSS, 4);
    const ge = r.out!.grad_embeddings as number[][];
    const gw = r.out!.grad_weight as number[][];
    HEAD_DX.forEach((row, i) => row.forEach((v, d) => expect(ge[i]![d]!).toBeCloseTo(v, 3)));
    HEAD_DW.forEach((row, i) => row.forEach((v, d) => expect(gw[i]![d]!).toBeCloseTo(v, 3)));
  });

  it("takes arcface_torch's names: margin_list (and the type it implies) and scale give the same docs/methods.md#partial-fc-test-vectors, vector A result", async () => {
    const file = join(dir, 'spec-2.8a-official.json');
    writeFileSync(file, JSON.stringify({ ...vectorA(), margin: { margin_list: [1.0, 0.5, 0.0], scale: 64 } }));
    const r = await selftest(['--workers', '2', '--case', file]);
    expect(r.code, r.text).toBe(0);
    expect(r.out).toMatchObject({ ok: true, loss_type: 'arcface' });
    expect(r.out!.loss as number).toBeCloseTo(VECTOR_A_LOSS, 4);
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
