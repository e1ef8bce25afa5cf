/**
 * The TensorFlow.js namespace every module uses. On GPU nodes
 * @tensorflow/tfjs-node-gpu registers its `tensorflow` backend into this same
 * tfjs-core instance (they share the 4.22.0 package), so code written against
 * this import runs unchanged on either backend.
 */
import * as tf from '@tensorflow/tfjs';
export { tf };
export type Tensor = tf.Tensor;
