/**
 * Shape-only execution of a network description: the same `forward` code as
 * the real model, on shapes instead of tensors. It checks every layer's input
 * channels, computes every output shape, and records, per layer, the
 * parameters and the multiply-accumulates (MACs) of one sample.
 *
 * MAC convention (the one docs/methods.md#cost-counting and arcface_torch's README use):
 *  - Conv2d: H_out·W_out·C_out·k²·(C_in/groups); Linear: in·out;
 *  - biases, BatchNorm, PReLU, additions, sigmoid, pooling: 0 (they are
 *    element-wise, not multiply-accumulates).
 */
import { numel, type BatchNorm, type Conv2d, type Layer, type Linear, type PReLU, type Runner, type TensorSpec } from './module.js';

/** A shape with batch size 1: [1, H, W, C] or [1, D]. */
export type Shape = readonly number[];

export interface LayerCost {
  name: string;
  kind: Layer['kind'];
  outShape: number[];
  /** Parameters (not buffers) of this layer. */
  params: number;
  macs: number;
}

export class ShapeRunner implements Runner<Shape> {
  readonly records: LayerCost[] = [];

  conv(l: Conv2d, x: Shape): Shape {
    const [n, h, w, c] = expectRank(l.name, x, 4);
    expectChannels(l.name, c, l.inChannels);
    const ho = Math.floor((h + 2 * l.pad - l.kernel) / l.stride) + 1;
    const wo = Math.floor((w + 2 * l.pad - l.kernel) / l.stride) + 1;
    if (ho < 1 || wo < 1) throw new Error(`${l.name}: ${h}×${w} input too small for a ${l.kernel}×${l.kernel} kernel`);
    const out = [n, ho, wo, l.outChannels];
    this.record(l, out, ho * wo * l.outChannels * l.kernel * l.kernel * (l.inChannels / l.groups));
    return out;
  }

  batchNorm(l: BatchNorm, x: Shape): Shape {
    expectChannels(l.name, x[x.length - 1]!, l.channels);
    this.record(l, [...x], 0);
    return x;
  }

  prelu(l: PReLU, x: Shape): Shape {
    expectChannels(l.name, x[x.length - 1]!, l.channels);
    this.record(l, [...x], 0);
    return x;
  }

  linear(l: Linear, x: Shape): Shape {
    const [n, d] = expectRank(l.name, x, 2);
    expectChannels(l.name, d, l.inFeatures);
    const out = [n, l.outFeatures];
    this.record(l, out, l.inFeatures * l.outFeatures);
    return out;
  }

  add(a: Shape, b: Shape): Shape {
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) throw new Error(`add: shapes [${a}] and [${b}] differ`);
    return a;
  }

  sigmoid(x: Shape): Shape {
    return x;
  }

  scaleChannels(x: Shape, gate: Shape): Shape {
    if (gate.length !== 4 || gate[1] !== 1 || gate[2] !== 1 || gate[3] !== x[3]) throw new Error(`scaleChannels: gate [${gate}] does not fit [${x}]`);
    return x;
  }

  globalAvgPool(x: Shape): Shape {
    const [n, , , c] = expectRank('globalAvgPool', x, 4);
    return [n, 1, 1, c];
  }

  flatten(x: Shape): Shape {
    const [n, h, w, c] = expectRank('flatten', x, 4);
    return [n, h * w * c];
  }

  private record(l: Layer, outShape: number[], macs: number): void {
    const params = l
      .specs()
      .filter((s: TensorSpec) => s.role === 'param')
      .reduce((a, s) => a + numel(s.shape), 0);
    this.records.push({ name: l.name, kind: l.kind, outShape, params, macs });
  }
}

function expectRank(name: string, x: Shape, rank: number): number[] {
  if (x.length !== rank) throw new Error(`${name}: expected a rank-${rank} input, got [${x}]`);
  return [...x];
}

function expectChannels(name: string, got: number, want: number): void {
  if (got !== want) throw new Error(`${name}: expected ${want} input channels, got ${got}`);
}
