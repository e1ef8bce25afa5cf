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
 * tensors of the same shapes (the inputs are disposed). With `transferBuffer`
 * (the shared-memory slot, src/collectives/collectives.ts) each bucket is
 * written straight into the transport's buffer, and the sums are copied out
 * of it, since the buffer is reused by the next bucket.
 */
export async function allReduceGradients(
  grads: tf.Tensor[],
  buckets: Bucket[],
  allReduceSum: (a: Float32Array) => Promise<void>,
  transferBuffer?: (length: number) => Promise<Float32Array | null>,
): Promise<tf.Tensor[]> {
  const out = new Array<tf.Tensor>(grads.length);
  for (const b of buckets) {
    const slot = transferBuffer ? await transferBuffer(b.length) : null;
    const flat = slot ?? new Float32Array(b.length);
    b.params.forEach((p, k) => flat.set(grads[p]!.dataSync() as Float32Array, b.offsets[k]!));
    await allReduceSum(flat);
    b.params.forEach((p, k) => {
      const g = grads[p]!;
      const sum = flat.subarray(b.offsets[k]!, b.offsets[k]! + g.size);
      out[p] = tf.tensor(slot ? sum.slice() : sum, g.shape, 'float32');
      g.dispose();
    });
  }
  return out;
}
