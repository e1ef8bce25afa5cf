/**
 * Backbone gradients travel in buckets of about `bucketMb` megabytes: each
 * bucket is one contiguous Float32Array holding several parameters' gradients,
 * all-reduced as one message stream, then split back. Fewer, larger
 * collectives keep the ring at full bandwidth.
 */
import { tf } from '../ops/tf.js';

export interface Bucket {
  /** Indices into the parameter list. */
  params: number[];
  offsets: number[];
  length: number;
}

export function planBuckets(sizes: number[], bucketMb: number): Bucket[] {
  const limit = Math.max(1, Math.floor((bucketMb * 2 ** 20) / 4));
  const buckets: Bucket[] = [];
  let cur: Bucket = { params: [], offsets: [], length: 0 };
  sizes.forEach((n, i) => {
    if (cur.params.length > 0 && cur.length + n > limit) {
      buckets.push(cur);
      cur = { params: [], offsets: [], length: 0 };
    }
    cur.params.push(i);
    cur.offsets.push(cur.length);
    cur.length += n;
  });
  if (cur.params.length > 0) buckets.push(cur);
  return buckets;
}

/**
 * Sums gradients over workers bucket by bucket with `allReduceSum`; returns new
 * tensors of the same shapes (the inputs are disposed).
 */
export async function allReduceGradients(grads: tf.Tensor[], buckets: Bucket[], allReduceSum: (a: Float32Array) => Promise<void>): Promise<tf.Tensor[]> {
  const out = new Array<tf.Tensor>(grads.length);
  for (const b of buckets) {
    const flat = new Float32Array(b.length);
    b.params.forEach((p, k) => flat.set(grads[p]!.dataSync() as Float32Array, b.offsets[k]!));
    await allReduceSum(flat);
    b.params.forEach((p, k) => {
      const g = grads[p]!;
      out[p] = tf.tensor(flat.subarray(b.offsets[k]!, b.offsets[k]! + g.size), g.shape, 'float32');
      g.dispose();
    });
  }
  return out;
}
