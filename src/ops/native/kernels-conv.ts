/**
 * Convolutions (NHWC, dilation 1): ordinary, fused, depthwise and grouped, forward
 * and both backprops. Geometry (output size, padding) always comes from tfjs's own
 * computeConv2DInfo, so 'same'/'valid'/numeric/explicit padding and dimRoundingMode
 * mean exactly what they mean for the stock kernels.
 */
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { tf } from '../tf.js';
import type { ConvGeometry, NativeAddon } from './addon.js';
import { ACTIVATIONS, type KernelArgs, type NativeKernel, type TensorInfo, f32, geometry, lineUp, output, sizeOf } from './kernel-util.js';

type Shape4 = [number, number, number, number];
type Pad = 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;

interface ConvAttrs {
  strides: number | [number, number];
  pad: Pad;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: string;
  leakyreluAlpha?: number;
  inputShape?: Shape4;
  filterShape?: Shape4;
}

type ConvCall = (x: Float32Array, w: Float32Array, y: Float32Array, g: ConvGeometry) => void;

/** Conv geometry, or null for layouts we leave to the stock kernel (NCHW, dilation > 1). */
function convInfo(xShape: number[], wShape: number[], a: ConvAttrs, depthwise: boolean): tf.backend_util.Conv2DInfo | null {
  if (a.dataFormat === 'NCHW' || xShape.length !== 4 || wShape.length !== 4) return null;
  const info = tf.backend_util.computeConv2DInfo(xShape as Shape4, wShape as Shape4, a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode, depthwise, 'channelsLast');
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  return info;
}

/** Runs one conv-like addon call writing a fresh output of `outShape`. */
function run(backend: MathBackendCPU, call: ConvCall, a: TensorInfo, b: TensorInfo, outShape: number[], g: ConvGeometry): TensorInfo | null {
  const av = f32(backend, a),
    bv = f32(backend, b);
  if (!av || !bv) return null;
  const out = new Float32Array(sizeOf(outShape));
  if (out.length > 0 && sizeOf(a.shape) > 0 && sizeOf(b.shape) > 0) call(av, bv, out, g);
  return output(backend, outShape, out);
}

/** Bias + activation in place on a conv output; false if the fused attrs are not covered. */
function fusedEpilogue(addon: NativeAddon, backend: MathBackendCPU, y: TensorInfo, inputs: KernelArgs['inputs'], a: ConvAttrs): boolean {
  const act = ACTIVATIONS[a.activation ?? 'linear'];
  if (act === undefined) return false;
  const bias = lineUp(backend, inputs.bias, y.shape);
  const prelu = act === ACTIVATIONS.prelu ? lineUp(backend, inputs.preluActivationWeights, y.shape) : { mode: 0, values: null };
  if (!bias || !prelu || (act === ACTIVATIONS.prelu && !prelu.values)) return false;
  const yv = f32(backend, y)!;
  const cols = y.shape[3]!;
  addon.epilogue(yv, cols > 0 ? yv.length / cols : 0, cols, bias.values, bias.mode, act, a.leakyreluAlpha ?? 0.2, prelu.values, prelu.mode);
  return true;
}

/** Fused kernels check their epilogue first so a fallback never wastes a convolution. */
function fusedCovered(backend: MathBackendCPU, inputs: KernelArgs['inputs'], a: ConvAttrs, outShape: number[]): boolean {
  const act = ACTIVATIONS[a.activation ?? 'linear'];
  if (act === undefined) return false;
  if (!lineUp(backend, inputs.bias, outShape)) return false;
  if (act === ACTIVATIONS.prelu) return lineUp(backend, inputs.preluActivationWeights, outShape)?.values != null;
  return true;
}

/** A forward conv (x, filter → y), ordinary or depthwise; with `fused`, bias and activation follow in place. */
function forwardKernel(addon: NativeAddon, call: ConvCall, depthwise: boolean, fused: boolean): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as ConvAttrs;
    const { x, filter } = inputs as { x: TensorInfo; filter: TensorInfo };
    const info = convInfo(x.shape, filter.shape, a, depthwise);
    if (!info || (fused && !fusedCovered(backend, inputs, a, info.outShape))) return null;
    const y = run(backend, call, x, filter, info.outShape, geometry(info, 1));
    if (!fused) return y;
    return y && fusedEpilogue(addon, backend, y, inputs, a) ? y : null;
  };
}

export const conv2D = (addon: NativeAddon): NativeKernel => forwardKernel(addon, addon.conv2d, false, false);
export const fusedConv2D = (addon: NativeAddon): NativeKernel => forwardKernel(addon, addon.conv2d, false, true);
export const depthwiseConv2d = (addon: NativeAddon): NativeKernel => forwardKernel(addon, addon.depthwise, true, false);
export const fusedDepthwiseConv2d = (addon: NativeAddon): NativeKernel => forwardKernel(addon, addon.depthwise, true, true);

export function conv2DBackpropInput(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as ConvAttrs;
    const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
    const info = convInfo(a.inputShape!, filter.shape, { ...a, dilations: 1 }, false);
    return info && run(backend, addon.conv2dBackpropInput, dy, filter, info.inShape, geometry(info, 1));
  };
}

export function conv2DBackpropFilter(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as ConvAttrs;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const info = convInfo(x.shape, a.filterShape!, { ...a, dilations: 1 }, false);
    return info && run(backend, addon.conv2dBackpropFilter, x, dy, info.filterShape, geometry(info, 1));
  };
}

export function depthwiseBackpropInput(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as ConvAttrs;
    const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
    const info = convInfo(a.inputShape!, filter.shape, a, true);
    return info && run(backend, addon.depthwiseBackpropInput, dy, filter, info.inShape, geometry(info, 1));
  };
}

export function depthwiseBackpropFilter(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as ConvAttrs;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const info = convInfo(x.shape, a.filterShape!, a, true);
    return info && run(backend, addon.depthwiseBackpropFilter, x, dy, info.filterShape, geometry(info, 1));
  };
}

// ---- grouped convolution (src/ops/grouped-conv.ts) -------------------------------------

export const GROUPED_CONV = 'SfGroupedConv2D';
export const GROUPED_CONV_BACKPROP_INPUT = 'SfGroupedConv2DBackpropInput';
export const GROUPED_CONV_BACKPROP_FILTER = 'SfGroupedConv2DBackpropFilter';

interface GroupedAttrs {
  strides: number;
  pad: 'same' | 'valid' | number;
  groups: number;
  inputShape?: Shape4;
  filterShape?: Shape4;
}

/** Geometry of a grouped conv; filter [kh, kw, c/groups, cout]. Throws on inconsistent shapes. */
function groupedInfo(xShape: number[], wShape: number[], a: GroupedAttrs): tf.backend_util.Conv2DInfo {
  const info = tf.backend_util.computeConv2DInfo(xShape as Shape4, wShape as Shape4, a.strides, 1, a.pad, undefined, false, 'channelsLast');
  const g = a.groups;
  if (!(g >= 1) || info.inChannels % g !== 0 || info.outChannels % g !== 0 || wShape[2] !== info.inChannels / g)
    throw new Error(`${GROUPED_CONV}: x ${JSON.stringify(xShape)} and filter ${JSON.stringify(wShape)} do not fit ${g} groups`);
  return info;
}

function required(r: TensorInfo | null, kernel: string): TensorInfo {
  if (!r) throw new Error(`${kernel}: float32 inputs on the cpu-native backend required`);
  return r;
}

export function groupedConv2d(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as GroupedAttrs;
    const { x, filter } = inputs as { x: TensorInfo; filter: TensorInfo };
    const info = groupedInfo(x.shape, filter.shape, a);
    return required(run(backend, addon.conv2d, x, filter, info.outShape, geometry(info, a.groups)), GROUPED_CONV);
  };
}

export function groupedConv2dBackpropInput(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as GroupedAttrs;
    const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
    const info = groupedInfo(a.inputShape!, filter.shape, a);
    return required(run(backend, addon.conv2dBackpropInput, dy, filter, info.inShape, geometry(info, a.groups)), GROUPED_CONV_BACKPROP_INPUT);
  };
}

export function groupedConv2dBackpropFilter(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const a = attrs as unknown as GroupedAttrs;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const info = groupedInfo(x.shape, a.filterShape!, a);
    return required(run(backend, addon.conv2dBackpropFilter, x, dy, a.filterShape!, geometry(info, a.groups)), GROUPED_CONV_BACKPROP_FILTER);
  };
}

/** The grouped conv's gradient, as the two native backprop kernels. */
export const groupedConvGradient: tf.GradConfig = {
  kernelName: GROUPED_CONV,
  inputsToSave: ['x', 'filter'],
  gradFunc: (dy, saved, attrs) => {
    const [x, filter] = saved as [tf.Tensor4D, tf.Tensor4D];
    const { strides, pad, groups } = attrs as unknown as GroupedAttrs;
    const base = { strides, pad, groups };
    return {
      x: () => tf.engine().runKernel(GROUPED_CONV_BACKPROP_INPUT, { dy: dy as tf.Tensor, filter }, { ...base, inputShape: x.shape }) as tf.Tensor,
      filter: () => tf.engine().runKernel(GROUPED_CONV_BACKPROP_FILTER, { x, dy: dy as tf.Tensor }, { ...base, filterShape: filter.shape }) as tf.Tensor,
    };
  },
};
