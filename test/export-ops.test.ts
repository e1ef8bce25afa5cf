/**
 * GraphRunner, op by op: a small network that uses every Runner operation in
 * every form the exporter emits (Conv2D with EXPLICIT and VALID padding and
 * strides 1/2, depthwise with a channel multiplier, grouped conv, biases,
 * BatchNorm, PReLU, squeeze-excitation, residual add, flatten, linear), loaded
 * back with tf.loadGraphModel and compared with TensorRunner. Plus the exact
 * attribute encoding tfjs-converter uses.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { Scope, tensorSpecs, type Block, type NetworkDescription, type Runner } from '../src/models/module.js';
import { TensorRunner } from '../src/models/tensor-runner.js';
import { buildGraphModel, type GraphModelArtifacts } from '../src/export/graph-model.js';
import type { HostTensor } from '../src/export/graph-runner.js';

await tf.setBackend('cpu');

function describeAllOps(): NetworkDescription {
  const s = new Scope();
  const init = { kind: 'normal', std: 0.3 } as const;
  const stem = s.conv('stem', { inChannels: 3, outChannels: 8, kernel: 3, stride: 2, pad: 1, init }); // EXPLICIT, stride 2
  const stemBn = s.batchNorm('stemBn', { channels: 8, eps: 1e-5 });
  const stemAct = s.prelu('stemAct', 8);
  const dw = s.conv('dw', { inChannels: 8, outChannels: 16, kernel: 3, pad: 1, groups: 8, init }); // depthwise, multiplier 2
  const grouped = s.conv('grouped', { inChannels: 16, outChannels: 8, kernel: 3, stride: 2, pad: 1, groups: 2, init }); // grouped, stride 2
  const pw = s.conv('pw', { inChannels: 8, outChannels: 8, kernel: 1, bias: true, init }); // VALID + BiasAdd
  const seReduce = s.conv('se.reduce', { inChannels: 8, outChannels: 4, kernel: 1, bias: true, init });
  const seExpand = s.conv('se.expand', { inChannels: 4, outChannels: 8, kernel: 1, bias: true, init });
  const valid = s.conv('valid', { inChannels: 8, outChannels: 6, kernel: 2, init }); // VALID, 4×4 → 3×3
  const fc = s.linear('fc', { inFeatures: 54, outFeatures: 5, init });
  const features = s.batchNorm('features', { channels: 5, eps: 2e-5 });
  const root: Block = {
    forward<T>(r: Runner<T>, x: T): T {
      let y = r.prelu(stemAct, r.batchNorm(stemBn, r.conv(stem, x)));
      y = r.conv(pw, r.conv(grouped, r.conv(dw, y)));
      const gate = r.sigmoid(r.conv(seExpand, r.conv(seReduce, r.globalAvgPool(y))));
      y = r.add(r.scaleChannels(y, gate), y);
      return r.batchNorm(features, r.linear(fc, r.flatten(r.conv(valid, y))));
    },
  };
  return { name: 'all-ops', embeddingSize: 5, inputSize: 16, anyInputSize: false, root, layers: s.layers };
}

function randomState(desc: NetworkDescription, seed: number): Map<string, tf.Variable> {
  const vars = new Map<string, tf.Variable>();
  let k = seed;
  for (const spec of tensorSpecs(desc.layers)) {
    const t = spec.name.endsWith('runningVar') || spec.name.endsWith('gamma') ? tf.randomUniform(spec.shape, 0.5, 1.5, 'float32', k++) : tf.randomNormal(spec.shape, 0, 0.3, 'float32', k++);
    vars.set(spec.name, tf.variable(t));
  }
  return vars;
}

async function hostTensors(vars: Map<string, tf.Variable>): Promise<Map<string, HostTensor>> {
  const m = new Map<string, HostTensor>();
  for (const [name, v] of vars) m.set(name, { data: (await v.data()) as Float32Array, shape: [...v.shape] });
  return m;
}

async function load(a: GraphModelArtifacts): Promise<tf.GraphModel> {
  const bytes = Buffer.concat(a.shards.map((s) => s.data));
  return tf.loadGraphModel(
    tf.io.fromMemory({
      modelTopology: a.json.modelTopology,
      signature: a.json.signature,
      weightSpecs: a.json.weightsManifest.flatMap((g) => g.weights),
      weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    } as tf.io.ModelArtifacts),
  );
}

function decodeAttr(s: string): string {
  return Buffer.from(s, 'base64').toString('utf8');
}

describe('GraphRunner emits a graph tfjs-converter can execute', () => {
  const desc = describeAllOps();

  it('gives the same outputs as TensorRunner, for every op form', async () => {
    const vars = randomState(desc, 7);
    const artifacts = buildGraphModel(desc, await hostTensors(vars), { shardBytes: 1024 });
    expect(artifacts.shards.length).toBeGreaterThan(1); // weights spanning shards are read back in order
    expect(artifacts.ops).toMatchObject({ Conv2D: 5, DepthwiseConv2dNative: 2, Sum: 1, BiasAdd: 4, Prelu: 1, Mean: 1, Sigmoid: 1, MatMul: 1, AddV2: 3, Mul: 3, Reshape: 3 });
    const model = await load(artifacts);
    const x = tf.randomNormal([3, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const want = tf.tidy(() => desc.root.forward(new TensorRunner(vars, false), x as tf.Tensor));
    const got = model.predict(x) as tf.Tensor;
    expect(got.shape).toEqual([3, 5]);
    const w = await want.data();
    const g = await got.data();
    for (let i = 0; i < w.length; i++) expect(g[i]).toBeCloseTo(w[i]!, 5);
    // and by name, through the signature
    const named = model.execute({ input: x }, 'embedding') as tf.Tensor;
    expect(Array.from(await named.data())).toEqual(Array.from(g));
  });

  it('writes attributes exactly as tfjs-converter does', async () => {
    const artifacts = buildGraphModel(desc, await hostTensors(randomState(desc, 1)));
    const nodes = new Map(artifacts.json.modelTopology.node.map((n) => [n.name, n]));
    const stem = nodes.get('stem/Conv2D')!;
    expect(stem.input).toEqual(['input', 'stem/weight']);
    expect(decodeAttr((stem.attr!.padding as { s: string }).s)).toBe('EXPLICIT');
    expect(stem.attr!.explicit_paddings).toEqual({ list: { i: ['0', '0', '1', '1', '1', '1', '0', '0'] } });
    expect(stem.attr!.strides).toEqual({ list: { i: ['1', '2', '2', '1'] } });
    expect(stem.attr!.dilations).toEqual({ list: { i: ['1', '1', '1', '1'] } });
    expect(decodeAttr((stem.attr!.data_format as { s: string }).s)).toBe('NHWC');
    expect(stem.attr!.T).toEqual({ type: 'DT_FLOAT' });
    const valid = nodes.get('valid/Conv2D')!;
    expect(decodeAttr((valid.attr!.padding as { s: string }).s)).toBe('VALID');
    expect(valid.attr!.explicit_paddings).toBeUndefined();
    expect(nodes.get('dw/depthwise')!.op).toBe('DepthwiseConv2dNative');
    expect(nodes.get('input')!.attr!.shape).toEqual({ shape: { dim: [{ size: '-1' }, { size: '16' }, { size: '16' }, { size: '3' }] } });
    const w = nodes.get('stem/weight')!;
    expect(w.op).toBe('Const');
    expect(w.attr!.value).toEqual({ tensor: { dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '3' }, { size: '3' }, { size: '3' }, { size: '8' }] } } });
    // every Const has a weight entry of the same name, in node order
    const consts = artifacts.json.modelTopology.node.filter((n) => n.op === 'Const').map((n) => n.name);
    expect(artifacts.json.weightsManifest[0]!.weights.map((s) => s.name)).toEqual(consts);
    // every op is one tfjs-converter knows
    const known = new Set(['Placeholder', 'Const', 'Identity', 'Conv2D', 'DepthwiseConv2dNative', 'BiasAdd', 'Mul', 'AddV2', 'Prelu', 'MatMul', 'Mean', 'Sum', 'Reshape', 'Sigmoid']);
    for (const n of artifacts.json.modelTopology.node) expect(known.has(n.op)).toBe(true);
  });

  it('names the failure when a tensor is missing or misshapen', async () => {
    const tensors = await hostTensors(randomState(desc, 2));
    tensors.delete('grouped.weight');
    expect(() => buildGraphModel(desc, tensors)).toThrow(/missing tensor grouped\.weight/);
    tensors.set('grouped.weight', { data: new Float32Array(10), shape: [10] });
    expect(() => buildGraphModel(desc, tensors)).toThrow(/grouped\.weight has shape \[10\]/);
  });
});
