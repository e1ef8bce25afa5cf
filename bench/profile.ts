/**
 * `shardface bench profile`: one training step of a backbone (forward, then the
 * backward from a random ∂L/∂e, as a worker's step runs it) profiled kernel by
 * kernel with tf.profile, in this process on the chosen backend. Prints JSON lines:
 *   {bench: "profile", kernel, ms, cpu_ms, calls, share[, gflops]}       one per kernel name, slowest first
 *   {bench: "profile-shape", kernel, inputs, outputs, ms, ...}    with --by-shape, per shape of the top kernels
 *   {bench: "profile-summary", wall_s, kernel_s, other_s, ...}    the step
 * `ms` and `calls` are per step (averaged over --steps profiled steps); `share`
 * is ms over the step's wall time, so the kernels' shares plus `other_share`
 * (wall − kernel time: JavaScript between kernels — tape bookkeeping, gradient
 * functions, tidy, tf.profile's own) sum to 1. `gflops` appears where the FLOPs
 * follow from the shapes (convolutions, depthwise, grouped, matmul; kernelFlops).
 */
import { performance } from 'node:perf_hooks';
import { tf } from '../src/ops/tf.js';
import { initBackend, type BackendChoice } from '../src/ops/backend.js';
import { createBackbone, type BackboneName } from '../src/models/index.js';

export interface BenchProfileOptions {
  backbone: BackboneName;
  batch: number;
  imageSize: number;
  embeddingSize?: number;
  backend: BackendChoice;
  /** Native kernel threads (cpu-native; default SHARDFACE_THREADS, else all cores). */
  threads?: number;
  /** Profiled steps, averaged (default 1); one unprofiled warm-up step runs first. */
  steps?: number;
  /** Break the top N kernels down by shape (0: no breakdown). */
  byShape?: number;
  seed?: number;
}

/** One kernel call as tf.profile records it (the fields this bench reads). */
export interface KernelRecord {
  name: string;
  kernelTimeMs: number;
  /** Process CPU time in the call, where measured. */
  cpuMs?: number;
  inputShapes: (number[] | null)[];
  outputShapes: number[][];
}

const FORWARD_CONV = new Set(['Conv2D', 'FusedConv2D', 'DepthwiseConv2dNative', 'FusedDepthwiseConv2D', 'SfGroupedConv2D']);
const BACKPROP_INPUT = new Set(['Conv2DBackpropInput', 'DepthwiseConv2dNativeBackpropInput', 'SfGroupedConv2DBackpropInput']);
const BACKPROP_FILTER = new Set(['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropFilter', 'SfGroupedConv2DBackpropFilter']);
const MATMUL = new Set(['BatchMatMul', '_FusedMatMul']);

const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/**
 * FLOPs (2 per multiply-add) of one call, from its shapes alone, or null where
 * the kernel is not one whose cost the shapes give. Every convolution kind costs
 * 2 · (output pixels N·OH·OW) · (filter elements): the filter holds, per output
 * channel, the kh·kw·(input channels per group) taps each output pixel sums,
 * and each backprop does the same multiply-adds as the forward. Input order is
 * the op's: {x, filter}, {dy, filter}, {x, dy}; matmul {a, b} → [..., M, N].
 */
export function kernelFlops(k: Pick<KernelRecord, 'name' | 'inputShapes' | 'outputShapes'>): number | null {
  const [in0, in1] = k.inputShapes;
  const out = k.outputShapes[0];
  const conv = (pixels: number[] | null | undefined, filter: number[] | null | undefined): number | null =>
    pixels?.length === 4 && filter?.length === 4 ? 2 * pixels[0]! * pixels[1]! * pixels[2]! * size(filter) : null;
  if (FORWARD_CONV.has(k.name)) return conv(out, in1);
  if (BACKPROP_INPUT.has(k.name)) return conv(in0, in1);
  if (BACKPROP_FILTER.has(k.name)) return conv(in1, out);
  if (MATMUL.has(k.name)) {
    if (!in0 || !out || in0.length < 2 || out.length < 2) return null;
    const m = out[out.length - 2]!;
    if (m === 0) return 0;
    const depth = (in0[in0.length - 1]! * in0[in0.length - 2]!) / m;
    return 2 * size(out) * depth;
  }
  return null;
}

export interface KernelLine {
  bench: 'profile';
  kernel: string;
  ms: number;
  /** Process CPU time (all threads) in the kernel, per step. */
  cpu_ms: number;
  calls: number;
  share: number;
  gflops?: number;
}

export interface ShapeLine extends Omit<KernelLine, 'bench'> {
  bench: 'profile-shape';
  inputs: (number[] | null)[];
  outputs: number[][];
}

interface Tally {
  ms: number;
  cpuMs: number;
  calls: number;
  flops: number | null;
}

function add(map: Map<string, Tally>, key: string, k: KernelRecord): void {
  const t = map.get(key) ?? { ms: 0, cpuMs: 0, calls: 0, flops: 0 };
  const f = kernelFlops(k);
  t.ms += k.kernelTimeMs;
  t.cpuMs += k.cpuMs ?? 0;
  t.calls++;
  t.flops = t.flops === null || f === null ? null : t.flops + f;
  map.set(key, t);
}

const round = (v: number, digits: number): number => Number(v.toFixed(digits));

function line(t: Tally, steps: number, wallMs: number): Omit<KernelLine, 'bench' | 'kernel'> {
  const gflops = t.flops !== null && t.ms > 0 ? { gflops: round(t.flops / t.ms / 1e6, 2) } : {};
  return { ms: round(t.ms / steps, 2), cpu_ms: round(t.cpuMs / steps, 2), calls: t.calls / steps, share: round(t.ms / wallMs, 4), ...gflops };
}

export interface ProfileSummary {
  kernels: KernelLine[];
  shapes: ShapeLine[];
  /** Per step: kernel time and the rest of the wall time. */
  kernelMs: number;
  otherMs: number;
  calls: number;
}

/**
 * Per kernel name (slowest first) and, for the `byShape` slowest names, per
 * shape: the records of `steps` profiled steps that took `wallMs` in all.
 */
export function summariseProfile(records: readonly KernelRecord[], wallMs: number, steps: number, byShape = 0): ProfileSummary {
  const byName = new Map<string, Tally>();
  for (const k of records) add(byName, k.name, k);
  const kernels = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).map(([kernel, t]): KernelLine => ({ bench: 'profile', kernel, ...line(t, steps, wallMs) }));
  const top = new Set(kernels.slice(0, byShape).map((l) => l.kernel));
  const byKey = new Map<string, Tally>();
  const keyed = new Map<string, KernelRecord>();
  for (const k of records) {
    if (!top.has(k.name)) continue;
    const key = JSON.stringify([k.name, k.inputShapes, k.outputShapes]);
    add(byKey, key, k);
    if (!keyed.has(key)) keyed.set(key, k);
  }
  const shapes = [...byKey.entries()]
    .sort((a, b) => kernels.findIndex((l) => l.kernel === keyed.get(a[0])!.name) - kernels.findIndex((l) => l.kernel === keyed.get(b[0])!.name) || b[1].ms - a[1].ms)
    .map(([key, t]): ShapeLine => {
      const k = keyed.get(key)!;
      return { bench: 'profile-shape', kernel: k.name, inputs: k.inputShapes, outputs: k.outputShapes, ...line(t, steps, wallMs) };
    });
  const kernelMs = records.reduce((a, k) => a + k.kernelTimeMs, 0);
  return { kernels, shapes, kernelMs: kernelMs / steps, otherMs: (wallMs - kernelMs) / steps, calls: records.length / steps };
}

/**
 * Builds the backbone and returns one training step: a forward in training mode
 * and the backward from a fixed random ∂L/∂e to every trainable variable, its
 * gradients read (dataSync) so nothing is left pending, everything disposed.
 */
export function trainingStep(o: BenchProfileOptions): { step: () => void; dispose: () => void } {
  const backbone = createBackbone(o.backbone, { seed: o.seed ?? 1, inputSize: o.imageSize, ...(o.embeddingSize !== undefined ? { embeddingSize: o.embeddingSize } : {}) });
  const x = tf.randomNormal([o.batch, o.imageSize, o.imageSize, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
  const dy = tf.randomNormal([o.batch, backbone.embeddingSize], 0, 1, 'float32', 2) as tf.Tensor2D;
  const vars = backbone.trainableVariables().map((v) => v.variable);
  const step = (): void => {
    const { value, grads } = tf.engine().gradients(() => backbone.apply(x, true), vars, dy);
    for (const g of grads) g.dataSync();
    tf.dispose([value, ...grads]);
  };
  return { step, dispose: () => (tf.dispose([x, dy]), backbone.dispose()) };
}

/** What tf.profile records per call, plus `cpuMs`: this process's CPU time in the call (all threads), steadier than wall time on a shared machine. */
export interface TimedKernelRecord extends KernelRecord {
  cpuMs: number;
}

/**
 * Runs `step` `steps` times under tf.profile on the current backend: every kernel
 * call, and the steps' wall time. The backend's timer is wrapped for the duration
 * to read process CPU time around each kernel too (tf.profile passes what the
 * timer returns as the record's extraInfo).
 */
export async function profileSteps(step: () => void, steps: number): Promise<{ records: TimedKernelRecord[]; wallMs: number }> {
  const backend = tf.backend() as unknown as { time(f: () => void): Promise<{ kernelMs: number; getExtraProfileInfo?: () => string }> };
  const time = Object.getOwnPropertyDescriptor(backend, 'time');
  backend.time = (f) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    f();
    const kernelMs = performance.now() - t0;
    const c = process.cpuUsage(c0);
    return Promise.resolve({ kernelMs, getExtraProfileInfo: () => String((c.user + c.system) / 1000) });
  };
  const records: TimedKernelRecord[] = [];
  let wallMs = 0;
  try {
    for (let i = 0; i < steps; i++) {
      let ms = 0;
      const prof = await tf.profile(() => {
        const s = performance.now();
        step();
        ms = performance.now() - s;
      });
      wallMs += ms;
      for (const k of prof.kernels)
        records.push({ name: k.name, kernelTimeMs: Number(k.kernelTimeMs) || 0, cpuMs: Number(k.extraInfo) || 0, inputShapes: k.inputShapes, outputShapes: k.outputShapes });
    }
  } finally {
    if (time) Object.defineProperty(backend, 'time', time);
    else delete (backend as { time?: unknown }).time;
  }
  return { records, wallMs };
}

export async function benchProfile(o: BenchProfileOptions, print: (line: Record<string, unknown>) => void = (l) => console.log(JSON.stringify(l))): Promise<void> {
  const steps = o.steps ?? 1;
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${steps}`);
  if (!Number.isInteger(o.batch) || o.batch < 2) throw new Error(`--batch must be an integer ≥ 2 (BatchNorm needs batch statistics), got ${o.batch}`);
  const info = await initBackend(o.backend, o.threads !== undefined ? { threads: o.threads } : {});
  const { step, dispose } = trainingStep(o);
  try {
    step(); // warm-up: first-call costs (kernel setup, scratch buffers, page faults of a fresh heap)
    const t0 = performance.now();
    step();
    const unprofiledMs = performance.now() - t0;
    const cpu0 = process.cpuUsage();
    const { records, wallMs } = await profileSteps(step, steps);
    const cpu = process.cpuUsage(cpu0);
    const s = summariseProfile(records, wallMs, steps, o.byShape ?? 0);
    for (const l of s.kernels) print({ ...l });
    for (const l of s.shapes) print({ ...l });
    const stepMs = wallMs / steps;
    print({
      bench: 'profile-summary',
      backbone: o.backbone,
      batch: o.batch,
      image_size: o.imageSize,
      backend: info.backend,
      threads: info.threads,
      steps,
      wall_s: round(stepMs / 1000, 4),
      kernel_s: round(s.kernelMs / 1000, 4),
      other_s: round(s.otherMs / 1000, 4),
      other_share: round(s.otherMs / stepMs, 4),
      // CPU seconds of this process per profiled step (steadier than wall time on a shared machine; sys is mostly page faults)
      cpu_user_s: round(cpu.user / 1e6 / steps, 4),
      cpu_sys_s: round(cpu.system / 1e6 / steps, 4),
      kernel_calls: s.calls,
      images_per_s: round((o.batch * 1000) / stepMs, 2),
      unprofiled_step_s: round(unprofiledMs / 1000, 4),
    });
  } finally {
    dispose();
  }
}
