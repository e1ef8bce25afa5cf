/**
 * Backbone architectures: parameter and MAC counts against docs/methods.md#cost-counting (from
 * the shape trace, at 112×112), layer shapes, and real forward passes where the
 * stock JavaScript CPU backend allows.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { createBackbone, modelInfo, type BackboneName } from '../src/models/index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function within(actual: number, expected: number, rel: number): void {
  expect(Math.abs(actual - expected) / expected, `${actual} vs ${expected}`).toBeLessThanOrEqual(rel);
}

function layer(info: ReturnType<typeof modelInfo>, name: string) {
  const l = info.layers.find((r) => r.name === name);
  if (!l) throw new Error(`no layer ${name}`);
  return l;
}

describe('cost against the published counts (docs/methods.md#backbones; 112×112, within 2%)', () => {
  // [backbone, params, MACs] as docs/methods.md#backbones quotes them; `params` counts every parameter
  // (conv/FC + BN γ,β + PReLU) except for MobileFaceNet, quoted as conv/FC only.
  const table: [BackboneName, number, number][] = [
    ['iresnet18', 24.0e6, 2.61e9],
    ['iresnet34', 34.1e6, 4.46e9],
    ['iresnet50', 43.6e6, 6.31e9],
    ['iresnet100', 65.2e6, 12.09e9],
    ['iresnet200', 118.8e6, 23.42e9],
    ['vargfacenet', 5.2e6, 512.6e6],
  ];
  for (const [name, params, macs] of table) {
    it(`${name}: ${params / 1e6}M params, ${macs / 1e6}M MACs`, () => {
      const info = modelInfo(name);
      within(info.params, params, 0.02);
      within(info.macs, macs, 0.02);
      // and to the printed precision of docs/methods.md#backbones
      within(info.params, params, 0.005);
      within(info.macs, macs, 0.005);
    });
  }

  it('mobilefacenet: 2.03M conv/FC params (+0.03M BN/PReLU), 437.5M MACs', () => {
    const info = modelInfo('mobilefacenet');
    within(info.paramsByKind.convFc, 2.03e6, 0.005);
    within(info.paramsByKind.batchNorm + info.paramsByKind.prelu, 0.03e6, 0.05);
    within(info.macs, 437.5e6, 0.001);
    expect(info.params).toBe(info.paramsByKind.convFc + info.paramsByKind.batchNorm + info.paramsByKind.prelu);
  });

  it('vargfacenet: the split of docs/methods.md#vargfacenet (5.14M conv/FC + 0.04M BN + 0.02M PReLU) and the no-SE variant', () => {
    const info = modelInfo('vargfacenet');
    within(info.paramsByKind.convFc, 5.14e6, 0.005);
    within(info.paramsByKind.batchNorm, 0.04e6, 0.1);
    within(info.paramsByKind.prelu, 0.02e6, 0.1);
    const noSe = modelInfo('vargfacenet', { se: false });
    within(noSe.params, 4.96e6, 0.005);
    within(noSe.macs, 512.4e6, 0.001);
  });

  it('vargfacenet unit check: Sep(40→80, s2) on 56×56 has 12,160 weights and 9,533,440 MACs', () => {
    const info = modelInfo('vargfacenet');
    const varg = layer(info, 'stage2.down.branch1.varg');
    const pw = layer(info, 'stage2.down.branch1.pointwise');
    expect(varg.params + pw.params).toBe(12_160);
    expect(varg.macs + pw.macs).toBe(9_533_440);
    expect(varg.outShape).toEqual([1, 28, 28, 80]);
  });

  it('vargfacenet spatial plan and embedding block', () => {
    const info = modelInfo('vargfacenet');
    expect(layer(info, 'head.conv').outShape).toEqual([1, 112, 112, 40]);
    expect(layer(info, 'head.block.prelu').outShape).toEqual([1, 56, 56, 40]);
    expect(layer(info, 'stage2.block1.prelu').outShape).toEqual([1, 28, 28, 80]);
    expect(layer(info, 'stage3.block5.prelu').outShape).toEqual([1, 14, 14, 160]);
    expect(layer(info, 'stage4.block2.prelu').outShape).toEqual([1, 7, 7, 320]);
    const varg = layer(info, 'embed.varg');
    expect(varg.outShape).toEqual([1, 1, 1, 1024]);
    expect(varg.params).toBe(401_408); // 1024·8·49
    expect(layer(info, 'embed.fc').params).toBe(512 * 512 + 512);
    expect(info.layers.filter((l) => l.name.endsWith('se.reduce')).length).toBe(1 + 2 + 6 + 3);
  });

  it('iresnet: stride on the second conv, 7×7×512 map, 25,088 → 512 FC, frozen output γ', () => {
    const info = modelInfo('iresnet50');
    expect(layer(info, 'stage1.block0.conv1').outShape).toEqual([1, 112, 112, 64]);
    expect(layer(info, 'stage1.block0.conv2').outShape).toEqual([1, 56, 56, 64]);
    expect(layer(info, 'stage1.block0.downsample.conv').outShape).toEqual([1, 56, 56, 64]);
    expect(info.layers.some((l) => l.name === 'stage1.block1.downsample.conv')).toBe(false);
    expect(layer(info, 'bn2').outShape).toEqual([1, 7, 7, 512]);
    expect(layer(info, 'fc').params).toBe(25_088 * 512 + 512);
    expect(info.params - info.paramsTrainable).toBe(512);
    expect(info.layers.filter((l) => l.name.match(/^stage3\.block\d+\.conv1$/)).length).toBe(14);
  });

  it('mobilefacenet: 56 → 28 → 14 → 7 and the GDC head', () => {
    const info = modelInfo('mobilefacenet');
    expect(layer(info, 'stem2.conv').outShape).toEqual([1, 56, 56, 128]);
    expect(layer(info, 'stage2.down.project.conv').outShape).toEqual([1, 28, 28, 128]);
    expect(layer(info, 'stage3.down.project.conv').outShape).toEqual([1, 14, 14, 256]);
    expect(layer(info, 'stage4.down.depthwise.conv').outShape).toEqual([1, 7, 7, 512]);
    expect(layer(info, 'gdc.conv').outShape).toEqual([1, 1, 1, 512]);
    expect(layer(info, 'gdc.linear').params).toBe(512 * 512);
  });

  it('tiny: 100k–300k parameters at any input size, embedding size honoured', () => {
    for (const s of [16, 32, 48, 112]) {
      const info = modelInfo('tiny', { inputSize: s });
      expect(info.params).toBeGreaterThan(100_000);
      expect(info.params).toBeLessThan(300_000);
    }
    expect(modelInfo('tiny', { inputSize: 32, embeddingSize: 128 }).layers.at(-1)!.outShape).toEqual([1, 128]);
    const none = modelInfo('tiny', { inputSize: 32, norm: 'none' });
    expect(none.paramsByKind.batchNorm).toBe(0);
    expect(none.buffers).toBe(0);
  });

  it('input sizes that do not fit the architecture are refused with the reason', () => {
    expect(() => modelInfo('mobilefacenet', { inputSize: 64 })).toThrow(/input size 64/);
    expect(() => modelInfo('vargfacenet', { inputSize: 128 })).toThrow(/input size 128/);
    expect(() => modelInfo('tiny', { inputSize: 8 })).toThrow(/< 16/);
    expect(() => modelInfo('iresnet18', { se: false })).toThrow(/vargfacenet only/);
  });
});

describe('forward passes (stock CPU backend)', () => {
  it('tiny: [B, D] at 16, 32 and 48 px, train and eval', () => {
    const net = createBackbone('tiny', { inputSize: 32, embeddingSize: 64, seed: 1 });
    for (const s of [16, 32, 48]) {
      const x = tf.randomNormal([3, s, s, 3]) as tf.Tensor4D;
      const y = net.apply(x, true);
      const z = net.apply(x, false);
      expect(y.shape).toEqual([3, 64]);
      expect(z.shape).toEqual([3, 64]);
      expect(Array.from(y.dataSync()).every(Number.isFinite)).toBe(true);
      tf.dispose([x, y, z]);
    }
    const bad = tf.zeros([1, 8, 8, 3]) as tf.Tensor4D;
    expect(() => net.apply(bad, false)).toThrow(/at least 16/);
    bad.dispose();
    net.dispose();
  });

  it('iresnet18 at 32×32 (FC sized by the 2×2 final map)', () => {
    const net = createBackbone('iresnet18', { inputSize: 32, seed: 2 });
    const x = tf.randomNormal([2, 32, 32, 3]) as tf.Tensor4D;
    const y = net.apply(x, true);
    expect(y.shape).toEqual([2, 512]);
    expect(Array.from(y.dataSync()).every(Number.isFinite)).toBe(true);
    const wrong = tf.zeros([1, 48, 48, 3]) as tf.Tensor4D;
    expect(() => net.apply(wrong, false)).toThrow(/expected 32×32/);
    tf.dispose([x, y, wrong]);
    net.dispose();
  });

  it('mobilefacenet and vargfacenet at 112×112 (eval, batch 1)', () => {
    for (const name of ['mobilefacenet', 'vargfacenet'] as const) {
      const net = createBackbone(name, { seed: 3, embeddingSize: 128 });
      const x = tf.randomNormal([1, 112, 112, 3]) as tf.Tensor4D;
      const y = net.apply(x, false);
      expect(y.shape).toEqual([1, 128]);
      expect(Array.from(y.dataSync()).every(Number.isFinite)).toBe(true);
      tf.dispose([x, y]);
      net.dispose();
    }
  });
});
