/**
 * Grouped 2-D convolution (NHWC), the building block of VarGFaceNet's variable
 * group convolution (8 input channels per group) and MobileFaceNet's grouped
 * 3×3. TensorFlow.js has no grouped convolution, so it is expressed here once:
 *
 *  - when the backend has the native kernel `SfGroupedConv2D` (cpu-native), it
 *    runs as one first-class kernel with native backward kernels;
 *  - otherwise as a depthwise convolution with channel multiplier
 *    `outPerGroup` followed by a sum over each group's input channels. This does
 *    exactly the grouped conv's multiply-adds (no block-diagonal zero padding),
 *    and every piece has a stock gradient, so it runs on any backend (GPU too).
 *
 * Filter layout: [kh, kw, inPerGroup, outChannels], like tf.conv2d's filter with
 * the input axis restricted to one group; output channel o belongs to group
 * floor(o / outPerGroup).
 */
import { tf } from './tf.js';

export type Padding = 'same' | 'valid' | number;

export interface GroupedConvArgs {
  strides: number;
  pad: Padding;
  groups: number;
}

const GROUPED_CONV_KERNEL = 'SfGroupedConv2D';

export function groupedConv2d(x: tf.Tensor4D, filter: tf.Tensor4D, { strides, pad, groups }: GroupedConvArgs): tf.Tensor4D {
  const cin = x.shape[3];
  const [kh, kw, inPerGroup, cout] = filter.shape;
  if (cin % groups !== 0) throw new Error(`groupedConv2d: ${cin} input channels not divisible by ${groups} groups`);
  if (cout % groups !== 0) throw new Error(`groupedConv2d: ${cout} output channels not divisible by ${groups} groups`);
  if (inPerGroup !== cin / groups) throw new Error(`groupedConv2d: filter has ${inPerGroup} input channels per group, expected ${cin / groups}`);
  if (groups === 1) return tf.conv2d(x, filter, strides, pad as 'same' | 'valid');
  if (tf.getKernel(GROUPED_CONV_KERNEL, tf.getBackend()) !== undefined) {
    return tf.engine().runKernel(GROUPED_CONV_KERNEL, { x, filter }, { strides, pad, groups }) as tf.Tensor4D;
  }
  return groupedConvComposite(x, filter, strides, pad, groups, kh, kw, inPerGroup, cout);
}

function groupedConvComposite(x: tf.Tensor4D, filter: tf.Tensor4D, strides: number, pad: Padding, groups: number, kh: number, kw: number, inPerGroup: number, cout: number): tf.Tensor4D {
  return tf.tidy(() => {
    const outPerGroup = cout / groups;
    // filter [kh,kw,S,G*O] -> [kh,kw,S,G,O] -> [kh,kw,G,S,O] -> depthwise [kh,kw,G*S,O]
    const dwFilter = filter
      .reshape([kh, kw, inPerGroup, groups, outPerGroup])
      .transpose([0, 1, 3, 2, 4])
      .reshape([kh, kw, groups * inPerGroup, outPerGroup]) as tf.Tensor4D;
    const padArg =
      typeof pad === 'number'
        ? ([
            [0, 0],
            [pad, pad],
            [pad, pad],
            [0, 0],
          ] as [[number, number], [number, number], [number, number], [number, number]])
        : pad;
    const y = tf.depthwiseConv2d(x, dwFilter, strides, padArg as 'same' | 'valid');
    // depthwise output channel (c, o) = c*O + o with c = g*S + s; sum over s.
    const [n, h, w] = y.shape;
    return y.reshape([n, h, w, groups, inPerGroup, outPerGroup]).sum(4).reshape([n, h, w, cout]) as tf.Tensor4D;
  });
}

/** Reference: one tf.conv2d per group, concatenated. Slow; for tests only. */
export function groupedConv2dPerGroup(x: tf.Tensor4D, filter: tf.Tensor4D, { strides, pad, groups }: GroupedConvArgs): tf.Tensor4D {
  return tf.tidy(() => {
    const xs = tf.split(x, groups, 3);
    const fs = tf.split(filter, groups, 3);
    const ys = xs.map((xi, g) => tf.conv2d(xi as tf.Tensor4D, fs[g] as tf.Tensor4D, strides, pad as 'same' | 'valid'));
    return tf.concat(ys, 3) as tf.Tensor4D;
  });
}
