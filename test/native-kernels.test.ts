/**
 * Native CPU kernels (src/ops/native) against the stock TensorFlow.js `cpu`
 * kernels, forward and through tf.grads, in one process by tf.setBackend. Each
 * case also checks that the native path really ran (no silent fallback).
 * Tolerance: max |native − stock| ≤ 1e-4 · max |stock| per output tensor.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { groupedConv2d, groupedConv2dPerGroup } from '../src/ops/grouped-conv.js';
import { GROUPED_SMALL_MAX, groupedSmallCalls } from '../src/ops/native/kernels-grouped-small.js';
import { nativeAddon, nativeKernelCounts, registerNativeKernels } from '../src/ops/native/register.js';

const TOL = 1e-4;
let seed = 1;

function rand(shape: number[], lo = -1, hi = 1): tf.Tensor {
  return tf.tidy(() => tf.randomUniform(shape, lo, hi, 'float32', seed++));
}

/** Runs `f` on `cpu` and `cpu-native` and compares every output. */
async function compare(f: () => tf.Tensor | tf.Tensor[], ref: () => tf.Tensor | tf.Tensor[] = f): Promise<void> {
  await tf.setBackend('cpu');
  const want = tf.tidy(() => [ref()].flat().map((t) => ({ shape: t.shape, values: t.dataSync() })));
  await tf.setBackend('cpu-native');
  const got = tf.tidy(() => [f()].flat().map((t) => ({ shape: t.shape, values: t.dataSync() })));
  await tf.setBackend('cpu');
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    expect(got[i]!.shape).toEqual(want[i]!.shape);
    const w = want[i]!.values,
      g = got[i]!.values;
    let scale = 1e-30;
    for (const v of w) scale = Math.max(scale, Math.abs(v));
    let err = 0;
    for (let j = 0; j < w.length; j++) err = Math.max(err, Math.abs(g[j]! - w[j]!));
    expect(err / scale, `output ${i}: max error ${err} at scale ${scale}`).toBeLessThanOrEqual(TOL);
  }
}

/** Asserts that `kernels` ran natively at least once during `body`. */
async function ranNatively(kernels: string[], body: () => Promise<void>): Promise<void> {
  const before = nativeKernelCounts();
  await body();
  const after = nativeKernelCounts();
  for (const k of kernels) expect(after[k]!.native, `${k} ran natively`).toBeGreaterThan(before[k]?.native ?? 0);
}

/** Gradient of sum(f(...) · r) with respect to every input, r a fixed random cotangent. */
function gradsOf(f: (...xs: tf.Tensor[]) => tf.Tensor, xs: tf.Tensor[]): () => tf.Tensor[] {
  const cotangentSeed = seed++; // the same cotangent on both backends
  return () => {
    const y = f(...xs);
    const r = tf.randomUniform(y.shape, -1, 1, 'float32', cotangentSeed);
    return tf.grads((...args: tf.Tensor[]) =>
      f(...args)
        .mul(r)
        .sum(),
    )(xs);
  };
}

beforeAll(() => {
  const r = registerNativeKernels({ threads: 2 });
  if (!r.ok) throw new Error(`native kernels must load in CI: ${r.reason}`);
});

describe('native kernels: addon', () => {
  it('loads and registers the cpu-native backend', () => {
    const r = registerNativeKernels({ threads: 2 });
    expect(r).toEqual({ ok: true, threads: 2 });
    expect(registerNativeKernels({ threads: 2 })).toEqual(r);
    expect(tf.getKernel('Conv2D', 'cpu-native')).toBeDefined();
    expect(tf.getKernel('SfGroupedConv2D', 'cpu-native')).toBeDefined();
    // `cpu` keeps the stock kernels.
    expect(tf.getKernel('Conv2D', 'cpu')!.kernelFunc).not.toBe(tf.getKernel('Conv2D', 'cpu-native')!.kernelFunc);
    expect(tf.getKernel('Tile', 'cpu-native')).toBeDefined();
  });

  it('keeps freed memory for reuse on glibc (threads.cc), and fully written outputs still match after reuse', async () => {
    const addon = nativeAddon()!;
    const glibc = process.platform === 'linux' && (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime !== undefined;
    expect(addon.reuseFreedMemory(true)).toBe(glibc);
    // outputs over the unzeroed-allocation threshold, allocated and freed again and again: reused blocks hold stale values
    const x = rand([4, 33, 33, 40]);
    for (let i = 0; i < 3; i++) await compare(() => [tf.relu(x), tf.mul(x, 3), tf.sum(x, [0, 1, 2])]);
  });
});

describe('native kernels: matMul', () => {
  // tfjs's BatchMatMul gradient does not reduce broadcast batch dims (on any backend),
  // so broadcast cases check the forward pass only.
  const cases: Array<[number[], number[], boolean, boolean]> = [
    [[1, 1], [1, 1], false, false],
    [[7, 13], [13, 5], false, false],
    [[13, 7], [13, 5], true, false],
    [[7, 13], [5, 13], false, true],
    [[13, 7], [5, 13], true, true],
    [[3, 5, 9], [3, 9, 4], false, false],
    [[3, 5, 9], [9, 4], false, false], // shared B folds into one GEMM
    [[9, 5], [2, 3, 4, 9], true, true], // A broadcast over B's batch
    [[2, 3, 9, 5], [2, 3, 9, 6], true, false],
  ];
  for (const [sa, sb, ta, tb] of cases) {
    const broadcast = sa.length !== sb.length;
    it(`${JSON.stringify(sa)}${ta ? 'ᵀ' : ''} · ${JSON.stringify(sb)}${tb ? 'ᵀ' : ''}${broadcast ? '' : ' with gradients'}`, async () => {
      const a = rand(sa),
        b = rand(sb);
      const f = (x: tf.Tensor, y: tf.Tensor): tf.Tensor => tf.matMul(x, y, ta, tb);
      await ranNatively(['BatchMatMul'], async () => {
        await compare(() => f(a, b));
        if (!broadcast) await compare(gradsOf(f, [a, b]));
      });
    });
  }

  for (const activation of ['linear', 'relu', 'relu6', 'prelu', 'leakyrelu', 'elu', 'sigmoid'] as const) {
    it(`fused matMul + bias + ${activation}`, async () => {
      const a = rand([6, 11]),
        b = rand([7, 11]),
        bias = rand([7]),
        alpha = rand([7], 0.1, 0.3);
      await ranNatively(['_FusedMatMul'], () => compare(() => tf.fused.matMul({ a, b, transposeB: true, bias, activation, preluActivationWeights: alpha, leakyreluAlpha: 0.15 })));
    });
  }

  it('fused matMul gradients (bias + relu)', async () => {
    const a = rand([6, 11]),
      b = rand([11, 7]),
      bias = rand([7]);
    const f = (x: tf.Tensor, w: tf.Tensor, c: tf.Tensor): tf.Tensor => tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias: c, activation: 'relu' });
    await compare(gradsOf(f, [a, b, bias]));
  });
});

describe('native kernels: conv2d', () => {
  type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
  const cases: Array<{ x: number[]; k: number[]; s: number; pad: Pad }> = [
    { x: [1, 7, 9, 3], k: [3, 3, 3, 5], s: 1, pad: 'same' },
    { x: [2, 9, 8, 5], k: [3, 3, 5, 7], s: 2, pad: 'same' },
    { x: [2, 9, 8, 5], k: [3, 3, 5, 7], s: 2, pad: 'valid' },
    {
      x: [1, 8, 7, 4],
      k: [3, 2, 4, 6],
      s: 1,
      pad: [
        [0, 0],
        [1, 2],
        [2, 0],
        [0, 0],
      ],
    },
    { x: [2, 6, 5, 3], k: [3, 3, 3, 4], s: 1, pad: 1 },
    { x: [2, 5, 7, 6], k: [1, 1, 6, 9], s: 1, pad: 'valid' }, // pointwise: plain GEMM
    { x: [3, 13, 11, 20], k: [1, 1, 20, 24], s: 1, pad: 'same' }, // pointwise over several row blocks, last one short
    { x: [1, 17, 19, 33], k: [1, 1, 33, 7], s: 1, pad: 'valid' }, // pointwise, batch 1, odd sizes
    { x: [2, 9, 11, 12], k: [1, 1, 12, 10], s: 2, pad: 'valid' }, // strided pointwise: a gather, then GEMM
    { x: [1, 7, 7, 6], k: [1, 1, 6, 5], s: 2, pad: 'same' },
    { x: [1, 11, 10, 3], k: [5, 5, 3, 4], s: 2, pad: 'valid' },
    // conv.cc's implicit GEMM: weight panels of 64 outputs (here 64 + 6), input channels in
    // chunks of 128 (136 = 128 + 8), pixel units of 96 with tiles of 6 (198 pixels)
    { x: [2, 9, 11, 136], k: [3, 3, 136, 70], s: 1, pad: 'same' },
    // several taps per chunk (c = 40), a last panel of three vectors (100 = 64 + 36), stride 2
    { x: [1, 15, 13, 40], k: [3, 3, 40, 100], s: 2, pad: 'valid' },
    // more than 64 taps, batch 1; 64 + 13 outputs (a last panel of one partial vector)
    { x: [1, 10, 10, 2], k: [9, 9, 2, 77], s: 1, pad: 'same' },
    // stride 2 'same' with asymmetric padding, 128 outputs (two full panels)
    { x: [3, 8, 7, 17], k: [3, 3, 17, 128], s: 2, pad: 'same' },
    // strided backprop-input by stride phases (c ≥ 64): stride 3 (one tap per phase and
    // axis), a 4×4 kernel at stride 3 (two taps in one phase), a 2×2 one at stride 3 (a
    // phase that no tap reaches: zeros); below 64 channels, GEMM + col2im
    { x: [2, 11, 13, 64], k: [3, 3, 64, 20], s: 3, pad: 'same' },
    { x: [1, 13, 14, 70], k: [4, 4, 70, 6], s: 3, pad: 'same' },
    { x: [2, 12, 10, 64], k: [2, 2, 64, 9], s: 3, pad: 'same' },
    { x: [2, 10, 9, 8], k: [2, 2, 8, 24], s: 2, pad: 'valid' },
  ];
  // im2col: SHARDFACE_CONV_IM2COL=1 forces the im2col + OpenBLAS path that CPUs without AVX-512 take (conv.cc).
  for (const path of ['default', 'im2col'] as const) {
    for (const { x: xs, k: ks, s, pad } of cases) {
      it(`x ${JSON.stringify(xs)} k ${JSON.stringify(ks)} stride ${s} pad ${JSON.stringify(pad)}: forward and gradients (${path})`, async () => {
        const x = rand(xs),
          k = rand(ks);
        const f = (a: tf.Tensor, b: tf.Tensor): tf.Tensor => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad);
        if (path === 'im2col') process.env.SHARDFACE_CONV_IM2COL = '1';
        try {
          await ranNatively(['Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter'], async () => {
            await compare(() => f(x, k));
            await compare(gradsOf(f, [x, k]));
          });
        } finally {
          delete process.env.SHARDFACE_CONV_IM2COL;
        }
      });
    }
  }

  for (const activation of ['linear', 'relu', 'prelu', 'leakyrelu', 'relu6'] as const) {
    it(`fused conv2d + bias + ${activation}`, async () => {
      const x = rand([2, 7, 6, 5]),
        k = rand([3, 3, 5, 6]),
        bias = rand([6]),
        alpha = rand([6], 0.1, 0.3);
      await ranNatively(['FusedConv2D'], () =>
        compare(() => tf.fused.conv2d({ x: x as tf.Tensor4D, filter: k as tf.Tensor4D, strides: 2, pad: 'same', bias, activation, preluActivationWeights: alpha, leakyreluAlpha: 0.1 })),
      );
    });
  }

  it('falls back to the stock kernel for dilation 2', async () => {
    const x = rand([1, 9, 9, 3]),
      k = rand([3, 3, 3, 4]);
    const before = nativeKernelCounts().Conv2D!.stock;
    await compare(() => tf.conv2d(x as tf.Tensor4D, k as tf.Tensor4D, 1, 'same', 'NHWC', 2));
    expect(nativeKernelCounts().Conv2D!.stock).toBe(before + 1);
  });
});

describe('native kernels: depthwise conv2d', () => {
  type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
  const cases: Array<{ x: number[]; k: number[]; s: number; pad: Pad }> = [
    { x: [1, 7, 9, 5], k: [3, 3, 5, 1], s: 1, pad: 'same' },
    { x: [2, 9, 8, 13], k: [3, 3, 13, 1], s: 2, pad: 'same' },
    { x: [2, 9, 8, 6], k: [3, 3, 6, 2], s: 2, pad: 'valid' },
    {
      x: [1, 8, 7, 3],
      k: [3, 3, 3, 3],
      s: 1,
      pad: [
        [0, 0],
        [2, 1],
        [0, 2],
        [0, 0],
      ],
    },
    { x: [2, 5, 5, 4], k: [5, 5, 4, 1], s: 1, pad: 'valid' },
    { x: [1, 1, 3, 4], k: [3, 3, 4, 1], s: 2, pad: 'same' }, // window wider than the input
    // the vectorised 3×3 / stride 1 / multiplier 1 / channels % 8 == 0 path
    { x: [2, 9, 13, 64], k: [3, 3, 64, 1], s: 1, pad: 'same' },
    { x: [1, 6, 3, 16], k: [3, 3, 16, 1], s: 1, pad: 'valid' },
    {
      x: [1, 5, 2, 8],
      k: [3, 3, 8, 1],
      s: 1,
      pad: [
        [0, 0],
        [2, 0],
        [1, 2],
        [0, 0],
      ],
    },
    { x: [1, 4, 1, 24], k: [3, 3, 24, 1], s: 1, pad: 'same' },
  ];
  for (const { x: xs, k: ks, s, pad } of cases) {
    it(`x ${JSON.stringify(xs)} k ${JSON.stringify(ks)} stride ${s} pad ${JSON.stringify(pad)}: forward and gradients`, async () => {
      const x = rand(xs),
        k = rand(ks);
      const f = (a: tf.Tensor, b: tf.Tensor): tf.Tensor => tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad);
      await ranNatively(['DepthwiseConv2dNative', 'DepthwiseConv2dNativeBackpropInput', 'DepthwiseConv2dNativeBackpropFilter'], async () => {
        await compare(() => f(x, k));
        await compare(gradsOf(f, [x, k]));
      });
    });
  }

  it('fused depthwise + bias + relu', async () => {
    const x = rand([2, 7, 6, 5]),
      k = rand([3, 3, 5, 2]),
      bias = rand([10]);
    await ranNatively(['FusedDepthwiseConv2D'], () => compare(() => tf.fused.depthwiseConv2d({ x: x as tf.Tensor4D, filter: k as tf.Tensor4D, strides: 1, pad: 'same', bias, activation: 'relu' })));
  });
});

describe('native kernels: grouped conv2d (SfGroupedConv2D)', () => {
  const cases: Array<{ x: number[]; k: number[]; s: number; pad: 'same' | 'valid' | number; groups: number }> = [
    { x: [2, 9, 9, 16], k: [3, 3, 8, 32], s: 1, pad: 'same', groups: 2 }, // VarGFaceNet: 8 in, 16 out per group
    { x: [1, 9, 8, 24], k: [3, 3, 8, 48], s: 2, pad: 'same', groups: 3 },
    { x: [2, 8, 9, 12], k: [3, 3, 4, 6], s: 2, pad: 'valid', groups: 3 },
    { x: [1, 7, 6, 10], k: [3, 3, 5, 4], s: 1, pad: 1, groups: 2 },
    { x: [2, 7, 7, 64], k: [7, 7, 8, 64], s: 1, pad: 'valid', groups: 8 }, // the 7×7 embedding conv, scaled down
    // Shapes for conv.cc's AVX-512 grouped kernels (≤ 64 outputs per group): pixel tiles of 8, 4
    // and 1 (ow = 11, 13), 16 lanes with a masked tail (20 outputs per group), 8 or 16 inputs per
    // group (unrolled) and an odd count (5), stride 2, batch 1, and every padding mode.
    { x: [2, 13, 11, 16], k: [3, 3, 8, 32], s: 1, pad: 'same', groups: 2 },
    { x: [1, 12, 13, 32], k: [3, 3, 16, 40], s: 2, pad: 'same', groups: 2 },
    { x: [2, 10, 13, 15], k: [3, 3, 5, 30], s: 1, pad: 'valid', groups: 3 },
    { x: [1, 9, 10, 24], k: [5, 5, 8, 48], s: 1, pad: 2, groups: 3 },
    { x: [2, 11, 9, 40], k: [3, 3, 8, 80], s: 2, pad: 'valid', groups: 5 },
    // ≤ 4 channels per group each way: the direct kernels (kernels-grouped-small.ts)
    { x: [2, 10, 9, 16], k: [3, 3, 2, 16], s: 1, pad: 1, groups: 8 }, // MobileFaceNet's stem2: 2 in, 2 out per group
    { x: [1, 6, 7, 136], k: [3, 3, 2, 136], s: 1, pad: 1, groups: 68 }, // 64-channel vector blocks plus a tail
    { x: [2, 9, 7, 12], k: [3, 3, 3, 4], s: 2, pad: 'valid', groups: 4 }, // 3 in, 1 out; odd sizes
    { x: [1, 9, 8, 8], k: [3, 3, 2, 16], s: 2, pad: 'same', groups: 4 }, // 2 in, 4 out, stride 2
    { x: [1, 7, 7, 4], k: [5, 5, 1, 8], s: 1, pad: 2, groups: 4 }, // 1 in, 2 out, 5×5
    { x: [1, 3, 2, 6], k: [3, 3, 2, 6], s: 2, pad: 'same', groups: 3 }, // window wider than the input
  ];
  for (const { x: xs, k: ks, s, pad, groups } of cases) {
    const direct = xs[3]! / groups <= GROUPED_SMALL_MAX && ks[3]! / groups <= GROUPED_SMALL_MAX;
    it(`x ${JSON.stringify(xs)} k ${JSON.stringify(ks)} stride ${s} pad ${pad} groups ${groups}: matches one conv per group (${direct ? 'direct' : 'conv.cc'})`, async () => {
      const directBefore = groupedSmallCalls.count;
      const x = rand(xs),
        k = rand(ks);
      const args = { strides: s, pad, groups };
      const native = (a: tf.Tensor, b: tf.Tensor): tf.Tensor => groupedConv2d(a as tf.Tensor4D, b as tf.Tensor4D, args);
      const reference = (a: tf.Tensor, b: tf.Tensor): tf.Tensor => groupedConv2dPerGroup(a as tf.Tensor4D, b as tf.Tensor4D, args);
      await ranNatively(['SfGroupedConv2D', 'SfGroupedConv2DBackpropInput', 'SfGroupedConv2DBackpropFilter'], async () => {
        await compare(
          () => native(x, k),
          () => reference(x, k),
        );
        const cotangentSeed = seed;
        await compare(gradsOf(native, [x, k]), ((seed = cotangentSeed), gradsOf(reference, [x, k])));
      });
      // forward three times (compare, gradsOf for the shape, inside tf.grads), each backprop once, or none of them
      expect(groupedSmallCalls.count - directBefore).toBe(direct ? 5 : 0);
    });
  }
});

describe('native kernels: element-wise and reductions', () => {
  const pairs: Array<[number[], number[]]> = [
    [
      [2, 3, 4, 5],
      [2, 3, 4, 5],
    ],
    [[2, 3, 4, 5], []],
    [[], [2, 3, 4, 5]],
    [[2, 3, 4, 5], [5]],
    [[5], [2, 3, 4, 5]],
    [
      [2, 3, 4, 5],
      [2, 1, 1, 5],
    ],
    [
      [2, 3, 4, 5],
      [2, 3, 4, 1],
    ],
    [
      [2, 1, 1, 5],
      [2, 3, 4, 5],
    ],
    [
      [2, 1, 5],
      [1, 3, 1],
    ], // both broadcast: stock fallback
  ];
  for (const name of ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'squaredDifference'] as const) {
    it(`${name} over common broadcasts, with gradients`, async () => {
      for (const [sa, sb] of pairs) {
        const a = rand(sa),
          b = name === 'div' ? rand(sb, 0.5, 2) : rand(sb);
        const f = (x: tf.Tensor, y: tf.Tensor): tf.Tensor => tf[name](x, y);
        await compare(() => f(a, b));
        // tfjs's own Maximum/Minimum/SquaredDifference gradients do not reduce broadcasts.
        const gradientsBroadcast = name === 'add' || name === 'sub' || name === 'mul' || name === 'div';
        if (gradientsBroadcast || JSON.stringify(sa) === JSON.stringify(sb)) await compare(gradsOf(f, [a, b]));
      }
    });
  }

  it('runs the covered broadcasts natively and int32 on the stock kernel', async () => {
    const kernels = ['Add', 'Sub', 'Multiply', 'RealDiv'];
    const [a, b, c, d, e, f, g, h] = [rand([3, 4]), rand([4]), rand([3, 4]), rand([]), rand([2, 3, 4]), rand([2, 1, 4]), rand([3, 4]), rand([3, 4], 1, 2)];
    await ranNatively(kernels, () => compare(() => [tf.add(a!, b!), tf.sub(c!, d!), tf.mul(e!, f!), tf.div(g!, h!)]));
    const before = nativeKernelCounts().Add!.stock;
    await compare(() => tf.add(tf.tensor([1, 2, 3], [3], 'int32'), tf.tensor([4, 5, 6], [3], 'int32')));
    expect(nativeKernelCounts().Add!.stock).toBe(before + 1);
  });

  it('prelu and relu, with gradients', async () => {
    const x = rand([2, 5, 4, 7]),
      alpha = rand([7], 0.1, 0.3),
      alpha2 = rand([5, 4, 7], 0.1, 0.3);
    await ranNatively(['Prelu', 'Relu'], async () => {
      await compare(() => [tf.prelu(x, alpha), tf.prelu(x, alpha2), tf.relu(x)]);
      await compare(gradsOf((a: tf.Tensor, b: tf.Tensor) => tf.prelu(a, b), [x, alpha]));
      await compare(gradsOf((a: tf.Tensor) => tf.relu(a), [x]));
    });
  });

  const reductions: Array<[number[], number | number[] | undefined, 'native'?]> = [
    [[2, 3, 4, 5], 0, 'native'],
    [[2, 3, 4, 5], [0, 1, 2], 'native'],
    [[2, 3, 4, 5], [1, 2], 'native'],
    [[2, 3, 4, 5], 3, 'native'],
    [[2, 3, 4, 5], [2, 3], 'native'],
    [[2, 3, 4, 5], undefined, 'native'],
    [[2, 1, 4, 5], [0, 1], 'native'],
    [
      [2, 3, 4, 5],
      [0, 2],
    ], // not contiguous: stock fallback
    [[64, 7, 9, 33], [0, 1, 2], 'native'], // long reduction split across threads
  ];
  for (const [shape, axis, native] of reductions) {
    it(`sum and mean of ${JSON.stringify(shape)} over ${JSON.stringify(axis)}, keepDims both ways, with gradients`, async () => {
      const x = rand(shape);
      await ranNatively(native ? ['Sum', 'Mean'] : [], async () => {
        await compare(() => [tf.sum(x, axis), tf.mean(x, axis), tf.sum(x, axis, true), tf.mean(x, axis, true)]);
        await compare(gradsOf((a: tf.Tensor) => tf.mean(a, axis, true), [x]));
      });
    });
  }
});
