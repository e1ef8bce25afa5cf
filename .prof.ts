import { tf } from './src/ops/tf.js';
import { initBackend } from './src/ops/backend.js';
import { createBackbone } from './src/models/index.js';
const name = (process.argv[2] ?? 'mobilefacenet') as 'mobilefacenet';
const batch = Number(process.argv[3] ?? 8);
await initBackend('cpu-native', { threads: 2 });
const b = createBackbone(name, { seed: 1 });
const x = tf.randomNormal([batch, 112, 112, 3]) as tf.Tensor4D;
const vars = b.trainableVariables().map((v) => v.variable);
const step = () => {
  const e = tf.tidy(() => b.apply(x, true, { updateStats: false }));
  const dy = tf.randomNormal(e.shape) as tf.Tensor2D;
  const g = tf.engine().gradients(() => b.apply(x, true), vars, dy).grads;
  g.forEach((t) => t.dataSync());
  g.forEach((t) => t.dispose());
  e.dispose();
  dy.dispose();
};
step();
const t0 = performance.now();
const prof = await tf.profile(() => {
  step();
});
const wall = (performance.now() - t0) / 1000;
const by = new Map<string, { ms: number; n: number }>();
for (const k of prof.kernels) {
  const key = k.name;
  const r = by.get(key) ?? { ms: 0, n: 0 };
  r.ms += Number(k.kernelTimeMs) || 0;
  r.n++;
  by.set(key, r);
}
console.log('wall', wall.toFixed(2), 's; kernels', prof.kernels.length);
for (const [k, v] of [...by.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25)) console.log(k.padEnd(34), v.ms.toFixed(0).padStart(8), 'ms', String(v.n).padStart(6));
