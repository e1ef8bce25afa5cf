/**
 * The feature-map/head split of every backbone, the occlusion networks G and
 * S (src/models/occlusion-nets.ts) and the BCE they train with.
 */
import { describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { createBackbone, describeBackbone } from '../src/models/index.js';
import { isFeatureHeadBlock } from '../src/models/module.js';
import { ShapeRunner } from '../src/models/trace.js';
import { OcclusionNet, segmentationGated } from '../src/models/occlusion-nets.js';
import { bceWithLogits, maskFeatures } from '../src/worker/occlusion-training.js';

describe('backbone feature map / head split', () => {
  it('every backbone ends its features in the last spatial map: 7×7 at 112 (tiny: after stage2, 28×28)', () => {
    const expected = { mobilefacenet: [7, 7, 512], iresnet18: [7, 7, 512], vargfacenet: [7, 7, 320], tiny: [28, 28, 32] } as const;
    for (const [name, shape] of Object.entries(expected)) {
      const desc = describeBackbone(name as keyof typeof expected, { embeddingSize: 64, inputSize: 112 });
      expect(isFeatureHeadBlock(desc.root), name).toBe(true);
      if (!isFeatureHeadBlock(desc.root)) continue;
      const r = new ShapeRunner();
      const f = desc.root.features(r, [1, 112, 112, 3]);
      expect(f.slice(1), name).toEqual(shape);
      expect(desc.root.head(r, f), name).toEqual([1, 64]);
    }
  });

  it('tiny: featureShape follows the input size, and head(features(x)) = apply(x)', () => {
    const b = createBackbone('tiny', { seed: 3, embeddingSize: 16, inputSize: 40 });
    try {
      expect(b.featureShape()).toEqual([10, 10, 32]);
      expect(b.featureShape(32)).toEqual([8, 8, 32]);
      expect(b.featureShape(56)).toEqual([14, 14, 32]);
      const x = tf.randomNormal([2, 40, 40, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
      for (const training of [false, true]) {
        const whole = b.apply(x, training, { updateStats: false });
        const f = b.features(x, training, { updateStats: false });
        expect(f.shape).toEqual([2, 10, 10, 32]);
        const split = b.head(f, training, { updateStats: false });
        expect(Array.from(split.dataSync())).toEqual(Array.from(whole.dataSync()));
        tf.dispose([whole, f, split]);
      }
      x.dispose();
    } finally {
      b.dispose();
    }
  });
});

describe('mask generator G and segmentation head S', () => {
  it('map [B, H, W, C] to per-cell logits [B, H, W, 1]; π starts near ½', () => {
    const g = OcclusionNet.generator({ channels: 32, width: 16, seed: 1 });
    const s = OcclusionNet.segmentation({ channels: 32, width: 16, seed: 1 });
    try {
      for (const [h, w] of [
        [7, 7],
        [3, 3],
      ]) {
        const f = tf.randomNormal([2, h!, w!, 32], 0, 1, 'float32', 2) as tf.Tensor4D;
        const pi = tf.sigmoid(g.apply(f));
        expect(pi.shape).toEqual([2, h, w, 1]);
        for (const v of pi.dataSync()) expect(Math.abs(v - 0.5)).toBeLessThan(0.2);
        const seg = s.apply(f);
        expect(seg.shape).toEqual([2, h, w, 1]);
        tf.dispose([f, pi, seg]);
      }
      expect(() => g.apply(tf.zeros([1, 7, 7, 8]) as tf.Tensor4D)).toThrow(/feature map/);
      // names are prefixed so they sit next to the backbone's tensors in a checkpoint
      for (const k of [...g.state().keys(), ...s.state().keys()]) expect(k).toMatch(/^occlusion\.(generator|segmentation)\./);
      expect(g.trainableVariables().length).toBe(g.state().size); // no buffers: conv weights, biases, PReLU slopes
      // same seed, same tensors (the replicas start identical without a broadcast)
      const g2 = OcclusionNet.generator({ channels: 32, width: 16, seed: 1 });
      for (const [k, v] of g.state()) expect(Array.from(g2.state().get(k)!.dataSync())).toEqual(Array.from(v.dataSync()));
      g2.dispose();
    } finally {
      g.dispose();
      s.dispose();
    }
  });

  it('BCE from logits matches −t·log σ(z) − (1 − t)·log(1 − σ(z)), and f ⊙ (1 − M) zeroes the dropped cells', () => {
    const z = [-12, -2, 0, 0.5, 3, 12];
    const t = [0, 1, 1, 0, 1, 0];
    const got = bceWithLogits(tf.tensor1d(z), tf.tensor1d(t)).dataSync();
    z.forEach((zi, i) => {
      const sig = 1 / (1 + Math.exp(-zi));
      const want = -(t[i]! * Math.log(Math.max(sig, 1e-300)) + (1 - t[i]!) * Math.log(Math.max(1 - sig, 1e-300)));
      expect(got[i]).toBeCloseTo(want, 4);
    });
    const f = tf.ones([1, 2, 2, 3]);
    const m = tf.tensor4d([1, 0, 0, 1], [1, 2, 2, 1]);
    expect(Array.from(maskFeatures(f, m).dataSync())).toEqual([0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
  });
});

describe('segmentation-gated inference (docs/methods.md#adversarial-training: f ⊙ (1 − σ(S(f))) before the head)', () => {
  it('scales every cell of the feature map by 1 − σ of its S logit, and is the plain backbone when S finds nothing', () => {
    const b = createBackbone('tiny', { seed: 4, embeddingSize: 16, inputSize: 32 });
    const seg = OcclusionNet.segmentation({ channels: 32, width: 8, seed: 2 });
    const gated = segmentationGated(b, seg);
    const x = tf.randomNormal([3, 32, 32, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
    try {
      // independent: the gate applied in plain JavaScript, then the head
      const f = b.features(x, false);
      const logits = seg.apply(f).dataSync();
      const fv = f.dataSync() as Float32Array;
      const c = f.shape[3];
      const scaled = Float32Array.from(fv, (v, i) => v * (1 - 1 / (1 + Math.exp(-logits[Math.floor(i / c)]!))));
      const expected = b.head(tf.tensor4d(scaled, f.shape), false).dataSync();
      const got = gated.apply(x, false).dataSync();
      got.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
      const plain = b.apply(x, false).dataSync();
      expect(got.some((v, i) => Math.abs(v - plain[i]!) > 1e-3)).toBe(true);
      // S's output bias far below 0: σ ≈ 0 everywhere, the gate is the identity
      const bias = seg.state().get('occlusion.segmentation.out.bias')!;
      bias.assign(tf.fill([1], -60));
      gated
        .apply(x, false)
        .dataSync()
        .forEach((v, i) => expect(v).toBeCloseTo(plain[i]!, 5));
      expect([...gated.state().keys()].filter((k) => k.startsWith('occlusion.segmentation.'))).toHaveLength(5);
      f.dispose();
    } finally {
      x.dispose();
      gated.dispose();
    }
  });
});
