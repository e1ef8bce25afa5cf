// The stock CPU backend advertises tfjs-node on its first use; tests that
// switch to it directly (to compare against the native kernels) do not need
// the banner. (tf.env IS_TEST would also silence it, but turns on tfjs's
// internal leak checks, which flag kernels that legitimately keep data.)
import { tf } from '../src/ops/tf.js';

await tf.setBackend('cpu');
const cpu = tf.backend() as unknown as { firstUse?: boolean };
if ('firstUse' in cpu) cpu.firstUse = false;
