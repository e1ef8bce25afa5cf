/**
 * One worker's occlusion step in process (world of 1, the communication
 * stubbed): what each stage sends through the classifier, what it trains and
 * what it freezes, and that it leaks no tensors.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { createBackbone } from '../src/models/index.js';
import { ShardedClassifier, type ShardComm } from '../src/worker/sharded-classifier.js';
import { reduceSoftmaxStats } from '../src/ops/softmax-reduce.js';
import { resolveMargin } from '../src/ops/margin.js';
import { OcclusionTrainer, type OcclusionSettings } from '../src/worker/occlusion-training.js';
import { initBackend } from '../src/ops/backend.js';

const B = 8;
const S = 40;
const D = 16;
const C = 6;

function snapshot(vars: Map<string, tf.Variable>): Map<string, Float32Array> {
  return new Map([...vars].map(([k, v]) => [k, (v.dataSync() as Float32Array).slice()]));
}
function changed(a: Map<string, Float32Array>, b: Map<string, Float32Array>): boolean {
  for (const [k, v] of a) if (v.some((x, i) => x !== b.get(k)![i])) return true;
  return false;
}

/** A 1-worker trainer on a fresh tiny backbone, the communication stubbed; `batches` records the rows of each softmax exchange. */
function setup(settings: Partial<OcclusionSettings>) {
  const backbone = createBackbone('tiny', { seed: 1, embeddingSize: D, inputSize: S });
  const classifier = new ShardedClassifier({ start: 0, count: C }, 0, {
    dim: D,
    margin: resolveMargin({ type: 'arcface', s: 16, m1: 1, m2: 0.2, m3: 0 }),
    marginGrad: 'straight-through',
    sampleRate: 1,
    chunkRows: 1 << 30,
    optimizer: 'sgd',
    seed: 1,
  });
  const batches: number[] = [];
  const comm: ShardComm = {
    allGatherFloat: async (a) => a,
    allGatherInt: async (a) => a,
    exchangeSoftmax: async (_step, batch, stats) => {
      batches.push(batch);
      const r = reduceSoftmaxStats([stats as Parameters<typeof reduceSoftmaxStats>[0][number]]);
      return { logSumExp: r.logSumExp, loss: r.loss };
    },
    reduceScatter: async (a) => a,
  };
  const ring = { allReduce: async () => {}, reduceScatter: async (a: Float32Array) => a };
  const base: OcclusionSettings = {
    startStep: 0,
    pretrainSteps: 2,
    segWeight: 0.1,
    adversaryWeight: 0.0025,
    gate: 0.1,
    width: 8,
    randomHalves: 3,
    seed: 1,
    imageSize: S,
    clipGradNorm: 5,
    bucketMb: 16,
    optimizer: { kind: 'sgd', momentum: 0.9, weightDecay: 5e-4 },
  };
  const params = backbone.trainableVariables();
  const trainer = new OcclusionTrainer({ ...base, ...settings }, backbone, params, 1, 0, ring);
  const x = tf.randomNormal([B, S, S, 3], 0, 1, 'float32', 4) as tf.Tensor4D;
  const labels = Int32Array.from({ length: B }, (_, i) => i % C);
  const dispose = () => {
    x.dispose();
    trainer.dispose();
    backbone.dispose();
  };
  return { backbone, classifier, comm, batches, params, trainer, x, labels, dispose };
}

describe('OcclusionTrainer.step (1 worker)', () => {
  beforeAll(async () => {
    await initBackend('auto'); // the native CPU kernels where built
  });

  it('stage 1 sends B × 14 candidate rows and trains only G; stage 2 sends [clean; masked] = 2B rows and trains F, R, S and G', async () => {
    const { backbone, classifier, comm, batches, params, trainer, x, labels, dispose } = setup({});
    expect(trainer.grid).toEqual([10, 10, 32]); // tiny's split: after stage2
    const gen = () => snapshot(trainer.generator.state());
    const seg = () => snapshot(trainer.segmentation.state());
    const bb = () => snapshot(backbone.state());
    try {
      // stage 1
      const before = { g: gen(), s: seg(), b: bb() };
      const r1 = await trainer.step(1, x, labels, classifier, comm);
      // nothing moves before the step is applied (a step the numerical guard skips is discarded instead)
      expect(changed(before.g, gen())).toBe(false);
      r1.apply(0.1);
      expect(trainer.stage(1)).toBe(1);
      expect(batches).toEqual([B * 14]);
      expect(r1.backboneGrads).toBeNull();
      expect(r1.metrics.occlusionStage).toBe(1);
      expect(changed(before.g, gen())).toBe(true);
      expect(changed(before.s, seg())).toBe(false);
      expect(changed(before.b, bb())).toBe(false); // weights and BatchNorm statistics frozen
      (await trainer.step(2, x, labels, classifier, comm)).apply(0.1);

      // stage 2
      const mid = { s: seg(), g: gen(), b: bb() };
      const r3 = await trainer.step(3, x, labels, classifier, comm);
      expect([changed(mid.s, seg()), changed(mid.g, gen()), changed(mid.b, bb())]).toEqual([false, false, false]);
      r3.apply(0.1);
      // the backbone's BatchNorm statistics moved in apply (its weights are the training loop's to step)
      expect(changed(mid.b, bb())).toBe(true);
      expect(trainer.stage(3)).toBe(2);
      expect(batches.at(-1)).toBe(2 * B);
      expect(r3.cls.gradEmbeddings.length).toBe(2 * B * D);
      expect(r3.backboneGrads).toHaveLength(params.length);
      expect(r3.backboneGrads!.map((g) => g.shape)).toEqual(params.map((p) => p.variable.shape));
      expect(r3.backboneGrads!.some((g) => tf.sum(tf.abs(g)).dataSync()[0]! > 0)).toBe(true);
      expect(changed(mid.s, seg())).toBe(true);
      expect(r3.metrics.lossMasked).toBeGreaterThan(0);
      expect((r3.metrics.lossClean! + r3.metrics.lossMasked!) / 2).toBeCloseTo(r3.cls.loss, 4);
      expect(r3.metrics.droppedCells).toBe(31); // 15 of 49 scaled to 100 cells
      expect(r3.metrics.adversaryShare).toBeGreaterThanOrEqual(0);
      expect(r3.metrics.adversaryShare).toBeLessThanOrEqual(1);
      expect(r3.metrics.adversaryShare).toBeLessThanOrEqual(r3.metrics.generatorMaskShare!); // G learns from its own masks only
      r3.backboneGrads!.forEach((g) => g.dispose());
      r3.cls.gradWeight.dispose();
      const memory = tf.memory().numTensors; // after the first joint step (tf.js caches a few constants once)
      // a discarded step: G, S and the BatchNorm statistics stay as they were
      const kept = { s: seg(), g: gen(), b: bb() };
      const r4 = await trainer.step(4, x, labels, classifier, comm);
      r4.discard();
      expect([changed(kept.s, seg()), changed(kept.g, gen()), changed(kept.b, bb())]).toEqual([false, false, false]);
      r4.backboneGrads!.forEach((g) => g.dispose());
      r4.cls.gradWeight.dispose();
      expect(tf.memory().numTensors).toBe(memory);
      const r5 = await trainer.step(5, x, labels, classifier, comm);
      r5.apply(0.1);
      r5.backboneGrads!.forEach((g) => g.dispose());
      r5.cls.gradWeight.dispose();
      expect(tf.memory().numTensors).toBe(memory);
    } finally {
      dispose();
    }
  });

  it('stage 2: G does not move when no sample passes the gate (no momentum drift, no decay)', async () => {
    // gate 1: p_before − p_after > 1 never holds; structuredShare 0: every mask is G's
    const { classifier, comm, trainer, x, labels, dispose } = setup({ pretrainSteps: 0, gate: 1, structuredShare: 0 });
    try {
      const before = snapshot(trainer.generator.state());
      const r = await trainer.step(1, x, labels, classifier, comm);
      r.apply(0.1);
      expect(r.metrics.generatorMaskShare).toBe(1);
      expect(r.metrics.adversaryShare).toBe(0);
      expect(r.metrics.generatorGradNorm).toBe(0);
      expect(changed(before, snapshot(trainer.generator.state()))).toBe(false);
      r.backboneGrads!.forEach((g) => g.dispose());
      r.cls.gradWeight.dispose();
    } finally {
      dispose();
    }
  });

  it('stage 2 with drawn occluders: their cells are dropped in the masked pass, S reads them unmasked, and G does not learn from those samples', async () => {
    // gate 0: every G mask that lowers p_y at all would teach G; structuredShare 0: every mask is G's
    const { backbone, classifier, comm, trainer, x, labels, dispose } = setup({ pretrainSteps: 0, gate: 0, structuredShare: 0 });
    // what R (clean and masked passes) and S are given, per call
    const headInputs: number[][] = [];
    const segInputs: number[][] = [];
    const cellAbs = (f: tf.Tensor) => Array.from(tf.tidy(() => tf.sum(tf.abs(f), 3)).dataSync());
    const head = backbone.head.bind(backbone);
    backbone.head = (f, training, opts) => {
      headInputs.push(cellAbs(f));
      return head(f, training, opts);
    };
    const segApply = trainer.segmentation.apply.bind(trainer.segmentation);
    trainer.segmentation.apply = (f) => {
      segInputs.push(cellAbs(f));
      return segApply(f);
    };
    const whole = { top: 0, bottom: 1, left: 0, right: 1 };
    try {
      const before = snapshot(trainer.generator.state());
      const r = await trainer.step(
        1,
        x,
        labels,
        classifier,
        comm,
        Array.from({ length: B }, () => whole),
      );
      r.apply(0.1);
      expect(r.metrics.occludedShare).toBe(1);
      expect(r.metrics.generatorMaskShare).toBe(0); // the masks are G's, but occluded samples never teach G
      expect(r.metrics.adversaryShare).toBe(0);
      expect(changed(before, snapshot(trainer.generator.state()))).toBe(false);
      // an occluder over the whole image: every cell of the masked pass is zero; the clean pass has no zero
      // cell (one forward: R runs once on each)
      const allZero = headInputs.filter((cells) => Math.max(...cells) === 0);
      const noZero = headInputs.filter((cells) => cells.every((v) => v > 0));
      expect([allZero.length, noZero.length, headInputs.length]).toEqual([1, 1, 2]);
      // S reads f ⊙ (1 − M) without the occluder's cells: G's 31 of 100 dropped, the rest still there
      const zeroCells = segInputs[0]!.filter((v) => v === 0).length;
      expect(zeroCells).toBe(B * 31);
      r.backboneGrads!.forEach((g) => g.dispose());
      r.cls.gradWeight.dispose();
    } finally {
      dispose();
    }
  });
});
