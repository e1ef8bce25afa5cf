// The stock CPU backend advertises tfjs-node on first use; tests that switch
// to it directly (to compare against the native kernels) do not need the banner.
import { tf } from '../src/ops/tf.js';
tf.env().set('IS_TEST', true);
