/**
 * Native kernels of src/ops/norm-act.ts: BatchNorm with batch statistics
 * (optionally + PReLU) and PReLU, forward and backward, each one call into
 * norm-act.cc over x viewed as [rows, C]. norm-act.ts dispatches here only for
 * float32 tensors with per-channel γ/β/α, so a null (uncovered) here is a bug.
 */
import type { NativeAddon } from './addon.js';
import { type NativeKernel, type TensorInfo, f32, output, uninitialised } from './kernel-util.js';

/** [rows, c] of a channels-last tensor against per-channel weights of `c` values, or null. */
function view(x: TensorInfo, c: number): { rows: number; c: number } | null {
  const size = x.shape.reduce((a, b) => a * b, 1);
  if (size === 0 || c < 1 || size % c !== 0) return null;
  return { rows: size / c, c };
}

/** SfBatchNormTrain (withAlpha false) / SfBatchNormPrelu: [y, mean, variance]. */
export function batchNormTrain(addon: NativeAddon, withAlpha: boolean): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const { x, gamma, beta, alpha } = inputs as Record<string, TensorInfo>;
    const xv = f32(backend, x),
      gv = f32(backend, gamma),
      bv = f32(backend, beta);
    const av = withAlpha ? f32(backend, alpha) : null;
    if (!x || x.shape.length < 2 || !xv || !gv || !bv || (withAlpha && !av)) return null;
    const v = view(x, x.shape[x.shape.length - 1]!);
    if (!v || gv.length !== v.c || bv.length !== v.c || (av && av.length !== v.c)) return null;
    const y = uninitialised(xv.length),
      mean = new Float32Array(v.c),
      variance = new Float32Array(v.c);
    addon.bnForward(xv, v.rows, v.c, gv, bv, av, (attrs as { epsilon: number }).epsilon, y, mean, variance);
    return [output(backend, x.shape, y), output(backend, [v.c], mean), output(backend, [v.c], variance)];
  };
}

/** SfBatchNormTrainBackprop: [dx, dgamma, dbeta] and, when alpha is given, dalpha. */
export function batchNormTrainBackprop(addon: NativeAddon): NativeKernel {
  return ({ inputs, attrs }, backend) => {
    const { x, gamma, beta, alpha, mean, variance, dy, dmean, dvariance } = inputs as Record<string, TensorInfo | undefined>;
    if (!x || !gamma || !beta || !mean || !variance || !dy) return null;
    const xv = f32(backend, x),
      gv = f32(backend, gamma),
      bv = f32(backend, beta),
      mv = f32(backend, mean),
      vv = f32(backend, variance),
      dyv = f32(backend, dy);
    const av = alpha ? f32(backend, alpha) : null;
    const dmv = dmean ? f32(backend, dmean) : null,
      dvv = dvariance ? f32(backend, dvariance) : null;
    if (!xv || !gv || !bv || !mv || !vv || !dyv || (alpha && !av) || (dmean && !dmv) || (dvariance && !dvv)) return null;
    const v = view(x, x.shape[x.shape.length - 1]!);
    if (!v || dyv.length !== xv.length || [gv, bv, mv, vv, av, dmv, dvv].some((t) => t && t.length !== v.c)) return null;
    const dx = uninitialised(xv.length),
      dgamma = new Float32Array(v.c),
      dbeta = new Float32Array(v.c);
    const dalpha = av ? new Float32Array(v.c) : null;
    addon.bnBackward(xv, dyv, v.rows, v.c, gv, bv, av, mv, vv, (attrs as { epsilon: number }).epsilon, dmv, dvv, dx, dgamma, dbeta, dalpha);
    const outs = [output(backend, x.shape, dx), output(backend, gamma.shape, dgamma), output(backend, beta.shape, dbeta)];
    if (alpha && dalpha) outs.push(output(backend, alpha.shape, dalpha));
    return outs;
  };
}

/** α per channel (last axis) or one α for everything. */
function preluView(x: TensorInfo, alphaLength: number): { rows: number; c: number } | null {
  const c = alphaLength === 1 ? 1 : x.shape[x.shape.length - 1]!;
  if (alphaLength !== 1 && alphaLength !== c) return null;
  return view(x, c);
}

/** SfPrelu: y = x < 0 ? α·x : x. */
export function prelu(addon: NativeAddon): NativeKernel {
  return ({ inputs }, backend) => {
    const { x, alpha } = inputs as Record<string, TensorInfo>;
    const xv = f32(backend, x),
      av = f32(backend, alpha);
    if (!xv || !av || x.shape.length < 1) return null;
    const v = preluView(x, av.length);
    if (!v) return null;
    const y = uninitialised(xv.length);
    addon.preluForward(xv, v.rows, v.c, av, y);
    return output(backend, x.shape, y);
  };
}

/** SfPreluBackprop: [dx, dalpha]. */
export function preluBackprop(addon: NativeAddon): NativeKernel {
  return ({ inputs }, backend) => {
    const { x, alpha, dy } = inputs as Record<string, TensorInfo>;
    const xv = f32(backend, x),
      av = f32(backend, alpha),
      dyv = f32(backend, dy);
    if (!xv || !av || !dyv || dyv.length !== xv.length) return null;
    const v = preluView(x, av.length);
    if (!v) return null;
    const dx = uninitialised(xv.length),
      dalpha = new Float32Array(av.length);
    addon.preluBackward(xv, dyv, v.rows, v.c, av, dx, dalpha);
    return [output(backend, x.shape, dx), output(backend, alpha.shape, dalpha)];
  };
}
