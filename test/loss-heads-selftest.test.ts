import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli } from './helpers/processes.js';
import { magfaceLossF64 } from '../src/ops/magface.js';

const dir = mkdtempSync(join(tmpdir(), 'shardface-heads-selftest-'));

async function selftest(args: string[]): Promise<{ code: number | null; out: Record<string, unknown> | null; text: string }> {
  const p = startCli(['selftest', '--backend', 'cpu', ...args]);
  const { code } = await p.exit;
  const line = p.lines.find((l) => l.startsWith('{"loss"'));
  return { code, out: line ? (JSON.parse(line) as Record<string, unknown>) : null, text: p.lines.join('\n') };
}

function caseFile(name: string, content: unknown): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(content));
  return file;
}

// the cosines of docs/methods.md#curricularface-test-vectors as embeddings against W = [I₄ | 0]
const C = [
  [0.7, 0.5, 0.1, -0.2],
  [0.3, 0.65, 0.2, 0.05],
  [0.1, -0.3, 0.2, 0.4],
];
const E = C.map((row) => [...row, Math.sqrt(1 - row.reduce((a, c) => a + c * c, 0))]);
const W = [0, 1, 2, 3].map((j) => [0, 1, 2, 3, 4].map((d) => (d === j ? 1 : 0)));

describe('shardface selftest: MagFace and CurricularFace sharded (real processes) = one process (autograd)', () => {
  const cases: [number, number][] = [
    [1, 12],
    [2, 12],
    [3, 37],
    [4, 12],
    [4, 37],
  ];
  for (const head of ['magface', 'curricular'] as const)
    for (const [workers, classes] of cases) {
      it(`${head}: n=${workers}, C=${classes} (${classes % workers === 0 ? 'divisible' : 'not divisible'})`, async () => {
        const r = await selftest(['--workers', String(workers), '--classes', String(classes), '--margin', head, '--seed', String(workers * 11 + classes)]);
        expect(r.code, r.text).toBe(0);
        expect(r.out).toMatchObject({ ok: true, workers, loss_type: head });
        expect(Math.abs((r.out!.loss as number) - (r.out!.loss_single as number))).toBeLessThan(1e-5 * Math.abs(r.out!.loss_single as number));
        if (head === 'curricular') {
          expect(r.out!.t_identical_on_workers).toBe(true);
          expect(Math.abs((r.out!.t as number) - (r.out!.t_single as number))).toBeLessThan(1e-6);
        }
      });
    }

  it('curricular with Partial FC sampling and small chunks also matches', async () => {
    const r = await selftest(['--workers', '3', '--classes', '300', '--sample-rate', '0.2', '--chunk-rows', '2', '--margin', 'curricular']);
    expect(r.code, r.text).toBe(0);
    expect(r.out!.ok).toBe(true);
  });

  it('a curricular case file with the incoming t reproduces docs/methods.md#curricularface-test-vectors step 2 on 3 workers (4 classes: 1 + 1 + 2)', async () => {
    const file = caseFile('curricular-step2', { embeddings: E, labels: [0, 1, 2], weight: W, margin: { type: 'curricular', s: 64, m: 0.5, t: 0.0051666666666666675 } });
    const r = await selftest(['--workers', '3', '--case', file]);
    expect(r.code, r.text).toBe(0);
    expect(r.out!.ok).toBe(true);
    expect(r.out!.loss as number).toBeCloseTo(10.048240182625298, 4);
    expect(r.out!.t as number).toBeCloseTo(0.0102816667, 8);
  });

  it('a magface case file reproduces docs/methods.md#magface-test-vectors vector 3 on 2 workers', async () => {
    const file = caseFile('magface-v3', {
      embeddings: [
        [30, 40],
        [3, 4],
      ],
      labels: [0, 1],
      weight: [
        [1, 0],
        [0, 1],
        [-0.6, 0.8],
      ],
      margin: { type: 'magface', l_a: 10, u_a: 110, l_m: 0.45, u_m: 0.8, lambda_g: 35 },
    });
    const r = await selftest(['--workers', '2', '--case', file, '--dump']);
    expect(r.code, r.text).toBe(0);
    expect(r.out!.loss as number).toBeCloseTo(30.57551216, 3);
    const g = r.out!.grad_embeddings as number[][];
    [
      [-0.75469579, 0.69887938],
      [8.64272549, -6.48204412],
    ].forEach((row, i) => row.forEach((v, d) => expect(g[i]![d]!).toBeCloseTo(v, 3)));
  });

  it('a magface case in the official names with easy_margin false runs sharded on 2 workers and matches the float64 computation', async () => {
    const dir3 = (v: number[], norm: number) => v.map((a) => (a / Math.hypot(...v)) * norm);
    // target cosines 0.6, −0.3 (hard margin only), −0.95 (the c − m·sin m fallback), and a row outside the clamp
    const x = [dir3([0.6, 0.8, 0], 50), dir3([-0.3, 0.954, 0], 60), dir3([-0.95, 0, 0.312], 100), dir3([-0.9, 0.436, 0], 130)];
    const w = [
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 1],
      [-0.6, 0, 0.8],
    ];
    const margin = { type: 'magface', arc_scale: 16, l_a: 10, u_a: 110, l_margin: 0.45, u_margin: 0.8, lambda_g: 35, easy_margin: false };
    const file = caseFile('magface-hard-official', { embeddings: x, labels: [0, 0, 0, 0], weight: w, margin });
    const r = await selftest(['--workers', '2', '--case', file, '--dump']);
    expect(r.code, r.text).toBe(0);
    expect(r.out).toMatchObject({ ok: true, loss_type: 'magface' });
    const spec = { s: 16, la: 10, ua: 110, lm: 0.45, um: 0.8, lambdaG: 35 };
    const hard = magfaceLossF64(x, w, [0, 0, 0, 0], { ...spec, easyMargin: false });
    const easy = magfaceLossF64(x, w, [0, 0, 0, 0], spec);
    expect(Math.abs((r.out!.loss as number) - hard.loss)).toBeLessThan(1e-5 * hard.loss);
    expect(Math.abs(hard.loss - easy.loss)).toBeGreaterThan(0.1); // the case tells the two apart
    const g = r.out!.grad_embeddings as number[][];
    hard.gradX.forEach((row, i) => row.forEach((v, d) => expect(Math.abs(g[i]![d]! - v)).toBeLessThan(1e-5 + 1e-3 * Math.abs(v))));
  });

  const bad: [string, unknown, RegExp][] = [
    ['conflicting MagFace margin names', { type: 'magface', l_m: 0.45, l_margin: 0.5 }, /margin\.l_margin and margin\.l_m both set l_m/],
    ['a non-boolean easy_margin', { type: 'magface', easy_margin: 1 }, /margin\.easy_margin: expected true or false/],
    ['an infeasible lambda_g', { type: 'magface', lambda_g: 20 }, /margin\.lambda_g: 20 is below the MagFace feasibility bound/],
    ['u_a below l_a', { type: 'magface', u_a: 5 }, /margin\.u_a:/],
    ['an unknown magface field', { type: 'magface', m2: 0.5 }, /margin\.m2: unknown field for margin type magface/],
    ['a curricular t outside [-1, 1]', { type: 'curricular', t: 3 }, /margin\.t:/],
    ['a non-numeric curricular m', { type: 'curricular', m: 'half' }, /margin\.m: expected a finite number/],
  ];
  for (const [what, margin, msg] of bad) {
    it(`a case file with ${what} gets a clear error naming the field`, async () => {
      const file = caseFile(what.replace(/\W+/g, '-'), {
        embeddings: [
          [1, 2],
          [3, 4],
        ],
        labels: [0, 1],
        weight: [
          [1, 0],
          [0, 1],
        ],
        margin,
      });
      const r = await selftest(['--workers', '2', '--case', file]);
      expect(r.code).toBe(2);
      expect(r.text).toMatch(msg);
    });
  }
});
