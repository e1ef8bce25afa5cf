/**
 * Grouped convolutions with few channels per group (at most GROUPED_SMALL_MAX in
 * and out, e.g. MobileFaceNet's 3×3 with 64 groups of 2) as direct loops
 * (depthwise.cc) instead of the im2col + per-group GEMM of kernels-conv.ts, which
 * at 2 channels per group multiplies 18×2 matrices. Each kernel here wraps the
 * general one: a shape it does not take goes there unchanged.
 */
import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { type NativeKernel, type TensorInfo, f32, geometry, output, sizeOf, uninitialised } from './kernel-util.js';

/** kernels.h's kGroupedSmallMax. */
export const GROUPED_SMALL_MAX = 4;

type Shape4 = [number, number, number, number];

interface GroupedAttrs {
  strides: number;
  pad: 'same' | 'valid' | number;
  groups: number;
  inputShape?: Shape4;
  filterShape?: Shape4;
}

/** Calls the direct kernels took (tests check that the shapes meant for them got there). */
export const groupedSmallCalls = { count: 0 };

type Call = (a: Float32Array, b: Float32Array, out: Float32Array, g: ReturnType<typeof geometry>) => void;

/** The geometry when the direct kernels take it: NHWC, groups > 1 with ≤ GROUPED_SMALL_MAX channels per group each way. */
function smallInfo(xShape: number[] | undefined, wShape: number[] | undefined, a: GroupedAttrs): tf.backend_util.Conv2DInfo | null {
  if (!xShape || !wShape || xShape.length !== 4 || wShape.length !== 4 || !(a.groups > 1)) return null;
  const [kh, , perGroup, cout] = wShape as Shape4;
  if (xShape[3] !== perGroup * a.groups || cout % a.groups !== 0) return null;
  if (perGroup > GROUPED_SMALL_MAX || cout / a.groups > GROUPED_SMALL_MAX || kh > 64) return null;
  return tf.backend_util.computeConv2DInfo(xShape as Shape4, wShape as Shape4, a.strides, 1, a.pad, undefined, false, 'channelsLast');
}

function direct(
  call: Call,
  shapes: (attrs: GroupedAttrs, inputs: Record<string, TensorInfo>) => { a: TensorInfo; b: TensorInfo; x?: number[]; w?: number[]; out: 'x' | 'y' | 'w' },
  general: NativeKernel,
): NativeKernel {
  return (args, backend) => {
    const attrs = args.attrs as unknown as GroupedAttrs;
    const s = shapes(attrs, args.inputs as Record<string, TensorInfo>);
    const info = smallInfo(s.x, s.w, attrs);
    const av = f32(backend, s.a),
      bv = f32(backend, s.b);
    if (!info || !av || !bv) return general(args, backend);
    const outShape = s.out === 'y' ? info.outShape : s.out === 'x' ? info.inShape : s.w!;
    groupedSmallCalls.count++;
    const out = uninitialised(sizeOf(outShape));
    if (out.length > 0) {
      if (av.length > 0 && bv.length > 0) call(av, bv, out, geometry(info, attrs.groups));
      else out.fill(0);
    }
    return output(backend, outShape, out);
  };
}

export const groupedSmall = (addon: NativeAddon, general: NativeKernel): NativeKernel =>
  direct(addon.groupedSmall, (_, { x, filter }) => ({ a: x!, b: filter!, x: x?.shape, w: filter?.shape, out: 'y' }), general);

export const groupedSmallBackpropInput = (addon: NativeAddon, general: NativeKernel): NativeKernel =>
  direct(addon.groupedSmallBackpropInput, (a, { dy, filter }) => ({ a: dy!, b: filter!, x: a.inputShape, w: filter?.shape, out: 'x' }), general);

export const groupedSmallBackpropFilter = (addon: NativeAddon, general: NativeKernel): NativeKernel =>
  direct(addon.groupedSmallBackpropFilter, (a, { x, dy }) => ({ a: x!, b: dy!, x: x?.shape, w: a.filterShape, out: 'w' }), general);
