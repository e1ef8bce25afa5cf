/**
 * The two small networks of occlusion training (docs/methods.md#adversarial-training), on the backbone's
 * last feature map f [B, H, W, C]:
 *
 *   mask generator G:     conv3×3 (C→w) → PReLU → conv3×3 (w→w) → PReLU → conv3×3 (w→1)
 *                         → drop-probability logit per cell (π = sigmoid)
 *   segmentation head S:  conv3×3 (C→w) → PReLU → conv1×1 (w→1) → occlusion logit per cell
 *
 * The reference design (docs/methods.md#adversarial-training) uses ReLU; the module system's activation is PReLU (slope learnt from
 * 0.25), which keeps these nets inside the same layer kinds, runners and
 * checkpoint format as the backbones. Convs carry biases (no BatchNorm here,
 * so the nets are per-sample and their replicas stay exact under data
 * parallelism). The last conv of each starts near zero (N(0, 0.01²)), so
 * π starts at ½ everywhere.
 *
 * Tensor names are prefixed `occlusion.generator.` / `occlusion.segmentation.`
 * so they can sit in the backbone's checkpoint file next to its tensors.
 */
import { tf } from '../ops/tf.js';
import { chain, heNormalFanOut, Scope, tensorSpecs, type Block, type Conv2d, type Layer, type PReLU, type Runner, type TensorSpec } from './module.js';
import { TensorRunner } from './tensor-runner.js';
import { ShapeRunner } from './trace.js';
import { initialValue, type Backbone, type TrainableVariable } from './backbone.js';

const HEAD_INIT = { kind: 'normal', std: 0.01 } as const;

class ConvAct implements Block {
  private readonly conv: Conv2d;
  private readonly act: PReLU;
  constructor(s: Scope, inC: number, outC: number) {
    this.conv = s.conv('conv', { inChannels: inC, outChannels: outC, kernel: 3, pad: 1, bias: true, init: heNormalFanOut(outC, 3) });
    this.act = s.prelu('prelu', outC);
  }
  forward<T>(r: Runner<T>, x: T): T {
    return r.prelu(this.act, r.conv(this.conv, x));
  }
}

class MaskGenerator implements Block {
  private readonly body: ConvAct[];
  private readonly out: Conv2d;
  constructor(s: Scope, channels: number, width: number, depth: number) {
    this.body = Array.from({ length: depth }, (_, i) => new ConvAct(s.sub(`conv${i}`), i === 0 ? channels : width, width));
    this.out = s.conv('out', { inChannels: depth === 0 ? channels : width, outChannels: 1, kernel: 3, pad: 1, bias: true, init: HEAD_INIT });
  }
  forward<T>(r: Runner<T>, x: T): T {
    return r.conv(this.out, chain(r, this.body, x));
  }
}

class SegmentationHead implements Block {
  private readonly hidden: ConvAct;
  private readonly out: Conv2d;
  constructor(s: Scope, channels: number, width: number) {
    this.hidden = new ConvAct(s.sub('conv0'), channels, width);
    this.out = s.conv('out', { inChannels: width, outChannels: 1, kernel: 1, bias: true, init: HEAD_INIT });
  }
  forward<T>(r: Runner<T>, x: T): T {
    return r.conv(this.out, this.hidden.forward(r, x));
  }
}

export interface OcclusionNetOptions {
  /** Channels C of the backbone's feature map. */
  channels: number;
  /** Hidden width w of the convs (256 for G in the reference design; docs/methods.md#adversarial-training). */
  width: number;
  seed: number;
}

/** One of the two nets with its own tensors; `apply` gives per-cell logits [B, H, W, 1]. */
export class OcclusionNet {
  private readonly specs: TensorSpec[];
  private readonly vars = new Map<string, tf.Variable>();

  private constructor(
    readonly name: string,
    private readonly root: Block,
    readonly layers: Layer[],
    readonly channels: number,
    seed: number,
  ) {
    this.specs = tensorSpecs(layers);
    for (const s of this.specs) {
      const t = tf.tensor(initialValue(s, seed), s.shape, 'float32');
      this.vars.set(s.name, tf.variable(t, s.trainable));
      t.dispose();
    }
    // shape check end to end: [1, 7, 7, C] → [1, 7, 7, 1]
    const out = root.forward(new ShapeRunner(), [1, 7, 7, channels]);
    if (out.length !== 4 || out[3] !== 1 || out[1] !== 7) throw new Error(`${name}: output shape [${out}], expected [1, 7, 7, 1]`);
  }

  /** G: drop-probability logits. Its input must be stop-gradient(f) (the caller computes f outside the tape). */
  static generator(o: OcclusionNetOptions, depth = 2): OcclusionNet {
    const scope = new Scope('occlusion.generator');
    const root = new MaskGenerator(scope, o.channels, o.width, depth);
    return new OcclusionNet('occlusion.generator', root, scope.layers, o.channels, o.seed);
  }

  /** S: occlusion logits. */
  static segmentation(o: OcclusionNetOptions): OcclusionNet {
    const scope = new Scope('occlusion.segmentation');
    const root = new SegmentationHead(scope, o.channels, o.width);
    return new OcclusionNet('occlusion.segmentation', root, scope.layers, o.channels, o.seed);
  }

  /** f [B, H, W, C] → logits [B, H, W, 1]. */
  apply(f: tf.Tensor4D): tf.Tensor4D {
    if (f.rank !== 4 || f.shape[3] !== this.channels) throw new Error(`${this.name}: expected a [B, H, W, ${this.channels}] feature map, got [${f.shape}]`);
    return tf.tidy(() => this.root.forward(new TensorRunner(this.vars, true), f as tf.Tensor) as tf.Tensor4D);
  }

  trainableVariables(): TrainableVariable[] {
    return this.specs.filter((s) => s.trainable).map((s) => ({ name: s.name, variable: this.vars.get(s.name)!, decay: s.decay }));
  }

  state(): Map<string, tf.Variable> {
    return new Map(this.vars);
  }

  /** Sets every tensor from `values` (name → data); a missing name or a wrong size is an error. */
  load(values: (name: string) => Float32Array | undefined): void {
    for (const [name, v] of this.vars) {
      const data = values(name);
      if (!data) throw new Error(`${this.name}: no tensor ${name}`);
      if (data.length !== v.size) throw new Error(`${this.name}: tensor ${name} has ${data.length} values, expected ${v.size} ([${v.shape}])`);
      const t = tf.tensor(data, v.shape, 'float32');
      v.assign(t);
      t.dispose();
    }
  }

  /** Parameters (for reports). */
  get parameterCount(): number {
    return this.specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

/** The segmentation head's hidden width as saved in a checkpoint: the output channels of its first conv. */
export const SEGMENTATION_FIRST_WEIGHT = 'occlusion.segmentation.conv0.conv.weight';

/**
 * the optional inference of docs/methods.md#adversarial-training: the backbone with each cell of its feature
 * map down-weighted by S's occlusion probability, f ⊙ (1 − σ(S(f))), before
 * the head. Trained with occlusion adversarial (and drawn occluders), the head
 * has learnt to do without dropped cells and S to find occluded ones, so an
 * occluder's cells are blanked out instead of passed on. Owns `seg`.
 */
export function segmentationGated(backbone: Backbone, seg: OcclusionNet): Backbone {
  const gate = (f: tf.Tensor4D) => tf.mul(f, tf.sub(1, tf.sigmoid(seg.apply(f)))) as tf.Tensor4D;
  return {
    name: backbone.name,
    embeddingSize: backbone.embeddingSize,
    inputSize: backbone.inputSize,
    apply: (x, training, opts) => tf.tidy(() => backbone.head(gate(backbone.features(x, training, opts)), training, opts)),
    features: (x, training, opts) => backbone.features(x, training, opts),
    head: (f, training, opts) => tf.tidy(() => backbone.head(gate(f), training, opts)),
    featureShape: (inputSize) => backbone.featureShape(inputSize),
    trainableVariables: () => backbone.trainableVariables(),
    state: () => new Map([...backbone.state(), ...seg.state()]),
    dispose: () => {
      backbone.dispose();
      seg.dispose();
    },
  };
}
