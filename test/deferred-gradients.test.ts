/**
 * The one-forward training step against the two-forward step it replaced.
 *
 *  - DeferredTape (src/ops/deferred-gradients.ts) relies on tfjs-core's engine
 *    internals: the version is pinned, and its gradients equal a one-call
 *    `engine.gradients` bit for bit while ops, tidies and other gradient
 *    calls run in the gap between forward and backward.
 *  - embeddingStep (src/worker/methods/embedding-step.ts) against the old
 *    path, kept here as it was (a tape-free forward for the embeddings, then
 *    the forward again under `engine.gradients`): for every backbone kind and
 *    fc's gap (the sharded classifier), and on tiny the gap of DCQ (key
 *    encoder and queue) with distillation's teacher, the embeddings, the gradients and
 *    the BatchNorm statistics after the step are bit-identical; before
 *    `apply` (and after `discard`) no statistic has moved; nothing leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { initBackend } from '../src/ops/backend.js';
import { DeferredTape, TAPE_ENGINE_VERSION } from '../src/ops/deferred-gradients.js';
import { createBackbone, type Backbone, type BackboneName } from '../src/models/index.js';
import { resolveMargin } from '../src/ops/margin.js';
import { reduceSoftmaxStats } from '../src/ops/softmax-reduce.js';
import { distillLoss } from '../src/ops/distill.js';
import { ShardedClassifier, type ShardComm } from '../src/worker/sharded-classifier.js';
import { ShardedClassQueue } from '../src/worker/sharded-class-queue.js';
import { KeyEncoder } from '../src/worker/key-encoder.js';
import { embeddingStep, type EmbeddingLoss } from '../src/worker/methods/embedding-step.js';
import type { EmbeddingGradHook, MethodStepInput } from '../src/worker/methods/method.js';

beforeAll(async () => {
  // the native CPU kernels where built (the training path), on one thread: with more, some of their backward
  // kernels sum in a thread-dependent order, and the old path would not even equal itself
  await initBackend('auto', { threads: 1 });
});

const bits = (a: ArrayLike<number>) => Buffer.from(Float32Array.from(a).buffer);
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => bits(a).equals(bits(b));

describe('DeferredTape', () => {
  it('is written against the installed tfjs-core engine', () => {
    expect(tf.version_core).toBe(TAPE_ENGINE_VERSION);
    expect(tf.engine().state.gradientDepth).toBe(0);
  });

  it('gives the gradients of a one-call engine.gradients bit for bit, with ops, a tidy and another gradient call in the gap', () => {
    const w = tf.variable(tf.randomNormal([6, 5], 0, 1, 'float32', 1));
    const v = tf.variable(tf.randomNormal([5], 0, 1, 'float32', 2));
    const x = tf.randomNormal([4, 6], 0, 1, 'float32', 3);
    const dy = tf.randomNormal([4, 5], 0, 1, 'float32', 4);
    const other = tf.variable(tf.randomNormal([3], 0, 1, 'float32', 5));
    const f = () => tf.tanh(tf.add(tf.matMul(x, w), v));
    const otherLoss = () => tf.sum(tf.square(tf.sin(other))) as tf.Scalar;
    const ref = tf.engine().gradients(f, [w, v], dy);
    const refOther = tf.engine().gradients(otherLoss, [other]);
    const start = tf.memory().numTensors;

    const tape = new DeferredTape();
    const y = tape.record(f);
    // the gap: untaped ops, a tidy, and a complete gradient computation of its own
    const gapValue = tf.tidy(() => tf.sum(tf.mul(y, 3)).dataSync()[0]);
    const inner = tf.engine().gradients(otherLoss, [other]);
    expect(same(inner.grads[0]!.dataSync(), refOther.grads[0]!.dataSync())).toBe(true);
    inner.value.dispose();
    inner.grads.forEach((g) => g.dispose());
    expect(Number.isFinite(gapValue)).toBe(true);
    const grads = tape.gradients(y, [w, v], dy);
    expect(same(grads[0]!.dataSync(), ref.grads[0]!.dataSync())).toBe(true);
    expect(same(grads[1]!.dataSync(), ref.grads[1]!.dataSync())).toBe(true);
    y.dispose();
    grads.forEach((g) => g.dispose());
    expect(tf.memory().numTensors).toBe(start); // the saved tensors went with the backward
    expect(tf.engine().state.gradientDepth).toBe(0);

    // a tape never backpropagated frees its saved tensors on dispose
    const t2 = new DeferredTape();
    const y2 = t2.record(f);
    y2.dispose();
    expect(tf.memory().numTensors).toBeGreaterThan(start);
    t2.dispose();
    expect(tf.memory().numTensors).toBe(start);

    // misuse: record inside another gradient computation, backpropagate twice
    const t3 = new DeferredTape();
    expect(() => tf.engine().gradients(() => t3.record(f), [w])).toThrow(/inside another gradient computation/);
    expect(tf.engine().state.gradientDepth).toBe(0);
    const t4 = new DeferredTape();
    const y4 = t4.record(f);
    t4.gradients(y4, [w, v], dy).forEach((g) => g.dispose());
    expect(() => t4.gradients(y4, [w, v], dy)).toThrow(/already backpropagated/);
    y4.dispose();
    [w, v, other, x, dy, ref.value, refOther.value, ...ref.grads, ...refOther.grads].forEach((t) => t.dispose());
  });

  it('records in several parts, later ones on earlier outputs, and throws naming a variable with no path', () => {
    const w = tf.variable(tf.randomNormal([3, 3], 0, 1, 'float32', 6));
    const unused = tf.variable(tf.zeros([2]));
    const x = tf.randomNormal([2, 3], 0, 1, 'float32', 7);
    const ref = tf.engine().gradients(() => tf.sum(tf.relu(tf.matMul(x, w))) as tf.Scalar, [w]);
    const tape = new DeferredTape();
    const h = tape.record(() => tf.matMul(x, w));
    const loss = tape.record(() => tf.sum(tf.relu(h)) as tf.Scalar);
    const [g] = tape.gradients(loss, [w]);
    expect(same(g!.dataSync(), ref.grads[0]!.dataSync())).toBe(true);
    const t2 = new DeferredTape();
    const y2 = t2.record(() => tf.sum(tf.matMul(x, w)) as tf.Scalar);
    expect(() => t2.gradients(y2, [w, unused])).toThrow(/no recorded path from variable 1/);
    [w, unused, x, h, loss, g!, y2, ref.value, ...ref.grads].forEach((t) => t.dispose());
  });
});

// --- embeddingStep against the old two-forward step

/** The step as it was before the deferred tape (kept verbatim in substance): forward without tape, loss and hooks, forward again under the tape. */
async function twoForwardStep(backbone: Backbone, x: tf.Tensor4D, loss: (e: Float32Array) => Promise<EmbeddingLoss>, hooks: readonly EmbeddingGradHook[]) {
  const emb = tf.tidy(() => backbone.apply(x, true, { updateStats: false }));
  const embData = (await emb.data()) as Float32Array;
  const embCopy = embData.slice();
  emb.dispose();
  const l = await loss(embData);
  for (const hook of hooks) await hook(x, embData, l.gradEmbeddings);
  const dy = tf.tensor2d(l.gradEmbeddings, [embData.length / backbone.embeddingSize, backbone.embeddingSize]);
  const vars = backbone.trainableVariables().map((p) => p.variable);
  const grads = tf.engine().gradients(() => backbone.apply(x, true), vars, dy).grads;
  dy.dispose();
  l.apply(0.1);
  return { emb: embCopy, loss: l.loss, grads };
}

const CASES: [BackboneName, number, number][] = [
  ['tiny', 16, 4],
  ['mobilefacenet', 112, 2],
  ['iresnet18', 32, 2],
  ['vargfacenet', 112, 2],
];
const D = 16;
const CLASSES = 6;

const comm: ShardComm = {
  allGatherFloat: async (a) => a,
  allGatherInt: async (a) => a,
  exchangeSoftmax: async (_step, _batch, stats) => {
    const r = reduceSoftmaxStats([stats as Parameters<typeof reduceSoftmaxStats>[0][number]]);
    return { logSumExp: r.logSumExp, loss: r.loss };
  },
  reduceScatter: async (a) => a,
};

/** One replica of everything a step touches: the backbone and the gap's own state (classifier, key encoder and queue, teacher). */
function replica(name: BackboneName, size: number, method: 'fc' | 'dcq+distillation') {
  const opts = { seed: 3, embeddingSize: D, inputSize: size };
  const backbone = createBackbone(name, opts);
  const others: Backbone[] = [];
  let loss: (e: Float32Array, labels: Int32Array) => Promise<EmbeddingLoss>;
  const hooks: EmbeddingGradHook[] = [];
  if (method === 'fc') {
    const classifier = new ShardedClassifier({ start: 0, count: CLASSES }, 0, {
      dim: D,
      margin: resolveMargin({ type: 'arcface', s: 16, m1: 1, m2: 0.3, m3: 0 }),
      marginGrad: 'straight-through',
      sampleRate: 1,
      chunkRows: 1 << 30,
      optimizer: 'sgd',
      seed: 3,
    });
    loss = async (e, labels) => {
      const r = await classifier.forwardBackward(1, e, labels, comm);
      return { loss: r.loss, gradEmbeddings: r.gradEmbeddings, metrics: {}, apply: () => r.gradWeight.dispose(), discard: () => r.gradWeight.dispose() };
    };
  } else {
    // DCQ's gap: the key encoder's EMA and training-mode forward (its own BatchNorm statistics), the queue softmax
    const keyNet = createBackbone(name, opts);
    others.push(keyNet);
    const keyEncoder = new KeyEncoder(keyNet, backbone);
    const queue = new ShardedClassQueue(1, 0, { dim: D, queueSize: 8, head: { s: 16, m: 0.2 }, chunkRows: 256, seed: 3 });
    loss = async (e, labels) => {
      const ref = tf.randomNormal([labels.length, size, size, 3], 0, 1, 'float32', 11) as tf.Tensor4D;
      const key = await keyEncoder.step(ref, 0.9);
      ref.dispose();
      const q = await queue.forwardBackward(1, e, key.keys, labels, comm);
      return {
        loss: q.loss,
        gradEmbeddings: q.gradEmbeddings,
        metrics: {},
        apply: () => {
          key.commit();
          q.enqueue();
        },
        discard: () => key.discard(),
      };
    };
    // distillation's teacher: an inference-mode forward of another network in the gap
    const teacher = createBackbone(name, { ...opts, seed: 9 });
    others.push(teacher);
    hooks.push(async (x, emb, grad) => {
      const t = tf.tidy(() => teacher.apply(x, false));
      const d = distillLoss('angular', (await t.data()) as Float32Array, emb, D);
      t.dispose();
      for (let i = 0; i < grad.length; i++) grad[i] += d.grad[i]!;
      return { distillLoss: d.loss };
    });
  }
  return { backbone, loss, hooks, dispose: () => [backbone, ...others].forEach((b) => b.dispose()) };
}

const stateOf = (b: Backbone) => new Map([...b.state()].map(([k, v]) => [k, (v.dataSync() as Float32Array).slice()]));

describe('embeddingStep: one forward, the two-forward step bit for bit', () => {
  // every backbone with fc's gap; the gap of DCQ and distillation (more networks run in it) on tiny
  const cases = CASES.flatMap(([name, size, batch]) => (name === 'tiny' ? (['fc', 'dcq+distillation'] as const) : (['fc'] as const)).map((m) => [name, size, batch, m] as const));
  it.each(cases)(
    '%s at %i px, batch %i, %s',
    async (name, size, batch, method) => {
      const x = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
      const labels = Int32Array.from({ length: batch }, (_, i) => i % CLASSES);
      const old = replica(name, size, method);
      const now = replica(name, size, method);
      try {
        const ref = await twoForwardStep(old.backbone, x, (e) => old.loss(e, labels), old.hooks);
        const before = stateOf(now.backbone);
        const memory = tf.memory().numTensors - ref.grads.length;
        let seen: Float32Array | undefined;
        const input = { step: 1, epoch: 0, batchIndex: 0, x, batch: { labels } as MethodStepInput['batch'], lr: 0.1, hooks: now.hooks };
        const r = await embeddingStep(now.backbone, now.backbone.trainableVariables(), input, (e) => {
          seen = e.slice();
          return now.loss(e, labels);
        });
        expect(same(seen!, ref.emb)).toBe(true);
        expect(r.loss).toBe(ref.loss);
        expect(r.backboneGrads).toHaveLength(ref.grads.length);
        r.backboneGrads!.forEach((g, i) => expect(same(g.dataSync(), ref.grads[i]!.dataSync()), `gradient ${i}`).toBe(true));
        // nothing of the backbone moved before apply; after it, its statistics are the old path's
        for (const [k, v] of stateOf(now.backbone)) expect(same(v, before.get(k)!), `${k} before apply`).toBe(true);
        r.apply(0.1);
        const after = stateOf(now.backbone);
        const expected = stateOf(old.backbone);
        for (const [k, v] of after) expect(same(v, expected.get(k)!), `${k} after apply`).toBe(true);
        // the check has teeth: apply did move the running statistics (every backbone here has BatchNorm)
        expect([...after].filter(([k, v]) => k.endsWith('.runningMean') && !same(v, before.get(k)!)).length).toBeGreaterThan(0);
        r.backboneGrads!.forEach((g) => g.dispose());
        ref.grads.forEach((g) => g.dispose());
        expect(tf.memory().numTensors).toBe(memory);

        // a discarded step: the statistics stay as they were
        const r2 = await embeddingStep(now.backbone, now.backbone.trainableVariables(), { ...input, step: 2 }, (e) => now.loss(e, labels));
        r2.discard();
        r2.backboneGrads!.forEach((g) => g.dispose());
        for (const [k, v] of stateOf(now.backbone)) expect(same(v, after.get(k)!), `${k} after discard`).toBe(true);
      } finally {
        disposeAll(x, old, now);
      }
    },
    120_000,
  );
});

function disposeAll(x: tf.Tensor, ...rs: { dispose(): void }[]) {
  x.dispose();
  rs.forEach((r) => r.dispose());
}
