/**
 * Backbone state: deterministic initialisation, parameter flags, BatchNorm
 * running statistics, tensor hygiene and gradients (on `tiny`, which the stock
 * CPU backend runs in milliseconds).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { createBackbone, type Backbone } from '../src/models/index.js';
import { Rng } from '../src/common/random.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function input(b: number, s: number, seed: number): tf.Tensor4D {
  const a = new Float32Array(b * s * s * 3);
  new Rng(seed).fillNormal(a);
  return tf.tensor4d(a, [b, s, s, 3]);
}

function snapshot(net: Backbone): Map<string, Float32Array> {
  return new Map([...net.state()].map(([k, v]) => [k, v.dataSync() as Float32Array]));
}

describe('deterministic initialisation', () => {
  it('same seed → bit-identical state; another seed → different weights', () => {
    for (const name of ['tiny', 'mobilefacenet'] as const) {
      const a = createBackbone(name, { seed: 7, inputSize: name === 'tiny' ? 32 : 112 });
      const b = createBackbone(name, { seed: 7, inputSize: name === 'tiny' ? 32 : 112 });
      const c = createBackbone(name, { seed: 8, inputSize: name === 'tiny' ? 32 : 112 });
      const sa = snapshot(a);
      const sb = snapshot(b);
      const sc = snapshot(c);
      expect([...sa.keys()]).toEqual([...sb.keys()]);
      for (const [k, v] of sa) expect(Buffer.from(sb.get(k)!.buffer).equals(Buffer.from(v.buffer)), k).toBe(true);
      const w = [...sa.keys()].find((k) => k.endsWith('.weight'))!;
      expect(Buffer.from(sc.get(w)!.buffer).equals(Buffer.from(sa.get(w)!.buffer))).toBe(false);
      a.dispose();
      b.dispose();
      c.dispose();
    }
  });

  it('each tensor has its own stream: changing the head leaves the body untouched', () => {
    const a = createBackbone('tiny', { seed: 3, embeddingSize: 64 });
    const b = createBackbone('tiny', { seed: 3, embeddingSize: 128 });
    const wa = a.state().get('stage3.block0.conv.weight')!.dataSync();
    const wb = b.state().get('stage3.block0.conv.weight')!.dataSync();
    expect(Array.from(wa)).toEqual(Array.from(wb));
    a.dispose();
    b.dispose();
  });

  it('initial values follow the architecture: BN γ=1 β=0, PReLU 0.25, IResNet conv std 0.1', () => {
    const net = createBackbone('iresnet18', { seed: 1, inputSize: 16 });
    const st = net.state();
    expect(Array.from(st.get('stem.bn.gamma')!.dataSync()).every((v) => v === 1)).toBe(true);
    expect(Array.from(st.get('stem.bn.beta')!.dataSync()).every((v) => v === 0)).toBe(true);
    expect(Array.from(st.get('stem.bn.runningVar')!.dataSync()).every((v) => v === 1)).toBe(true);
    expect(Array.from(st.get('stem.prelu.alpha')!.dataSync()).every((v) => v === 0.25)).toBe(true);
    const w = Array.from(st.get('stage4.block0.conv1.weight')!.dataSync());
    const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
    expect(std).toBeGreaterThan(0.099);
    expect(std).toBeLessThan(0.101);
    net.dispose();
  });
});

describe('parameters and state', () => {
  it('trainable variables carry names and decay flags; state() adds buffers and frozen γ', () => {
    const net = createBackbone('iresnet18', { seed: 1, inputSize: 16 });
    const tv = net.trainableVariables();
    const byName = new Map(tv.map((t) => [t.name, t]));
    expect(byName.get('stage2.block0.conv1.weight')!.decay).toBe(true);
    expect(byName.get('stage2.block0.bn1.gamma')!.decay).toBe(false);
    expect(byName.get('stage2.block0.bn1.beta')!.decay).toBe(false);
    expect(byName.get('fc.bias')!.decay).toBe(false);
    expect(byName.get('fc.weight')!.decay).toBe(true);
    expect(byName.has('features.gamma')).toBe(false); // frozen at 1
    expect(byName.has('features.beta')).toBe(true);
    expect([...byName.keys()].some((k) => k.includes('running'))).toBe(false);
    expect(tv.every((t) => t.variable.trainable)).toBe(true);
    const st = net.state();
    expect(st.has('features.gamma')).toBe(true);
    expect(st.get('features.gamma')!.trainable).toBe(false);
    expect(st.get('stage2.block0.bn1.runningMean')!.trainable).toBe(false);
    expect(st.size).toBe(tv.length + 1 + 2 * [...st.keys()].filter((k) => k.endsWith('.runningMean')).length);
    net.dispose();
  });

  it('vargfacenet SE biases are excluded from decay', () => {
    const net = createBackbone('vargfacenet', { seed: 1 });
    const byName = new Map(net.trainableVariables().map((t) => [t.name, t.decay]));
    expect(byName.get('stage3.block0.se.reduce.bias')).toBe(false);
    expect(byName.get('stage3.block0.se.reduce.weight')).toBe(true);
    expect(byName.get('embed.features.gamma')).toBe(false);
    net.dispose();
  });

  it('dispose frees every variable', () => {
    const before = tf.memory().numTensors;
    const net = createBackbone('tiny', { seed: 1 });
    expect(tf.memory().numTensors).toBeGreaterThan(before);
    net.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('BatchNorm running statistics', () => {
  it('training mode updates them with momentum 0.1 and the unbiased variance', () => {
    const net = createBackbone('tiny', { seed: 5, inputSize: 16 });
    const st = net.state();
    const x = input(4, 16, 1);
    // the first BN sees conv(x) (no bias), 4·8·8 = 256 values per channel
    const conv = tf.conv2d(x, st.get('stage1.down.conv.weight') as unknown as tf.Tensor4D, 2, 1);
    const { mean, variance } = tf.moments(conv, [0, 1, 2]);
    const n = 256;
    const expectMean = Array.from(mean.dataSync()).map((m) => 0.1 * m);
    const expectVar = Array.from(variance.dataSync()).map((v) => 0.9 + (0.1 * v * n) / (n - 1));
    tf.dispose(net.apply(x, true));
    const gotMean = Array.from(st.get('stage1.down.bn.runningMean')!.dataSync());
    const gotVar = Array.from(st.get('stage1.down.bn.runningVar')!.dataSync());
    gotMean.forEach((v, i) => expect(v).toBeCloseTo(expectMean[i]!, 5));
    gotVar.forEach((v, i) => expect(v).toBeCloseTo(expectVar[i]!, 4));
    tf.dispose([x, conv, mean, variance]);
    net.dispose();
  });

  it('eval mode leaves them alone and uses them; training mode uses batch statistics', () => {
    const net = createBackbone('tiny', { seed: 5, inputSize: 16 });
    const x = input(4, 16, 2);
    const before = snapshot(net);
    const e1 = net.apply(x, false);
    const after = snapshot(net);
    for (const [k, v] of before) expect(Array.from(after.get(k)!), k).toEqual(Array.from(v));
    // eval is per sample: the first row does not depend on the others
    const x0 = x.slice([0, 0, 0, 0], [1, 16, 16, 3]);
    const e0 = net.apply(x0, false);
    expect(Array.from(e0.dataSync())).toEqual(Array.from(e1.slice([0, 0], [1, e1.shape[1]]).dataSync()));
    // training output normalises with the batch: every embedding column has mean ≈ β = 0
    const t = net.apply(x, true);
    const colMean = tf.mean(t, 0).dataSync();
    expect(Math.max(...Array.from(colMean).map(Math.abs))).toBeLessThan(1e-4);
    const changed = snapshot(net);
    expect(Array.from(changed.get('features.runningMean')!)).not.toEqual(Array.from(before.get('features.runningMean')!));
    tf.dispose([x, x0, e0, e1, t]);
    net.dispose();
  });
});

describe('tensor hygiene', () => {
  it('apply (train and eval) leaves only its result behind', () => {
    const net = createBackbone('tiny', { seed: 1, inputSize: 32 });
    const x = input(2, 32, 3);
    for (const training of [true, false]) {
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        net.apply(x, training);
      });
      expect(tf.memory().numTensors).toBe(before);
      const y = net.apply(x, training);
      expect(tf.memory().numTensors).toBe(before + 1);
      y.dispose();
    }
    x.dispose();
    net.dispose();
  });

  it('a gradient step through apply(…, true) leaks nothing and gives no gradient to buffers', () => {
    const net = createBackbone('tiny', { seed: 1, inputSize: 32 });
    const x = input(4, 32, 4);
    const vars = net.trainableVariables();
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(
      () => tf.sum(tf.square(net.apply(x, true))) as tf.Scalar,
      vars.map((v) => v.variable),
    );
    expect(Object.keys(grads).length).toBe(vars.length);
    for (const v of vars) expect(grads[v.variable.name]!.shape, v.name).toEqual(v.variable.shape);
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    net.dispose();
  });
});

describe('gradients', () => {
  // Central finite differences on a few entries of each parameter kind. PReLU
  // kinks make finite differences of a random net noisy in float32, so every
  // slope is set to 1 first: the loss is then smooth (BN is the only
  // non-linearity), and autograd must match finite differences closely.
  function checkGradients(net: Backbone, training: boolean): void {
    for (const [name, v] of net.state()) if (name.endsWith('.alpha')) v.assign(tf.onesLike(v));
    const x = input(4, 16, 9);
    const proj = tf.tensor2d(new Rng(11).fillNormal(new Float32Array(4 * net.embeddingSize)), [4, net.embeddingSize]);
    const loss = (): tf.Scalar => tf.tidy(() => tf.sum(tf.mul(net.apply(x, training), proj)) as tf.Scalar);
    const vars = net.trainableVariables();
    const { value, grads } = tf.variableGrads(
      loss,
      vars.map((v) => v.variable),
    );
    value.dispose();
    const hasBn = vars.some((v) => v.name === 'stage2.block0.bn.gamma');
    const picks = ['stage1.down.conv.weight', 'stage2.block0.conv.weight', 'stage3.down.prelu.alpha', 'stage2.block0.prelu.alpha', 'fc.weight', 'fc.bias'].concat(
      hasBn ? ['stage2.block0.bn.gamma', 'stage3.down.bn.beta'] : ['stage2.block0.conv.bias'],
    );
    const rng = new Rng(12);
    for (const name of picks) {
      const v = vars.find((t) => t.name === name)!.variable;
      const g = grads[v.name]!.dataSync();
      const data = v.dataSync().slice() as Float32Array;
      for (let k = 0; k < 3; k++) {
        const i = rng.int(data.length);
        const h = 3e-3 * Math.max(1, Math.abs(data[i]!));
        const at = (delta: number): number => {
          const d = data.slice();
          d[i] = data[i]! + delta;
          tf.tidy(() => v.assign(tf.tensor(d, v.shape)));
          const l = loss();
          const out = l.dataSync()[0]!;
          l.dispose();
          return out;
        };
        const fd = (at(h) - at(-h)) / (2 * h);
        tf.tidy(() => v.assign(tf.tensor(data, v.shape)));
        expect(Math.abs(fd - g[i]!), `${name}[${i}] fd ${fd} vs ${g[i]}`).toBeLessThanOrEqual(2e-2 * Math.max(1, Math.abs(fd)));
      }
    }
    tf.dispose([x, proj, ...Object.values(grads)]);
  }

  it('tiny (BatchNorm, training mode) matches finite differences', () => {
    const net = createBackbone('tiny', { seed: 21, inputSize: 16, embeddingSize: 32 });
    checkGradients(net, true);
    net.dispose();
  });

  it('tiny (BatchNorm, eval mode) matches finite differences', () => {
    const net = createBackbone('tiny', { seed: 23, inputSize: 16, embeddingSize: 32 });
    checkGradients(net, false);
    net.dispose();
  });

  it("tiny (norm 'none') matches finite differences", () => {
    const net = createBackbone('tiny', { seed: 22, inputSize: 16, embeddingSize: 32, norm: 'none' });
    checkGradients(net, true);
    net.dispose();
  });
});

describe("tiny with norm 'none'", () => {
  it('has no BatchNorm and computes each sample on its own, in training mode too', () => {
    const net = createBackbone('tiny', { seed: 4, inputSize: 32, norm: 'none' });
    expect([...net.state().keys()].some((k) => k.includes('bn') || k.includes('running'))).toBe(false);
    const x = input(4, 32, 5);
    const whole = net.apply(x, true);
    const halves = tf.concat([net.apply(x.slice([0, 0, 0, 0], [2, 32, 32, 3]), true), net.apply(x.slice([2, 0, 0, 0], [2, 32, 32, 3]), true)], 0);
    const a = whole.dataSync();
    const b = halves.dataSync();
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(1e-5);
    tf.dispose([x, whole, halves]);
    net.dispose();
  });
});
