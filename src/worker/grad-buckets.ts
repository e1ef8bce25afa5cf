/**
 * Backbone gradients travel in buckets of about `bucketMb` megabytes: each
 * bucket is one contiguous Float32Array holding several parameters' gradients,
 * all-reduced as one message stream, then split back. Fewer, larger
 * collectives keep the ring at full bandwidth.
 *
 * How a bucket gets to the host and back depends on where tensors live
 * (docs/architecture.md#gradient-buckets):
 * - `host` (the CPU backends): a tensor's data already is host memory, so the
 *   gradients are copied straight into the bucket, or into the shared-memory
 *   transport's own buffer when it offers one (no copy into the segment later);
 * - `device` (tfjs-node-gpu): the bucket is concatenated on the device and read
 *   back with one asynchronous download, and the sum goes up as one tensor and
 *   is split on the device — one transfer each way per bucket instead of one
 *   blocking `dataSync` and one upload per parameter. The download of the next
 *   bucket runs while the current one is being reduced.
 */
import { tf } from '../ops/tf.js';

export interface Bucket {
  /** Indices into the parameter list. */
  params: number[];
  offsets: number[];
  length: number;
}

export type BucketStaging = 'host' | 'device';

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

/** The staging that suits the current backend: `device` where tensors live off the host (tfjs-node's `tensorflow`). */
export function stagingForBackend(backend: string = tf.getBackend()): BucketStaging {
  return backend === 'tensorflow' ? 'device' : 'host';
}

export interface AllReduceGradientsOptions {
  /** The shared-memory transport's buffer for a bucket of `length` floats, or null (src/collectives/collectives.ts). */
  transferBuffer?: (length: number) => Promise<Float32Array | null>;
  staging?: BucketStaging;
}

/**
 * Sums gradients over workers bucket by bucket with `allReduceSum`; returns new
 * tensors of the same shapes (the inputs are disposed).
 */
export async function allReduceGradients(grads: tf.Tensor[], buckets: Bucket[], allReduceSum: (a: Float32Array) => Promise<void>, opts: AllReduceGradientsOptions = {}): Promise<tf.Tensor[]> {
  const out = new Array<tf.Tensor>(grads.length);
  if ((opts.staging ?? stagingForBackend()) === 'device') {
    await reduceDeviceBuckets(grads, buckets, allReduceSum, out);
    return out;
  }
  for (const b of buckets) {
    // the slot is reused by the next bucket: the sums are copied out of it
    const slot = opts.transferBuffer ? await opts.transferBuffer(b.length) : null;
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

/** One bucket's gradients as one device tensor, and the promise of its host copy. */
function download(grads: tf.Tensor[], b: Bucket): Promise<Float32Array> {
  const flat = tf.tidy(() => tf.concat(b.params.map((p) => grads[p]!.reshape([-1]))));
  return (flat.data() as Promise<Float32Array>).finally(() => flat.dispose());
}

async function reduceDeviceBuckets(grads: tf.Tensor[], buckets: Bucket[], allReduceSum: (a: Float32Array) => Promise<void>, out: tf.Tensor[]): Promise<void> {
  let next: Promise<Float32Array> | null = buckets.length > 0 ? download(grads, buckets[0]!) : null;
  try {
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!;
      const flat = await next!;
      // the next bucket's download overlaps this one's reduction
      next = i + 1 < buckets.length ? download(grads, buckets[i + 1]!) : null;
      await allReduceSum(flat);
      const sums = tf.tidy(() =>
        tf
          .split(
            tf.tensor1d(flat, 'float32'),
            b.params.map((p) => grads[p]!.size),
          )
          .map((t, k) => t.reshape(grads[b.params[k]!]!.shape)),
      );
      b.params.forEach((p, k) => (out[p] = sums[k]!));
    }
  } catch (e) {
    // a failed reduction must not leave the next download's promise rejecting unobserved
    next?.catch(() => {});
    out.forEach((t) => t?.dispose());
    throw e;
  }
  grads.forEach((g) => g.dispose());
}
