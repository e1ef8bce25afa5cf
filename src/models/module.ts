/**
 * A minimal, explicit module system for the backbones.
 *
 * A network is described once, as a tree of blocks whose leaves are four layer
 * kinds (Conv2d, BatchNorm, PReLU, Linear). A layer holds only its
 * configuration and the *specification* of its persistent tensors (name, shape,
 * initialiser, trainable, weight decay); it owns no tensors. A block's
 * `forward` is written against the small `Runner` interface, and the same code
 * runs two ways:
 *
 *  - `TensorRunner` (tensor-runner.ts): real tf.js ops on real variables;
 *  - `ShapeRunner` (trace.ts): shapes only, counting parameters and
 *    multiply-adds, so the cost report can never drift from the model.
 *
 * Layouts: activations NHWC; conv filters [kh, kw, inPerGroup, out] (tf.conv2d
 * with the input axis restricted to one group, as src/ops/grouped-conv.ts);
 * Linear weights [in, out] (y = x·W + b).
 */

/** How a tensor is initialised; drawn from a seeded RNG keyed by the tensor's name. */
export type Init = { kind: 'normal'; std: number } | { kind: 'uniform'; bound: number } | { kind: 'constant'; value: number };

/** One persistent tensor of a layer. */
export interface TensorSpec {
  /** Full dotted name, e.g. `stage2.block0.conv1.weight`. */
  name: string;
  shape: number[];
  init: Init;
  /**
   * 'param': a parameter (counted in the parameter total, maybe frozen);
   * 'buffer': state that is not a parameter (BatchNorm running mean/var).
   */
  role: 'param' | 'buffer';
  /** Receives gradients and optimizer updates. Buffers and frozen γ are false. */
  trainable: boolean;
  /** Weight decay applies. False for BatchNorm γ/β and for biases. */
  decay: boolean;
}

function joinName(prefix: string, name: string): string {
  return prefix === '' ? name : `${prefix}.${name}`;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Conv2d: bias-free unless asked; padding is symmetric (PyTorch `padding=p`). */
export interface Conv2dConfig {
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride?: number;
  pad?: number;
  groups?: number;
  bias?: boolean;
  init: Init;
}

export class Conv2d {
  readonly kind = 'conv2d';
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernel: number;
  readonly stride: number;
  readonly pad: number;
  readonly groups: number;
  readonly bias: boolean;
  readonly init: Init;

  constructor(
    readonly name: string,
    c: Conv2dConfig,
  ) {
    this.inChannels = c.inChannels;
    this.outChannels = c.outChannels;
    this.kernel = c.kernel;
    this.stride = c.stride ?? 1;
    this.pad = c.pad ?? 0;
    this.groups = c.groups ?? 1;
    this.bias = c.bias ?? false;
    this.init = c.init;
    if (this.inChannels % this.groups !== 0 || this.outChannels % this.groups !== 0) throw new Error(`${name}: channels ${this.inChannels}→${this.outChannels} not divisible by ${this.groups} groups`);
  }

  get weightShape(): [number, number, number, number] {
    return [this.kernel, this.kernel, this.inChannels / this.groups, this.outChannels];
  }

  specs(): TensorSpec[] {
    const s: TensorSpec[] = [{ name: `${this.name}.weight`, shape: this.weightShape, init: this.init, role: 'param', trainable: true, decay: true }];
    if (this.bias) s.push({ name: `${this.name}.bias`, shape: [this.outChannels], init: { kind: 'constant', value: 0 }, role: 'param', trainable: true, decay: false });
    return s;
  }
}

/**
 * BatchNorm over the last axis (2-D [B, C] or 4-D NHWC). PyTorch conventions:
 * training mode normalises with the biased batch variance and updates
 * `running = (1 − momentum)·running + momentum·batch`, using the unbiased
 * variance for `running_var`; eval mode uses the running statistics.
 */
export interface BatchNormConfig {
  channels: number;
  eps: number;
  /** PyTorch convention (0.1 = MXNet momentum 0.9). */
  momentum?: number;
  /** γ learnable (default) or frozen at 1 (IResNet's output BN1d, MXNet `fix_gamma`). */
  frozenGamma?: boolean;
}

export class BatchNorm {
  readonly kind = 'batchnorm';
  readonly channels: number;
  readonly eps: number;
  readonly momentum: number;
  readonly frozenGamma: boolean;

  constructor(
    readonly name: string,
    c: BatchNormConfig,
  ) {
    this.channels = c.channels;
    this.eps = c.eps;
    this.momentum = c.momentum ?? 0.1;
    this.frozenGamma = c.frozenGamma ?? false;
  }

  specs(): TensorSpec[] {
    const c = [this.channels];
    const one: Init = { kind: 'constant', value: 1 };
    const zero: Init = { kind: 'constant', value: 0 };
    return [
      { name: `${this.name}.gamma`, shape: c, init: one, role: 'param', trainable: !this.frozenGamma, decay: false },
      { name: `${this.name}.beta`, shape: c, init: zero, role: 'param', trainable: true, decay: false },
      { name: `${this.name}.runningMean`, shape: c, init: zero, role: 'buffer', trainable: false, decay: false },
      { name: `${this.name}.runningVar`, shape: c, init: one, role: 'buffer', trainable: false, decay: false },
    ];
  }
}

/**
 * PReLU with one slope per channel, initialised at 0.25 (PyTorch default).
 * Weight decay applies to it: the issue excludes only BatchNorm and biases
 * (arcface_torch itself decays every parameter).
 */
export class PReLU {
  readonly kind = 'prelu';
  constructor(
    readonly name: string,
    readonly channels: number,
  ) {}

  specs(): TensorSpec[] {
    return [{ name: `${this.name}.alpha`, shape: [this.channels], init: { kind: 'constant', value: 0.25 }, role: 'param', trainable: true, decay: true }];
  }
}

export interface LinearConfig {
  inFeatures: number;
  outFeatures: number;
  bias?: boolean;
  init: Init;
  biasInit?: Init;
}

export class Linear {
  readonly kind = 'linear';
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly bias: boolean;
  readonly init: Init;
  readonly biasInit: Init;

  constructor(
    readonly name: string,
    c: LinearConfig,
  ) {
    this.inFeatures = c.inFeatures;
    this.outFeatures = c.outFeatures;
    this.bias = c.bias ?? true;
    this.init = c.init;
    this.biasInit = c.biasInit ?? { kind: 'constant', value: 0 };
  }

  specs(): TensorSpec[] {
    const s: TensorSpec[] = [{ name: `${this.name}.weight`, shape: [this.inFeatures, this.outFeatures], init: this.init, role: 'param', trainable: true, decay: true }];
    if (this.bias) s.push({ name: `${this.name}.bias`, shape: [this.outFeatures], init: this.biasInit, role: 'param', trainable: true, decay: false });
    return s;
  }
}

export type Layer = Conv2d | BatchNorm | PReLU | Linear;

/**
 * The operations a block's `forward` may use. `T` is a tensor (real run) or a
 * shape (trace). Layers carry their own names, so a runner can look up their
 * tensors and label what it records.
 */
export interface Runner<T> {
  conv(layer: Conv2d, x: T): T;
  batchNorm(layer: BatchNorm, x: T): T;
  prelu(layer: PReLU, x: T): T;
  /**
   * prelu(act, batchNorm(bn, x)) in one step, for runners that can fuse it
   * (TensorRunner: one native kernel in training mode). Blocks call it through
   * `bnPrelu`, which falls back to the two calls for runners without it.
   */
  batchNormPrelu?(bn: BatchNorm, act: PReLU, x: T): T;
  linear(layer: Linear, x: T): T;
  add(a: T, b: T): T;
  sigmoid(x: T): T;
  /** x [B,H,W,C] times a per-sample channel gate [B,1,1,C] (squeeze-excitation). */
  scaleChannels(x: T, gate: T): T;
  /** [B,H,W,C] → [B,1,1,C]. */
  globalAvgPool(x: T): T;
  /** [B,H,W,C] → [B,H·W·C] (NHWC order). */
  flatten(x: T): T;
}

/** BN → PReLU, fused where the runner can. */
export function bnPrelu<T>(r: Runner<T>, bn: BatchNorm, act: PReLU, x: T): T {
  return r.batchNormPrelu ? r.batchNormPrelu(bn, act, x) : r.prelu(act, r.batchNorm(bn, x));
}

/** Anything with a forward pass: the whole net or one of its blocks. */
export interface Block {
  forward<T>(r: Runner<T>, x: T): T;
}

/** x through `blocks` in order. */
export function chain<T>(r: Runner<T>, blocks: readonly Block[], x: T): T {
  return blocks.reduce((y, b) => b.forward(r, y), x);
}

/**
 * A whole network split at its last spatial feature map (docs/methods.md#adversarial-training: F and R):
 * `forward(x) = head(features(x))`, features NHWC [B, H, W, C], head → [B, D].
 */
export interface FeatureHeadBlock extends Block {
  features<T>(r: Runner<T>, x: T): T;
  head<T>(r: Runner<T>, f: T): T;
}

export function isFeatureHeadBlock(b: Block): b is FeatureHeadBlock {
  return typeof (b as Partial<FeatureHeadBlock>).features === 'function' && typeof (b as Partial<FeatureHeadBlock>).head === 'function';
}

/**
 * Names layers by their place in the tree and records them in creation order.
 * `scope.sub('stage2').sub('block0').conv('conv1', …)` makes the layer
 * `stage2.block0.conv1`, whose weight is `stage2.block0.conv1.weight`.
 */
export class Scope {
  constructor(
    readonly prefix: string = '',
    readonly layers: Layer[] = [],
  ) {}

  sub(name: string): Scope {
    return new Scope(joinName(this.prefix, name), this.layers);
  }

  conv(name: string, c: Conv2dConfig): Conv2d {
    return this.add(new Conv2d(joinName(this.prefix, name), c));
  }

  batchNorm(name: string, c: BatchNormConfig): BatchNorm {
    return this.add(new BatchNorm(joinName(this.prefix, name), c));
  }

  prelu(name: string, channels: number): PReLU {
    return this.add(new PReLU(joinName(this.prefix, name), channels));
  }

  linear(name: string, c: LinearConfig): Linear {
    return this.add(new Linear(joinName(this.prefix, name), c));
  }

  private add<L extends Layer>(layer: L): L {
    if (this.layers.some((l) => l.name === layer.name)) throw new Error(`duplicate layer name ${layer.name}`);
    this.layers.push(layer);
    return layer;
  }
}

/** A complete network description: no tensors, just structure and specs. */
export interface NetworkDescription {
  name: string;
  embeddingSize: number;
  inputSize: number;
  /** True when the forward pass works at any input size (global pooling). */
  anyInputSize: boolean;
  root: Block;
  layers: Layer[];
}

export function tensorSpecs(layers: readonly Layer[]): TensorSpec[] {
  return layers.flatMap((l) => l.specs());
}

/** He (Kaiming) normal, PyTorch `kaiming_normal_(mode='fan_out', nonlinearity='relu')`; = MXNet Xavier(gaussian, out, 2). */
export function heNormalFanOut(outChannels: number, kernel = 1): Init {
  return { kind: 'normal', std: Math.sqrt(2 / (outChannels * kernel * kernel)) };
}
