/**
 * `shardface bench profile`: the CLI's lines parse and add up (kernel shares plus
 * the JavaScript share make the step), the kernels named are real tfjs kernels of
 * the backend, and the FLOPs it divides by are those of the cost tracer
 * (src/models/cost.ts), an independent count from the network description.
 * Workers are not involved, but the CLI runs from dist/: compile with `npx tsc -p .` first.
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/processes.js';
import { kernelFlops, profileSteps, summariseProfile, trainingStep, type KernelRecord } from '../bench/profile.js';
import { tf } from '../src/ops/tf.js';
import { registerNativeKernels } from '../src/ops/native/register.js';
import { modelInfo } from '../src/models/index.js';

type Line = Record<string, unknown>;

describe('bench profile', () => {
  it('prints one line per kernel, the top kernels by shape, and a summary whose shares sum to 1', async () => {
    const { code, stdout, stderr } = await runCli(['bench', 'profile', '--backbone', 'tiny', '--batch', '4', '--image-size', '16', '--embedding-size', '8', '--by-shape', '--top', '3']);
    expect(code, stderr.slice(-3000)).toBe(0);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line);
    const kernels = lines.filter((l) => l.bench === 'profile');
    const shapes = lines.filter((l) => l.bench === 'profile-shape');
    const summary = lines.at(-1)!;
    expect(summary.bench).toBe('profile-summary');
    expect(lines).toHaveLength(kernels.length + shapes.length + 1);
    expect(summary).toMatchObject({ backbone: 'tiny', batch: 4, image_size: 16, backend: 'cpu-native', steps: 1 });

    const ok = registerNativeKernels();
    expect(ok.ok).toBe(true);
    const known = new Set(tf.getKernelsForBackend('cpu-native').map((k) => k.kernelName));
    for (const k of kernels) expect(known, String(k.kernel)).toContain(k.kernel);
    expect(new Set(kernels.map((k) => k.kernel)).size).toBe(kernels.length);
    // a conv net's training step: convolutions and their backprops, with GFLOPS
    for (const name of ['Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter']) {
      const k = kernels.find((l) => l.kernel === name);
      expect(k, name).toBeDefined();
      expect(k!.gflops).toBeGreaterThan(0);
    }
    const ms = kernels.map((k) => k.ms as number);
    expect([...ms].sort((a, b) => b - a)).toEqual(ms);
    const shares = kernels.reduce((a, k) => a + (k.share as number), 0) + (summary.other_share as number);
    expect(shares).toBeGreaterThan(0.98);
    expect(shares).toBeLessThan(1.02);
    expect(summary.other_s as number).toBeGreaterThanOrEqual(0);
    expect(Math.abs((summary.kernel_s as number) + (summary.other_s as number) - (summary.wall_s as number))).toBeLessThan(1e-3);
    expect(summary.kernel_calls).toBe(kernels.reduce((a, k) => a + (k.calls as number), 0));

    // by shape: only the top 3 kernels, their calls and time split exactly
    const top = kernels.slice(0, 3);
    expect(new Set(shapes.map((l) => l.kernel))).toEqual(new Set(top.map((k) => k.kernel)));
    for (const k of top) {
      const mine = shapes.filter((l) => l.kernel === k.kernel);
      expect(mine.reduce((a, l) => a + (l.calls as number), 0)).toBe(k.calls);
      expect(mine.reduce((a, l) => a + (l.ms as number), 0)).toBeCloseTo(k.ms as number, 0);
      for (const l of mine) expect(Array.isArray(l.inputs) && Array.isArray(l.outputs)).toBe(true);
    }
  }, 60_000);

  it('rejects an unknown backbone and a batch of 1 with a usage error', async () => {
    const bad = await runCli(['bench', 'profile', '--backbone', 'resnet9000'], 20_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--backbone must be one of .*mobilefacenet/);
    const one = await runCli(['bench', 'profile', '--backbone', 'tiny', '--batch', '1', '--image-size', '16'], 20_000);
    expect(one.code).toBe(2);
    expect(one.stderr).toMatch(/--batch must be at least 2/);
  }, 45_000);

  it("counts the cost tracer's multiply-adds: forward convs and matmuls = 2·MACs·B, each backprop the same again", async () => {
    expect(registerNativeKernels().ok).toBe(true);
    await tf.setBackend('cpu-native');
    // MobileFaceNet has every kind: 3×3 and 1×1 conv, grouped (64 groups), depthwise (stride 1 and 2, 7×7 valid), matmul
    const batch = 2;
    const o = { backbone: 'mobilefacenet' as const, batch, imageSize: 112, embeddingSize: 32, backend: 'cpu-native' as const };
    const { step, dispose } = trainingStep(o);
    let records: KernelRecord[];
    try {
      records = (await profileSteps(step, 1)).records;
    } finally {
      dispose();
      await tf.setBackend('cpu');
    }
    const info = modelInfo('mobilefacenet', { embeddingSize: 32 });
    const flopsOf = (names: string[]): number => records.filter((r) => names.includes(r.name)).reduce((a, r) => a + kernelFlops(r)!, 0);
    const forward = flopsOf(['Conv2D', 'FusedConv2D', 'DepthwiseConv2dNative', 'SfGroupedConv2D']);
    const linear = info.layers.filter((l) => l.kind === 'linear').reduce((a, l) => a + l.macs, 0);
    expect(forward).toBe(2 * (info.macs - linear) * batch);
    // every conv's filter is trained: backprop-filter repeats the forward; backprop-input all but the first conv (x needs no gradient)
    expect(flopsOf(['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropFilter', 'SfGroupedConv2DBackpropFilter'])).toBe(forward);
    const stem = info.layers.find((l) => l.kind === 'conv2d')!;
    expect(flopsOf(['Conv2DBackpropInput', 'DepthwiseConv2dNativeBackpropInput', 'SfGroupedConv2DBackpropInput'])).toBe(forward - 2 * stem.macs * batch);
    // the linear layer: one forward matmul and two in the backward, 2·in·out·B each
    expect(flopsOf(['BatchMatMul', '_FusedMatMul'])).toBe(3 * 2 * linear * batch);
    // every conv-like and matmul call has its FLOPs; element-wise ones none
    for (const r of records) if (/Conv|MatMul/.test(r.name)) expect(kernelFlops(r), r.name).not.toBeNull();
    expect(kernelFlops({ name: 'Add', inputShapes: [[2, 3]], outputShapes: [[2, 3]] })).toBeNull();
    // the summary's per-name totals are the records'
    const s = summariseProfile(records, 1000, 1);
    expect(s.calls).toBe(records.length);
    expect(s.kernels.reduce((a, k) => a + k.calls, 0)).toBe(records.length);
  }, 120_000);
});
