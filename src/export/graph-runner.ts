/**
 * Runs a network description (models/module.ts) by *emitting* a TensorFlow
 * GraphDef: the third `Runner` next to `TensorRunner` (real tensors) and
 * `ShapeRunner` (shapes). Each call appends nodes and returns the name of the
 * node holding its result, so the exported graph is the very forward pass the
 * model trains with and cannot drift from it.
 *
 * Inference only. Ops and attributes follow what tfjs-converter emits and what
 * its graph executor accepts (tfjs-converter/dist/operations/op_list):
 *
 *   conv, groups 1           Conv2D                 padding EXPLICIT (symmetric p) or VALID
 *   conv, one input/group    DepthwiseConv2dNative  filter [k,k,1,C·m] viewed as [k,k,C,m]
 *   conv, grouped            DepthwiseConv2dNative + Reshape + Sum + Reshape
 *                            (the composite of ops/grouped-conv.ts; no TF op does groups)
 *   conv bias, linear bias   BiasAdd
 *   BatchNorm                Mul + AddV2 by constants folded from the running statistics:
 *                            scale = γ/√(σ²+ε), shift = β − μ·scale (as TensorRunner)
 *   PReLU                    Prelu      linear   MatMul       add     AddV2
 *   sigmoid                  Sigmoid    gate     Mul          pool    Mean (axes 1,2, keep dims)
 *   flatten                  Reshape [-1, H·W·C]
 *
 * Int64 attributes and tensor dims are written as decimal strings and string
 * attributes as base64, as protobuf's JSON mapping (and the converter) does.
 */
import { numel, type BatchNorm, type Conv2d, type Linear, type PReLU, type Runner } from '../models/module.js';
import { ShapeRunner, type Shape } from '../models/trace.js';

/** A named tensor value the graph needs (a layer's weight, a folded BN constant). */
export interface HostTensor {
  data: Float32Array | Int32Array;
  shape: number[];
}

export type DType = 'float32' | 'int32';

/** One attribute value in protobuf JSON form. */
export type AttrValue =
  | { type: 'DT_FLOAT' | 'DT_INT32' }
  | { s: string }
  | { b: boolean }
  | { f: number }
  | { i: string }
  | { list: { i?: string[]; s?: string[] } }
  | { shape: { dim: { size: string }[] } }
  | { tensor: { dtype: 'DT_FLOAT' | 'DT_INT32'; tensorShape: { dim?: { size: string }[] } } };

export interface NodeDef {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, AttrValue>;
}

export interface ConstTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Float32Array | Int32Array;
}

const TF_DTYPE = { float32: 'DT_FLOAT', int32: 'DT_INT32' } as const;
const T_FLOAT: AttrValue = { type: 'DT_FLOAT' };

function attrString(s: string): AttrValue {
  return { s: Buffer.from(s, 'utf8').toString('base64') };
}

function attrInts(v: readonly number[]): AttrValue {
  return { list: { i: v.map((x) => String(x)) } };
}

function dims(shape: readonly number[]): { size: string }[] {
  return shape.map((d) => ({ size: String(d) }));
}

/** The growing graph: nodes in topological order, constants, and each tensor's shape (batch 1). */
export class GraphBuilder {
  readonly nodes: NodeDef[] = [];
  readonly consts: ConstTensor[] = [];
  private readonly shapes = new Map<string, Shape>();
  private readonly used = new Set<string>();

  /** A node name not yet taken: `base`, else `base_1`, `base_2`, … */
  unique(base: string): string {
    let name = base;
    for (let k = 1; this.used.has(name); k++) name = `${base}_${k}`;
    this.used.add(name);
    return name;
  }

  shape(name: string): Shape {
    const s = this.shapes.get(name);
    if (!s) throw new Error(`graph export: no tensor named ${name}`);
    return s;
  }

  placeholder(name: string, shape: readonly number[], traceShape: Shape): string {
    const n = this.unique(name);
    this.nodes.push({ name: n, op: 'Placeholder', attr: { dtype: T_FLOAT, shape: { shape: { dim: dims(shape) } } } });
    this.shapes.set(n, traceShape);
    return n;
  }

  constant(name: string, data: Float32Array | Int32Array, shape: readonly number[]): string {
    if (data.length !== numel(shape)) throw new Error(`graph export: constant ${name} has ${data.length} values for shape [${shape}]`);
    const n = this.unique(name);
    const dtype: DType = data instanceof Int32Array ? 'int32' : 'float32';
    const tfType = TF_DTYPE[dtype];
    this.nodes.push({ name: n, op: 'Const', attr: { dtype: { type: tfType }, value: { tensor: { dtype: tfType, tensorShape: { dim: dims(shape) } } } } });
    this.consts.push({ name: n, dtype, shape: [...shape], data });
    this.shapes.set(n, shape);
    return n;
  }

  ints(name: string, values: readonly number[]): string {
    return this.constant(name, Int32Array.from(values), [values.length]);
  }

  op(name: string, op: string, inputs: string[], outShape: Shape, attr: Record<string, AttrValue> = {}): string {
    for (const i of inputs) this.shape(i); // every input must exist
    const n = this.unique(name);
    this.nodes.push({ name: n, op, input: inputs, attr });
    this.shapes.set(n, outShape);
    return n;
  }
}

/**
 * Emits the graph of a forward pass. `tensors` holds the checkpoint's values
 * by tensor name (`stage2.block0.conv1.weight`, `….runningVar`, …). Shapes are
 * traced at batch 1 by a ShapeRunner, which also checks every channel count.
 */
export class GraphRunner implements Runner<string> {
  private readonly trace = new ShapeRunner();

  constructor(
    readonly g: GraphBuilder,
    private readonly tensors: ReadonlyMap<string, HostTensor>,
  ) {}

  private value(name: string, shape: readonly number[]): Float32Array {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`graph export: missing tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) throw new Error(`graph export: tensor ${name} has shape [${t.shape}], expected [${shape}]`);
    if (!(t.data instanceof Float32Array)) throw new Error(`graph export: tensor ${name} is not float32`);
    return t.data;
  }

  conv(l: Conv2d, x: string): string {
    const out = this.trace.conv(l, this.g.shape(x));
    const w = this.value(`${l.name}.weight`, l.weightShape);
    const [k, , inPerGroup, cout] = l.weightShape;
    const conv = { strides: attrInts([1, l.stride, l.stride, 1]), ...padAttrs(l.pad), data_format: attrString('NHWC'), dilations: attrInts([1, 1, 1, 1]), T: T_FLOAT };
    let y: string;
    if (l.groups === 1) {
      const filter = this.g.constant(`${l.name}/weight`, w, l.weightShape);
      y = this.g.op(`${l.name}/Conv2D`, 'Conv2D', [x, filter], out, { ...conv, use_cudnn_on_gpu: { b: true } });
    } else if (inPerGroup === 1) {
      // depthwise: [k,k,1,C·m] read as [k,k,C,m]; output channel c·m + j comes from input c.
      const filter = this.g.constant(`${l.name}/weight`, w, [k, k, l.inChannels, cout / l.inChannels]);
      y = this.g.op(`${l.name}/depthwise`, 'DepthwiseConv2dNative', [x, filter], out, conv);
    } else {
      y = this.groupedConv(l, x, w, out, conv);
    }
    if (!l.bias) return y;
    const b = this.g.constant(`${l.name}/bias`, this.value(`${l.name}.bias`, [cout]), [cout]);
    return this.g.op(`${l.name}/BiasAdd`, 'BiasAdd', [y, b], out, { T: T_FLOAT, data_format: attrString('NHWC') });
  }

  /**
   * Grouped conv as ops/grouped-conv.ts's composite: filter [k,k,S,G·O] →
   * [k,k,G·S,O] (transposed here, once, on the host), a depthwise conv with
   * multiplier O, then the sum over each group's S input channels.
   */
  private groupedConv(l: Conv2d, x: string, w: Float32Array, out: Shape, conv: Record<string, AttrValue>): string {
    const [k, , s, cout] = l.weightShape;
    const groups = l.groups;
    const o = cout / groups;
    const dw = new Float32Array(w.length);
    // source index ((ky·k + kx)·S + si)·G·O + gi·O + oi  →  dest ((ky·k + kx)·G + gi)·S·O + si·O + oi
    for (let p = 0; p < k * k; p++)
      for (let si = 0; si < s; si++)
        for (let gi = 0; gi < groups; gi++) {
          const src = (p * s + si) * groups * o + gi * o;
          const dst = (p * groups + gi) * s * o + si * o;
          for (let oi = 0; oi < o; oi++) dw[dst + oi] = w[src + oi]!;
        }
    const [, h, wd] = out as number[];
    const filter = this.g.constant(`${l.name}/weight`, dw, [k, k, groups * s, o]);
    const y = this.g.op(`${l.name}/depthwise`, 'DepthwiseConv2dNative', [x, filter], [1, h!, wd!, groups * s * o], conv);
    const split = this.g.op(`${l.name}/split_groups`, 'Reshape', [y, this.g.ints(`${l.name}/split_groups/shape`, [-1, h!, wd!, groups, s, o])], [1, h!, wd!, groups, s, o], { T: T_FLOAT });
    const summed = this.g.op(`${l.name}/sum_inputs`, 'Sum', [split, this.g.ints(`${l.name}/sum_inputs/axis`, [4])], [1, h!, wd!, groups, o], { T: T_FLOAT, keep_dims: { b: false } });
    return this.g.op(`${l.name}/merge_groups`, 'Reshape', [summed, this.g.ints(`${l.name}/merge_groups/shape`, [-1, h!, wd!, cout])], out, { T: T_FLOAT });
  }

  batchNorm(l: BatchNorm, x: string): string {
    const out = this.trace.batchNorm(l, this.g.shape(x));
    const c = [l.channels];
    const gamma = this.value(`${l.name}.gamma`, c);
    const beta = this.value(`${l.name}.beta`, c);
    const mean = this.value(`${l.name}.runningMean`, c);
    const variance = this.value(`${l.name}.runningVar`, c);
    // float32 at each step, as TensorRunner's tf ops compute it
    const f = Math.fround;
    const scale = new Float32Array(l.channels);
    const shift = new Float32Array(l.channels);
    for (let i = 0; i < l.channels; i++) {
      scale[i] = f(gamma[i]! * f(1 / Math.sqrt(f(variance[i]! + l.eps))));
      shift[i] = f(beta[i]! - f(mean[i]! * scale[i]!));
    }
    const y = this.g.op(`${l.name}/mul`, 'Mul', [x, this.g.constant(`${l.name}/scale`, scale, c)], out, { T: T_FLOAT });
    return this.g.op(`${l.name}/add`, 'AddV2', [y, this.g.constant(`${l.name}/shift`, shift, c)], out, { T: T_FLOAT });
  }

  prelu(l: PReLU, x: string): string {
    const out = this.trace.prelu(l, this.g.shape(x));
    const alpha = this.g.constant(`${l.name}/alpha`, this.value(`${l.name}.alpha`, [l.channels]), [l.channels]);
    return this.g.op(`${l.name}/Prelu`, 'Prelu', [x, alpha], out, { T: T_FLOAT });
  }

  linear(l: Linear, x: string): string {
    const out = this.trace.linear(l, this.g.shape(x));
    const w = this.g.constant(`${l.name}/weight`, this.value(`${l.name}.weight`, [l.inFeatures, l.outFeatures]), [l.inFeatures, l.outFeatures]);
    const y = this.g.op(`${l.name}/MatMul`, 'MatMul', [x, w], out, { T: T_FLOAT, transpose_a: { b: false }, transpose_b: { b: false } });
    if (!l.bias) return y;
    const b = this.g.constant(`${l.name}/bias`, this.value(`${l.name}.bias`, [l.outFeatures]), [l.outFeatures]);
    return this.g.op(`${l.name}/BiasAdd`, 'BiasAdd', [y, b], out, { T: T_FLOAT, data_format: attrString('NHWC') });
  }

  add(a: string, b: string): string {
    return this.g.op(`${scopeOf(a)}/residual_add`, 'AddV2', [a, b], this.trace.add(this.g.shape(a), this.g.shape(b)), { T: T_FLOAT });
  }

  sigmoid(x: string): string {
    return this.g.op(`${scopeOf(x)}/Sigmoid`, 'Sigmoid', [x], this.trace.sigmoid(this.g.shape(x)), { T: T_FLOAT });
  }

  scaleChannels(x: string, gate: string): string {
    return this.g.op(`${scopeOf(gate)}/scale_channels`, 'Mul', [x, gate], this.trace.scaleChannels(this.g.shape(x), this.g.shape(gate)), { T: T_FLOAT });
  }

  globalAvgPool(x: string): string {
    const out = this.trace.globalAvgPool(this.g.shape(x));
    const axes = this.g.ints(`${scopeOf(x)}/global_pool/axes`, [1, 2]);
    return this.g.op(`${scopeOf(x)}/global_pool`, 'Mean', [x, axes], out, { T: T_FLOAT, Tidx: { type: 'DT_INT32' }, keep_dims: { b: true } });
  }

  flatten(x: string): string {
    const out = this.trace.flatten(this.g.shape(x));
    const shape = this.g.ints(`${scopeOf(x)}/flatten/shape`, [-1, out[1]!]);
    return this.g.op(`${scopeOf(x)}/flatten`, 'Reshape', [x, shape], out, { T: T_FLOAT, Tshape: { type: 'DT_INT32' } });
  }
}

/** Symmetric padding p: VALID for 0, else EXPLICIT [0,0, p,p, p,p, 0,0] (PyTorch `padding=p`). */
function padAttrs(p: number): Record<string, AttrValue> {
  return p === 0 ? { padding: attrString('VALID') } : { padding: attrString('EXPLICIT'), explicit_paddings: attrInts([0, 0, p, p, p, p, 0, 0]) };
}

/** The layer scope of a node name (`stage2.block0.bn3/add` → `stage2.block0.bn3`), to name follow-up ops. */
function scopeOf(name: string): string {
  const i = name.indexOf('/');
  return i < 0 ? name : name.slice(0, i);
}
