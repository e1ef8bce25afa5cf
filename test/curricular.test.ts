import { describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { CURRICULAR_DEFAULTS, curricularLossOnCosF64, curricularNextT, type CurricularSpec } from '../src/ops/curricular.js';
import { referenceHeadLossAndGrads } from '../src/ops/reference-heads.js';
import { CurricularStage } from '../src/coordinator/target-reduction.js';
import { Rng } from '../src/common/random.js';
import { runShardsInProcess } from './helpers/in-process-shards.js';

const spec = CURRICULAR_DEFAULTS;
const close = (a: number, b: number, rtol = 1e-6, atol = 1e-7) => expect(Math.abs(a - b), `${a} vs ${b}`).toBeLessThanOrEqual(atol + rtol * Math.abs(b));
// docs/methods.md#curricularface-test-vectors
const C = [
  [0.7, 0.5, 0.1, -0.2],
  [0.3, 0.65, 0.2, 0.05],
  [0.1, -0.3, 0.2, 0.4],
];
const Y = [0, 1, 2];
/** Embeddings and weight whose cosines are exactly C: W = [I₄ | 0], e_i = (c_i, sqrt(1 − ‖c_i‖²)). */
const E = C.map((row) => [...row, Math.sqrt(1 - row.reduce((a, c) => a + c * c, 0))]);
const W = [0, 1, 2, 3].map((j) => [0, 1, 2, 3, 4].map((d) => (d === j ? 1 : 0)));

describe('CurricularFace (docs/methods.md#curricularface)', () => {
  it('step 1 (t from 0): t, hard mask, modulated logits, loss and ∂L/∂c', () => {
    const r = curricularLossOnCosF64(C, Y, 0, spec);
    close(r.t, 0.0051666667, 1e-7);
    expect(r.hard).toEqual([
      [1, 1, 0, 0],
      [1, 1, 0, 0],
      [1, 0, 1, 1],
    ]);
    const logits = [
      [0.27192948, 0.25258333, 0.1, -0.2],
      [0.09155, 0.2060968, 0.2, 0.05],
      [0.01051667, -0.3, -0.29422266, 0.16206667],
    ];
    logits.forEach((row, i) => row.forEach((v, j) => close(r.logits[i]![j]!, v, 1e-6, 1e-8)));
    close(r.loss, 9.991516780800707, 1e-12);
    const grad = [
      [-6.46138509, 4.81954034, 2.75256e-4, 0],
      [5.03997e-3, -11.0956393, 8.60803662, 5.83011e-4],
      [2.68429e-4, 0, -20.809491, 17.1758355],
    ];
    grad.forEach((row, i) => row.forEach((v, j) => close(r.gradCos[i]![j]!, v, 1e-5, 1e-7)));
  });

  it('step 2 (t_prev from step 1): t = 0.0102816667, loss 10.048240182625298', () => {
    const t1 = curricularLossOnCosF64(C, Y, 0, spec).t;
    const r = curricularLossOnCosF64(C, Y, t1, spec);
    close(r.t, 0.0102816667, 1e-7);
    close(r.loss, 10.048240182625298, 1e-12);
    for (const [i, j, v] of [
      [0, 1, 0.25514083],
      [1, 0, 0.0930845],
      [2, 0, 0.01102817],
      [2, 3, 0.16411267],
    ] as const)
      close(r.logits[i]![j]!, v, 1e-6, 1e-8);
  });

  it('late training (t_prev = 0.6 → 0.5991666667): the hard negative gets about 7× the gradient', () => {
    const r = curricularLossOnCosF64(C, Y, 0.6, spec);
    close(r.t, 0.5991666667, 1e-9);
    [0.27192948, 0.54958333, 0.1, -0.2].forEach((v, j) => close(r.logits[0]![j]!, v, 1e-6, 1e-8));
    close(r.loss, 22.093566342079214, 1e-12);
    close(r.gradCos[0]![0]!, -28.7469559, 1e-6);
    close(r.gradCos[0]![1]!, 34.1155549, 1e-6);
    expect(r.gradCos[0]![1]! / curricularLossOnCosF64(C, Y, 0, spec).gradCos[0]![1]!).toBeGreaterThan(7);
  });

  it('finite differences in float64 (t and the hard mask held fixed, as they carry no gradient)', () => {
    const rng = Rng.derive(4, 'curricular-fd');
    const s: CurricularSpec = { s: 8, m: 0.5, emaWeight: 0 }; // emaWeight 0: t stays the given value under the perturbation
    const cos = Array.from({ length: 4 }, () => Array.from({ length: 6 }, () => rng.next() * 1.6 - 0.8));
    const y = [0, 2, 5, 3];
    const r = curricularLossOnCosF64(cos, y, 0.3, s);
    const h = 1e-7;
    for (let i = 0; i < cos.length; i++)
      for (let j = 0; j < 6; j++) {
        const orig = cos[i]![j]!;
        cos[i]![j] = orig + h;
        const up = curricularLossOnCosF64(cos, y, 0.3, s).loss;
        cos[i]![j] = orig - h;
        const down = curricularLossOnCosF64(cos, y, 0.3, s).loss;
        cos[i]![j] = orig;
        close(r.gradCos[i]![j]!, (up - down) / (2 * h), 1e-5, 1e-8);
      }
  });

  it('the tfjs autograd reference reproduces steps 1 and late training from embeddings', () => {
    for (const [tPrev, loss] of [
      [0, 9.991516780800707],
      [0.6, 22.093566342079214],
    ] as const) {
      const r = tf.tidy(() => referenceHeadLossAndGrads(tf.tensor2d(E), tf.tensor2d(W), Y, { kind: 'curricular', ...spec, t: tPrev }));
      close(r.loss, loss, 1e-4);
      close(r.t!, curricularNextT(tPrev, (0.7 + 0.65 + 0.2) / 3, 0.01), 1e-6);
      tf.dispose([r.gradEmb, r.gradWeight]);
    }
  });

  it('the sharded step (1 shard, and 3 shards over 4 classes) gives the reference loss and t (docs/methods.md#curricularface-test-vectors), the same t on every shard, and the reference gradients', async () => {
    for (const [tPrev, loss] of [
      [0, 9.991516780800707],
      [0.0051666666666666675, 10.048240182625298],
      [0.6, 22.093566342079214],
    ] as const) {
      const ref = tf.tidy(() => referenceHeadLossAndGrads(tf.tensor2d(E), tf.tensor2d(W), Y, { kind: 'curricular', ...spec, t: tPrev }));
      const gE = ref.gradEmb.arraySync();
      const gW = ref.gradWeight.arraySync();
      tf.dispose([ref.gradEmb, ref.gradWeight]);
      for (const workers of [1, 3]) {
        const r = await runShardsInProcess(workers, E, Y, W, { kind: 'curricular', spec }, { t: tPrev });
        close(r.loss, loss, 1e-5);
        const ts = r.lossStates.map((s) => s.curricularT!);
        expect(new Set(ts).size).toBe(1);
        close(ts[0]!, ref.t!, 1e-6);
        gE.forEach((row, i) => row.forEach((v, d) => close(r.gradEmb[i]![d]!, v, 1e-4, 1e-5)));
        gW.forEach((row, j) => row.forEach((v, d) => close(r.gradW[j]![d]!, v, 1e-4, 1e-5)));
      }
    }
  });

  it("the coordinator's stage indicator moves t by the EMA, before use, one step at a time", () => {
    const stage = new CurricularStage(0, 0.01);
    close(stage.advance((0.7 + 0.65 + 0.2) / 3), 0.0051666667, 1e-7);
    close(stage.advance((0.7 + 0.65 + 0.2) / 3), 0.0102816667, 1e-7);
    expect(() => new CurricularStage(0, 2)).toThrow(/emaWeight/);
  });
});
