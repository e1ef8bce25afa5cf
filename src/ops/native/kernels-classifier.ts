/**
 * The sharded classifier's fused kernels (classifier.cc) as tfjs kernels of
 * `cpu-native`, under shardface's own names (softmax-shard.ts and
 * row-optimizer.ts dispatch to them when the backend has them):
 *
 *   SfRowNorms        {x [K,D]} → [K,1] row norms
 *   SfShardForward    {emb [N,D], weight [K,D], labels int32 [N], weightNorm? [K,1]},
 *                     {margin [s,m1,m2,m3,variant], chunk} → rowMax, sumExp, target (each [N])
 *   SfShardBackward   the same inputs + logSumExp [N], attrs + rowsTotal
 *                     → gradEmb [N,D], gradWeight [K,D]
 *   SfGatherRows      {x [C,D], index int32 [K]} → x[index]
 *   SfRowSgdUpdate    {weight, momentum [C,D], grad [K,D], index int32 [K]}, {lr, momentum, weightDecay}
 *                     → weight', momentum'
 *   SfRowAdamWUpdate  {weight, expAvg, expAvgSq, grad, index}, {consts} → weight', expAvg', expAvgSq'
 *
 * The two row updates write IN PLACE into the state's buffers, so a step costs
 * O(K·D) however large C is. In place is only done on a buffer that nothing
 * else references: tfjs shares one buffer between tensors by reference count
 * (tf.variable(t) until t is disposed, tf.clone, reshape, assign), so a state
 * buffer whose backend refCount is above 1 is first copied (once; the caller's
 * `assign` then gives the variable its private copy) and the other holders keep
 * the old values, exactly as with the composite. What refCount cannot see is a
 * zero-copy view: the cpu backend's Slice returns a subarray of a contiguous
 * slice, and dataSync()/data() return the storage itself. Whoever reads a state
 * variable must copy or finish with the values before the next update
 * (row-optimizer.ts states this invariant on ShardState).
 * When in place, the kernel returns the input's own dataId with its refCount
 * raised by one, as tfjs's Identity kernel does.
 *
 * The K×D outputs (SfShardBackward's gradWeight, SfGatherRows) reuse the
 * storage of the same kernel's previous output once that tensor has been
 * disposed: a fresh 200 MB Float32Array costs ~50k page faults (0.1–0.3 s on
 * these VMs) every step. As everywhere on the cpu backends, an array obtained
 * with data()/dataSync() is the tensor's storage: do not use it after
 * disposing the tensor.
 */
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { AdamWConsts, MarginArgs, NativeAddon } from './addon.js';
import { type KernelArgs, type NativeKernel, type TensorInfo, f32, output } from './kernel-util.js';

function i32(backend: MathBackendCPU, t: TensorInfo | undefined): Int32Array | null {
  if (!t || t.dtype !== 'int32') return null;
  const values = backend.data.get(t.dataId)?.values;
  return values instanceof Int32Array ? values : null;
}

/** One kernel output's storage, handed out again once the tensor that held it is disposed. */
class RecycledOutput {
  private last: { dataId: object; values: Float32Array } | null = null;

  /** A Float32Array of `size` (contents undefined when recycled: the kernel must overwrite all of it). */
  take(backend: MathBackendCPU, size: number): Float32Array {
    const l = this.last;
    if (l && l.values.length === size && !backend.data.has(l.dataId)) return l.values;
    return new Float32Array(size);
  }

  keep(info: TensorInfo, values: Float32Array): TensorInfo {
    this.last = values.length >= 1 << 18 ? { dataId: info.dataId, values } : null;
    return info;
  }
}

function required<T>(v: T | null | undefined, what: string): T {
  if (v === null || v === undefined) throw new Error(`${what}: expected float32/int32 tensors on the cpu-native backend`);
  return v;
}

export function rowNorms(addon: NativeAddon): NativeKernel {
  return ({ inputs }, backend) => {
    const x = inputs.x as TensorInfo;
    const xv = f32(backend, x);
    if (!xv || x.shape.length !== 2) return null;
    const [rows, d] = x.shape as [number, number];
    const out = new Float32Array(rows);
    if (rows > 0) addon.rowNorms(xv, rows, d, out);
    return output(backend, [rows, 1], out);
  };
}

interface ShardArgs {
  emb: Float32Array;
  weight: Float32Array;
  weightNorm: Float32Array | null;
  labels: Int32Array;
  n: number;
  k: number;
  d: number;
  margin: MarginArgs;
  chunk: number;
}

function shardArgs({ inputs, attrs }: KernelArgs, backend: MathBackendCPU, name: string): ShardArgs {
  const e = inputs.emb as TensorInfo,
    w = inputs.weight as TensorInfo;
  const [n, d] = e.shape as [number, number];
  const [k, dw] = w.shape as [number, number];
  if (dw !== d) throw new Error(`${name}: weight has ${dw} columns, embeddings ${d}`);
  const weightNorm = inputs.weightNorm ? required(f32(backend, inputs.weightNorm), name) : null;
  if (weightNorm && weightNorm.length !== k) throw new Error(`${name}: ${weightNorm.length} weight norms for ${k} rows`);
  const { margin, chunk } = attrs as unknown as { margin: MarginArgs; chunk: number };
  return {
    emb: required(f32(backend, e), name),
    weight: required(f32(backend, w), name),
    weightNorm,
    labels: required(i32(backend, inputs.labels), name),
    n,
    k,
    d,
    margin,
    chunk,
  };
}

export function shardForward(addon: NativeAddon): NativeKernel {
  return (args, backend) => {
    const a = shardArgs(args, backend, 'SfShardForward');
    const rowMax = new Float32Array(a.n).fill(-Infinity),
      sumExp = new Float32Array(a.n),
      target = new Float32Array(a.n);
    if (a.n > 0 && a.k > 0) addon.shardForward(a.emb, a.weight, a.weightNorm, a.labels, a.n, a.k, a.d, a.margin, a.chunk, rowMax, sumExp, target);
    return [output(backend, [a.n], rowMax), output(backend, [a.n], sumExp), output(backend, [a.n], target)];
  };
}

export function shardBackward(addon: NativeAddon): NativeKernel {
  const recycled = new RecycledOutput();
  return (args, backend) => {
    const a = shardArgs(args, backend, 'SfShardBackward');
    const lse = required(f32(backend, args.inputs.logSumExp), 'SfShardBackward');
    const { rowsTotal } = args.attrs as unknown as { rowsTotal: number };
    const gradEmb = new Float32Array(a.n * a.d);
    // the kernel writes every entry of gradWeight when n, k > 0; an empty batch gives zeros
    const gradWeight = a.n > 0 ? recycled.take(backend, a.k * a.d) : new Float32Array(a.k * a.d);
    if (a.n > 0 && a.k > 0) addon.shardBackward(a.emb, a.weight, a.weightNorm, a.labels, lse, a.n, a.k, a.d, a.margin, rowsTotal, a.chunk, gradEmb, gradWeight);
    return [output(backend, [a.n, a.d], gradEmb), recycled.keep(output(backend, [a.k, a.d], gradWeight), gradWeight)];
  };
}

export function gatherRows(addon: NativeAddon): NativeKernel {
  const recycled = new RecycledOutput();
  return ({ inputs }, backend) => {
    const x = inputs.x as TensorInfo;
    const xv = f32(backend, x),
      index = i32(backend, inputs.index);
    if (!xv || !index || x.shape.length !== 2) return null;
    const [count, d] = x.shape as [number, number];
    const out = recycled.take(backend, index.length * d);
    if (out.length > 0) addon.gatherRows(xv, count, d, index, index.length, out);
    return recycled.keep(output(backend, [index.length, d], out), out);
  };
}

/** The buffer of `t` to update in place (its own, when nothing else holds it; else a private copy). */
function writable(backend: MathBackendCPU, t: TensorInfo, name: string): { info: TensorInfo; values: Float32Array } {
  const values = required(f32(backend, t), name);
  if (backend.refCount(t.dataId) === 1) {
    backend.incRef(t.dataId);
    return { info: { dataId: t.dataId, shape: t.shape, dtype: 'float32' }, values };
  }
  const copy = values.slice();
  return { info: output(backend, t.shape, copy), values: copy };
}

function rowUpdateShape(inputs: KernelArgs['inputs'], backend: MathBackendCPU, name: string): { count: number; d: number; grad: Float32Array; index: Int32Array } {
  const w = inputs.weight as TensorInfo,
    g = inputs.grad as TensorInfo;
  const [count, d] = w.shape as [number, number];
  const index = required(i32(backend, inputs.index), name);
  if (g.shape[0] !== index.length || g.shape[1] !== d) throw new Error(`${name}: gradient [${g.shape.join(',')}] for ${index.length} rows of ${d}`);
  return { count, d, grad: required(f32(backend, g), name), index };
}

export function rowSgdUpdate(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const { count, d, grad, index } = rowUpdateShape(inputs, backend, 'SfRowSgdUpdate');
    const w = writable(backend, inputs.weight as TensorInfo, 'SfRowSgdUpdate');
    const v = writable(backend, inputs.momentum as TensorInfo, 'SfRowSgdUpdate');
    const { lr, momentum, weightDecay } = attrs as unknown as { lr: number; momentum: number; weightDecay: number };
    if (index.length > 0) addon.rowSgdUpdate(w.values, v.values, grad, index, count, index.length, d, lr, momentum, weightDecay);
    return [w.info, v.info];
  };
}

export function rowAdamWUpdate(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const { count, d, grad, index } = rowUpdateShape(inputs, backend, 'SfRowAdamWUpdate');
    const w = writable(backend, inputs.weight as TensorInfo, 'SfRowAdamWUpdate');
    const m = writable(backend, inputs.expAvg as TensorInfo, 'SfRowAdamWUpdate');
    const v = writable(backend, inputs.expAvgSq as TensorInfo, 'SfRowAdamWUpdate');
    const { consts } = attrs as unknown as { consts: AdamWConsts };
    if (index.length > 0) addon.rowAdamWUpdate(w.values, m.values, v.values, grad, index, count, index.length, d, consts);
    return [w.info, m.info, v.info];
  };
}
