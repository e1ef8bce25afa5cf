import { tf } from './src/ops/tf.js';
import { registerNativeKernels, nativeAddon } from './src/ops/native/register.js';
const threads = Number(process.env.T ?? 1);
registerNativeKernels({ threads });
await tf.setBackend('cpu-native');
const rand = (s: number[]) => tf.randomUniform(s, -1, 1, 'float32', 3);
function t(name: string, flops: number, f: () => tf.Tensor | tf.Tensor[]) {
  for (let i = 0; i < 2; i++) tf.dispose(f());
  const ts: number[] = [];
  for (let i = 0; i < 15; i++) { const t0 = performance.now(); const o = f(); ts.push(performance.now() - t0); tf.dispose(o); }
  ts.sort((a, b) => a - b);
  console.log(name.padEnd(28), 'min', ts[0]!.toFixed(2), 'med', ts[7]!.toFixed(2), 'ms', (flops / ts[0]! / 1e6).toFixed(1), 'GF(best)');
}
const a = rand([256, 512]), b = rand([512, 4096]);
t('matmul', 2 * 256 * 512 * 4096, () => tf.matMul(a, b));
const x = rand([16, 28, 28, 32]), k = rand([3, 3, 32, 64]), dy = rand([16, 28, 28, 64]);
const cf = 2 * 12544 * 64 * 288;
t('conv fwd', cf, () => tf.conv2d(x as tf.Tensor4D, k as tf.Tensor4D, 1, 'same'));
t('conv bwd in', cf, () => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: k }, { strides: 1, pad: 'same', dataFormat: 'NHWC', inputShape: x.shape }) as tf.Tensor);
t('conv bwd filt', cf, () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: k.shape }) as tf.Tensor);
const xd = rand([16, 28, 28, 64]), kd = rand([3, 3, 64, 1]);
const df = 2 * 12544 * 64 * 9;
t('dw fwd', df, () => tf.depthwiseConv2d(xd as tf.Tensor4D, kd as tf.Tensor4D, 1, 'same'));
t('dw bwd in', df, () => tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy: xd, filter: kd }, { strides: 1, pad: 'same', dilations: 1, inputShape: xd.shape }) as tf.Tensor);
t('dw bwd filt', df, () => tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: xd, dy: xd }, { strides: 1, pad: 'same', dilations: 1, filterShape: kd.shape }) as tf.Tensor);
const xg = rand([16, 28, 28, 80]), kg = rand([3, 3, 8, 160]), dyg = rand([16, 28, 28, 160]);
const gf = 2 * 12544 * 160 * 72;
const ga = { strides: 1, pad: 'same', groups: 10 };
t('grouped fwd', gf, () => tf.engine().runKernel('SfGroupedConv2D', { x: xg, filter: kg }, ga) as tf.Tensor);
t('grouped bwd in', gf, () => tf.engine().runKernel('SfGroupedConv2DBackpropInput', { dy: dyg, filter: kg }, { ...ga, inputShape: xg.shape }) as tf.Tensor);
t('grouped bwd filt', gf, () => tf.engine().runKernel('SfGroupedConv2DBackpropFilter', { x: xg, dy: dyg }, { ...ga, filterShape: kg.shape }) as tf.Tensor);
const c64 = rand([64]);
t('add [C]', 0, () => tf.add(xd, c64));
t('relu', 0, () => tf.relu(xd));
t('sum 012', 0, () => tf.sum(xd, [0, 1, 2]));
t('new F32Array+fill', 0, () => { const z = new Float32Array(802816); return tf.scalar(z[5]!); });
