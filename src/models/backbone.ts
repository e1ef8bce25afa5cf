/**
 * The backbone registry and the `Backbone` every worker trains: a network
 * description (module.ts) plus its tensors, created deterministically from a
 * seed so every process builds bit-identical parameters without a broadcast.
 */
import { tf } from '../ops/tf.js';
import { Rng } from '../common/random.js';
import { isFeatureHeadBlock, numel, tensorSpecs, type FeatureHeadBlock, type NetworkDescription, type TensorSpec } from './module.js';
import { TensorRunner, type StatsMode } from './tensor-runner.js';
import type { PendingStats } from './pending-stats.js';
import { ShapeRunner, type LayerCost } from './trace.js';
import { describeIResNet, IRESNET_LAYERS, type IResNetName } from './iresnet.js';
import { describeMobileFaceNet } from './mobilefacenet.js';
import { describeVarGFaceNet } from './vargfacenet.js';
import { describeTiny } from './tiny.js';

export const BACKBONE_NAMES = ['tiny', 'mobilefacenet', 'iresnet18', 'iresnet34', 'iresnet50', 'iresnet100', 'iresnet200', 'vargfacenet'] as const;
export type BackboneName = (typeof BACKBONE_NAMES)[number];

export function isBackboneName(s: string): s is BackboneName {
  return (BACKBONE_NAMES as readonly string[]).includes(s);
}

/** Everything that shapes a network (no seed: structure only). */
export interface ArchitectureOptions {
  /** Embedding size D (default 512). */
  embeddingSize?: number;
  /** Square input side in pixels (default 112). tiny accepts any size ≥ 16 at run time. */
  inputSize?: number;
  /** tiny only: 'none' removes every BatchNorm (default 'batch'). */
  norm?: 'batch' | 'none';
  /** vargfacenet only: squeeze-excitation in the normal blocks (default true, the official repo). */
  se?: boolean;
}

export interface BackboneOptions extends ArchitectureOptions {
  /** Initialisation seed: same seed, same parameters, bit for bit, in every process. */
  seed: number;
}

export interface TrainableVariable {
  name: string;
  variable: tf.Variable;
  /** Weight decay applies (false for BatchNorm γ/β and biases). */
  decay: boolean;
}

export interface ApplyOptions {
  /**
   * Training mode only: whether BatchNorm writes its running statistics
   * (default true), or a PendingStats that receives the new values to be
   * committed later (the training step, which commits them only when the
   * numerical guard keeps the step). False: passes whose statistics must not
   * count (the occlusion method's masked feature maps, adversary pre-training).
   */
  updateStats?: boolean | PendingStats;
}

export interface Backbone {
  readonly name: string;
  readonly embeddingSize: number;
  readonly inputSize: number;
  /**
   * x: NHWC, RGB, already normalised as (x/255 − 0.5)/0.5. Returns the raw
   * (unnormalised) embeddings [B, embeddingSize]. In training mode BatchNorm
   * uses batch statistics and updates its running statistics.
   */
  apply(x: tf.Tensor4D, training: boolean, opts?: ApplyOptions): tf.Tensor2D;
  // --- feature-map / head split (docs/methods.md#adversarial-training F and R; occlusion training): apply(x) = head(features(x))
  /** The last spatial feature map f = F(x), NHWC [B, H, W, C]. */
  features(x: tf.Tensor4D, training: boolean, opts?: ApplyOptions): tf.Tensor4D;
  /** The rest of the network R on a feature map (masked or not) → raw embeddings [B, embeddingSize]. */
  head(f: tf.Tensor4D, training: boolean, opts?: ApplyOptions): tf.Tensor2D;
  /** [H, W, C] of the feature map for a square input of `inputSize` pixels (default: the backbone's). */
  featureShape(inputSize?: number): [number, number, number];
  // --- end feature-map / head split
  /** The parameters the optimizer updates, in a fixed order. */
  trainableVariables(): TrainableVariable[];
  /** All persistent tensors (parameters, frozen ones, BN running statistics), in a fixed order. */
  state(): Map<string, tf.Variable>;
  dispose(): void;
}

function statsMode(opts: ApplyOptions): StatsMode {
  const u = opts.updateStats ?? true;
  return u === true ? 'write' : u === false ? 'skip' : u;
}

/** Builds the description of a backbone and checks it end to end by a shape trace. */
export function describeBackbone(name: BackboneName, opts: ArchitectureOptions = {}): NetworkDescription {
  const embeddingSize = opts.embeddingSize ?? 512;
  const inputSize = opts.inputSize ?? 112;
  if (!Number.isInteger(embeddingSize) || embeddingSize < 1) throw new Error(`embeddingSize must be a positive integer, got ${embeddingSize}`);
  if (!Number.isInteger(inputSize) || inputSize < 1) throw new Error(`inputSize must be a positive integer, got ${inputSize}`);
  if (opts.norm !== undefined && name !== 'tiny') throw new Error(`option norm applies to tiny only, not ${name}`);
  if (opts.se !== undefined && name !== 'vargfacenet') throw new Error(`option se applies to vargfacenet only, not ${name}`);
  let desc: NetworkDescription;
  if (name === 'tiny') desc = describeTiny({ embeddingSize, inputSize, norm: opts.norm ?? 'batch' });
  else if (name === 'mobilefacenet') desc = describeMobileFaceNet({ embeddingSize, inputSize });
  else if (name === 'vargfacenet') desc = describeVarGFaceNet({ embeddingSize, inputSize, se: opts.se ?? true });
  else if (name in IRESNET_LAYERS) desc = describeIResNet(name as IResNetName, { embeddingSize, inputSize });
  else throw new Error(`unknown backbone ${JSON.stringify(name)}; choose one of ${BACKBONE_NAMES.join(', ')}`);
  traceNetwork(desc);
  return desc;
}

/**
 * Runs the description on shapes for one [1, S, S, 3] input and returns the
 * per-layer costs. Throws when the input size does not fit the architecture,
 * when the output is not [1, D], or when a layer is never (or twice) used.
 */
export function traceNetwork(desc: NetworkDescription): LayerCost[] {
  const r = new ShapeRunner();
  let out;
  try {
    out = desc.root.forward(r, [1, desc.inputSize, desc.inputSize, 3]);
  } catch (e) {
    throw new Error(`${desc.name} does not accept input size ${desc.inputSize}: ${(e as Error).message}`);
  }
  if (out.length !== 2 || out[1] !== desc.embeddingSize) throw new Error(`${desc.name}: output shape [${out}], expected [1, ${desc.embeddingSize}]`);
  const seen = new Map<string, number>();
  for (const rec of r.records) seen.set(rec.name, (seen.get(rec.name) ?? 0) + 1);
  for (const l of desc.layers) {
    const n = seen.get(l.name) ?? 0;
    if (n !== 1) throw new Error(`${desc.name}: layer ${l.name} used ${n} times in the forward pass (expected once)`);
  }
  return r.records;
}

export function createBackbone(name: BackboneName, opts: BackboneOptions): Backbone {
  if (!Number.isInteger(opts.seed)) throw new Error(`createBackbone: seed must be an integer, got ${opts.seed}`);
  return new ModuleBackbone(describeBackbone(name, opts), opts.seed);
}

/** The initial value of one tensor, drawn from its own stream: Rng(seed, 'init', name). */
export function initialValue(spec: TensorSpec, seed: number): Float32Array {
  const a = new Float32Array(numel(spec.shape));
  const init = spec.init;
  if (init.kind === 'constant') a.fill(init.value);
  else if (init.kind === 'normal') Rng.derive(seed, 'init', spec.name).fillNormal(a, 0, init.std);
  else {
    const rng = Rng.derive(seed, 'init', spec.name);
    for (let i = 0; i < a.length; i++) a[i] = (2 * rng.next() - 1) * init.bound;
  }
  return a;
}

class ModuleBackbone implements Backbone {
  readonly name: string;
  readonly embeddingSize: number;
  readonly inputSize: number;
  private readonly specs: TensorSpec[];
  private readonly vars = new Map<string, tf.Variable>();
  private disposed = false;

  constructor(
    private readonly desc: NetworkDescription,
    seed: number,
  ) {
    this.name = desc.name;
    this.embeddingSize = desc.embeddingSize;
    this.inputSize = desc.inputSize;
    this.specs = tensorSpecs(desc.layers);
    for (const s of this.specs) {
      const t = tf.tensor(initialValue(s, seed), s.shape, 'float32');
      // No tf.js variable name: those are process-global and must be unique.
      this.vars.set(s.name, tf.variable(t, s.trainable));
      t.dispose();
    }
  }

  apply(x: tf.Tensor4D, training: boolean, opts: ApplyOptions = {}): tf.Tensor2D {
    this.checkInput(x);
    return tf.tidy(() => this.desc.root.forward(new TensorRunner(this.vars, training, statsMode(opts)), x as tf.Tensor) as tf.Tensor2D);
  }

  features(x: tf.Tensor4D, training: boolean, opts: ApplyOptions = {}): tf.Tensor4D {
    this.checkInput(x);
    const root = this.split();
    return tf.tidy(() => root.features(new TensorRunner(this.vars, training, statsMode(opts)), x as tf.Tensor) as tf.Tensor4D);
  }

  head(f: tf.Tensor4D, training: boolean, opts: ApplyOptions = {}): tf.Tensor2D {
    if (this.disposed) throw new Error(`${this.name}: backbone disposed`);
    if (f.rank !== 4) throw new Error(`${this.name}: head expects an NHWC feature map, got [${f.shape}]`);
    const root = this.split();
    return tf.tidy(() => root.head(new TensorRunner(this.vars, training, statsMode(opts)), f as tf.Tensor) as tf.Tensor2D);
  }

  featureShape(inputSize = this.inputSize): [number, number, number] {
    const s = this.split().features(new ShapeRunner(), [1, inputSize, inputSize, 3]);
    if (s.length !== 4) throw new Error(`${this.name}: features end in shape [${s}], not a spatial map`);
    return [s[1]!, s[2]!, s[3]!];
  }

  private split(): FeatureHeadBlock {
    const root = this.desc.root;
    if (!isFeatureHeadBlock(root)) throw new Error(`${this.name}: this backbone has no feature-map/head split`);
    return root;
  }

  private checkInput(x: tf.Tensor4D): void {
    if (this.disposed) throw new Error(`${this.name}: backbone disposed`);
    const [, h, w, c] = x.shape;
    if (x.rank !== 4 || c !== 3) throw new Error(`${this.name}: expected NHWC RGB input, got [${x.shape}]`);
    if (this.desc.anyInputSize ? h < 16 || w < 16 : h !== this.inputSize || w !== this.inputSize)
      throw new Error(`${this.name}: input ${h}×${w}, expected ${this.desc.anyInputSize ? 'at least 16×16' : `${this.inputSize}×${this.inputSize}`}`);
  }

  trainableVariables(): TrainableVariable[] {
    return this.specs.filter((s) => s.trainable).map((s) => ({ name: s.name, variable: this.vars.get(s.name)!, decay: s.decay }));
  }

  state(): Map<string, tf.Variable> {
    return new Map(this.vars);
  }

  dispose(): void {
    if (this.disposed) return;
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
    this.disposed = true;
  }
}
