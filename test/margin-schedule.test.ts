/**
 * The margin warm-up: the schedule against hand-written numbers, and the
 * sharded classifier driven by it against the unsharded autograd reference at
 * that step's margin (whose gradient is in turn checked by finite differences),
 * so a per-step margin keeps the gradient exact.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { marginAtStep, marginSchedule, marginWarmupProgress, marginWarmupSteps } from '../src/ops/margin-schedule.js';
import { resolveMargin, type MarginSpec } from '../src/ops/margin.js';
import { referenceLossAndGrads } from '../src/ops/reference-classifier.js';
import { reduceSoftmaxStats } from '../src/ops/softmax-reduce.js';
import { ShardedClassifier, type ShardComm } from '../src/worker/sharded-classifier.js';
import { Rng } from '../src/common/random.js';
import { ConfigError, resolveConfig } from '../src/config/index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const ARC: MarginSpec = { type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 };
const COMBINED: MarginSpec = {
  type: 'combined',
  s: 30,
  m1: 1.4,
  m2: 0.3,
  m3: 0.2,
};

describe('margin warm-up schedule', () => {
  it('ramps linearly from no margin at step 1 to the full margin at step K + 1 (K = 4)', () => {
    // progress (step − 1) / 4: 0, 0.25, 0.5, 0.75, 1, 1
    const m2 = [1, 2, 3, 4, 5, 6].map((step) => marginAtStep(ARC, step, 4).m2);
    expect(m2).toEqual([0, 0.125, 0.25, 0.375, 0.5, 0.5]);
    for (const step of [1, 3, 9]) {
      const m = marginAtStep(ARC, step, 4);
      expect([m.type, m.s, m.m1, m.m3]).toEqual(['arcface', 64, 1, 0]); // s and the unused margins never move
    }
  });

  it('moves every margin of a combined head, m1 from 1', () => {
    const half = marginAtStep(COMBINED, 6, 10); // progress 0.5
    expect(half.m1).toBeCloseTo(1.2, 12);
    expect(half.m2).toBeCloseTo(0.15, 12);
    expect(half.m3).toBeCloseTo(0.1, 12);
    expect(half.s).toBe(30);
    expect(marginAtStep(COMBINED, 1, 10)).toEqual({
      type: 'combined',
      s: 30,
      m1: 1,
      m2: 0,
      m3: 0,
    });
    expect(marginAtStep(COMBINED, 11, 10)).toEqual(COMBINED);
  });

  it('no warm-up (K = 0) is the fixed margin at every step, and no schedule at all', () => {
    expect(marginWarmupProgress(1, 0)).toBe(1);
    expect(marginAtStep(ARC, 1, 0)).toBe(ARC);
    expect(marginSchedule(ARC, 0)).toBeUndefined();
    const f = marginSchedule(ARC, 8)!;
    expect(f(5)).toEqual(marginAtStep(ARC, 5, 8));
  });

  it('length from the config: steps win, else epochs × steps per epoch, rounded', () => {
    expect(
      marginWarmupSteps({
        marginWarmupSteps: 7,
        marginWarmupEpochs: 0,
        stepsPerEpoch: 39,
      }),
    ).toBe(7);
    expect(
      marginWarmupSteps({
        marginWarmupSteps: 0,
        marginWarmupEpochs: 2.5,
        stepsPerEpoch: 39,
      }),
    ).toBe(98);
    expect(
      marginWarmupSteps({
        marginWarmupSteps: 0,
        marginWarmupEpochs: 0,
        stepsPerEpoch: 39,
      }),
    ).toBe(0);
  });

  it('rejects a bad warm-up length or step with a clear error', () => {
    expect(() => marginWarmupProgress(1, -1)).toThrow(/warmupSteps must be a non-negative integer, got -1/);
    expect(() => marginWarmupProgress(1, 2.5)).toThrow(/warmupSteps must be a non-negative integer/);
    expect(() => marginWarmupProgress(Number.NaN, 3)).toThrow(/step must be a finite number/);
    expect(() => marginSchedule(ARC, -3)).toThrow(/non-negative integer/);
  });
});

/** One process, the whole classifier: the exchange is the reduction over the single shard. */
const comm: ShardComm = {
  allGatherFloat: async (a) => a,
  allGatherInt: async (a) => a,
  exchangeSoftmax: async (_step, _batch, stats) => {
    const r = reduceSoftmaxStats([stats as Parameters<typeof reduceSoftmaxStats>[0][number]]);
    return { logSumExp: r.logSumExp, loss: r.loss };
  },
  reduceScatter: async (a) => a,
};

function randomMatrix(rows: number, cols: number, seed: number): number[][] {
  const r = new Rng(seed);
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => r.normal()));
}

describe('the sharded classifier under a margin warm-up', () => {
  const N = 6;
  const D = 5;
  const C = 7;
  const K = 4;
  const emb = randomMatrix(N, D, 11);
  const weight = randomMatrix(C, D, 12);
  const labels = Int32Array.from([0, 3, 6, 3, 1, 5]);
  const target = resolveMargin({ type: 'arcface', s: 8, m2: 0.5 });

  for (const step of [1, 3, 5]) {
    it(`step ${step} of a ${K}-step warm-up equals the reference at m2 = ${[0, 0.25, 0.5][(step - 1) / 2]} (exact gradient)`, async () => {
      const classifier = new ShardedClassifier(
        { start: 0, count: C },
        0,
        {
          dim: D,
          margin: target,
          marginAt: marginSchedule(target, K),
          marginGrad: 'exact',
          sampleRate: 1,
          chunkRows: 1 << 30,
          optimizer: 'sgd',
          seed: 1,
        },
        Float32Array.from(weight.flat()),
      );
      const r = await classifier.forwardBackward(step, Float32Array.from(emb.flat()), labels, comm);
      // the margin this step must use, written out by hand
      const expected: MarginSpec = {
        type: 'arcface',
        s: 8,
        m1: 1,
        m2: [0, 0.25, 0.5][(step - 1) / 2]!,
        m3: 0,
      };
      const ref = referenceLossAndGrads(emb, weight, labels, expected, 'exact');
      try {
        expect(r.loss).toBeCloseTo(ref.loss, 4);
        const ge = ref.gradEmb.dataSync();
        r.gradEmbeddings.forEach((g, i) => expect(g).toBeCloseTo(ge[i]!, 4));
        const gw = ref.gradWeight.dataSync();
        (r.gradWeight.dataSync() as Float32Array).forEach((g, i) => expect(g).toBeCloseTo(gw[i]!, 4));
        // and the warm-up really changes the loss: step 1 (no margin) is below the full margin's
        if (step === 1) expect(r.loss).toBeLessThan(referenceLossAndGrads(emb, weight, labels, target, 'exact').loss - 0.1);
      } finally {
        tf.dispose([ref.gradEmb, ref.gradWeight, r.gradWeight]);
      }
    });
  }

  it('the reference at a mid-warm-up margin matches central finite differences of its loss', () => {
    const mid = marginAtStep(target, 3, K);
    const ref = referenceLossAndGrads(emb, weight, labels, mid, 'exact');
    const ge = ref.gradEmb.arraySync();
    tf.dispose([ref.gradEmb, ref.gradWeight]);
    const h = 1e-2;
    for (const [i, j] of [
      [0, 0],
      [1, 3],
      [4, 2],
      [5, 4],
    ] as const) {
      const plus = emb.map((row) => row.slice());
      const minus = emb.map((row) => row.slice());
      plus[i]![j]! += h;
      minus[i]![j]! -= h;
      const fd = (lossAt(plus, mid) - lossAt(minus, mid)) / (2 * h);
      expect(ge[i]![j]!).toBeCloseTo(fd, 3);
    }
  });

  function lossAt(e: number[][], m: MarginSpec): number {
    const r = referenceLossAndGrads(e, weight, labels, m, 'exact');
    tf.dispose([r.gradEmb, r.gradWeight]);
    return r.loss;
  }
});

describe('margin warm-up config keys', () => {
  const errorOf = (overrides: Record<string, string | number | boolean>): ConfigError => {
    try {
      resolveConfig({ overrides });
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return e as ConfigError;
    }
    throw new Error('expected a ConfigError');
  };

  it('default to no warm-up, and accept either key', () => {
    const c = resolveConfig();
    expect([c.marginWarmupEpochs, c.marginWarmupSteps]).toEqual([0, 0]);
    expect(resolveConfig({ overrides: { marginWarmupEpochs: 1.5 } }).marginWarmupEpochs).toBe(1.5);
    expect(resolveConfig({ overrides: { 'margin-warmup-steps': 12 } }).marginWarmupSteps).toBe(12);
  });

  it('reject bad values naming the key', () => {
    let e = errorOf({ marginWarmupSteps: 10, marginWarmupEpochs: 1 });
    expect(e.key).toBe('marginWarmupSteps');
    expect(e.message).toMatch(/not both/);
    e = errorOf({
      data: 'synthetic:100',
      imagesPerIdentity: 10,
      batch: 50,
      epochs: 2,
      marginWarmupEpochs: 3,
    }); // 10 steps per epoch, 20 in all
    expect(e.key).toBe('marginWarmupEpochs');
    expect(e.message).toMatch(/margin warm-up of 30 steps is longer than the run \(20 steps\)/);
    e = errorOf({ marginWarmupSteps: -2 });
    expect(e.key).toBe('marginWarmupSteps');
    e = errorOf({ marginWarmupSteps: 1.5 });
    expect(e.key).toBe('marginWarmupSteps');
    e = errorOf({ marginWarmupSteps: 5, loss: 'curricular' });
    expect(e.message).toMatch(/loss "margin" only/);
    e = errorOf({
      marginWarmupEpochs: 1,
      classifier: 'dcq',
      batch: 64,
      'dcq.queueSize': 1024,
    });
    expect(e.key).toBe('marginWarmupEpochs');
    expect(e.message).toMatch(/classifier "fc" only/);
  });
});

describe('classifierInitStd', () => {
  it("scales the same seeded rows (std 0.1 = 10 × the 0.01 default) and defaults to arcface_torch's 0.01", async () => {
    const { initialShardWeights } = await import('../src/ops/classifier-init.js');
    const range = { start: 3, count: 5 };
    const base = initialShardWeights(range, 16, 7);
    const wide = initialShardWeights(range, 16, 7, 0.1);
    base.forEach((v, i) => expect(wide[i]!).toBeCloseTo(10 * v, 6));
    expect(resolveConfig().classifierInitStd).toBe(0.01);
    expect(() => resolveConfig({ overrides: { classifierInitStd: 0 } })).toThrow(/classifierInitStd/);
  });
});
