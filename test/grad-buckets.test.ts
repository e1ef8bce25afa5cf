/**
 * Gradient buckets: both stagings (host copies for the CPU backends, one
 * device concat + download and one upload + split per bucket for tfjs-node-gpu)
 * give the sum an independent float32 addition gives; the device staging
 * downloads the next bucket while the current one is being reduced, and a
 * failed reduction leaks no tensor. The collective is an in-process stand-in
 * here (the other worker's gradients added in); the real ring and shared
 * memory are covered by the collectives and training tests.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { tf } from '../src/ops/tf.js';
import { allReduceGradients, planBuckets, stagingForBackend, type BucketStaging } from '../src/worker/grad-buckets.js';

const SHAPES: number[][] = [[3, 3, 2, 4], [4], [5, 7], [1], [6, 2, 2], [9]];
const sizes = SHAPES.map((s) => s.reduce((a, b) => a * b, 1));

/** Deterministic, not-round gradients of one worker. */
function gradsOf(worker: number): Float32Array[] {
  return sizes.map((n, p) => Float32Array.from({ length: n }, (_, i) => Math.sin(1 + worker * 7.3 + p * 1.7 + i * 0.37) / (1 + p)));
}

/** An all-reduce over two workers seen from worker 0: adds worker 1's bucket in, element by element. */
function twoWorkerSum(buckets: ReturnType<typeof planBuckets>, other: Float32Array[]) {
  let i = 0;
  return async (a: Float32Array) => {
    const b = buckets[i++]!;
    await new Promise((r) => setTimeout(r, 1));
    b.params.forEach((p, k) => other[p]!.forEach((v, j) => (a[b.offsets[k]! + j] = Math.fround(a[b.offsets[k]! + j]! + v))));
  };
}

afterEach(() => vi.restoreAllMocks());

describe('planBuckets', () => {
  it('fills buckets up to the limit in parameter order, a parameter larger than the limit alone', () => {
    // limit 16 floats
    const b = planBuckets([10, 5, 2, 40, 1, 1], 16 * 4 * 2 ** -20);
    expect(b.map((x) => x.params)).toEqual([[0, 1], [2], [3], [4, 5]]);
    expect(b.map((x) => x.offsets)).toEqual([[0, 10], [0], [0], [0, 1]]);
    expect(b.map((x) => x.length)).toEqual([15, 2, 40, 2]);
  });
});

describe('allReduceGradients', () => {
  const expected = () => {
    const [a, b] = [gradsOf(0), gradsOf(1)];
    return a.map((g, p) => g.map((v, i) => Math.fround(v + b[p]![i]!)));
  };

  for (const staging of ['host', 'device'] as BucketStaging[]) {
    it(`${staging} staging: every gradient is the float32 sum, with its shape, and the inputs are released`, async () => {
      const buckets = planBuckets(sizes, 40 * 4 * 2 ** -20);
      expect(buckets.length).toBeGreaterThan(2);
      const before = tf.memory().numTensors;
      const grads = gradsOf(0).map((g, p) => tf.tensor(g, SHAPES[p]!, 'float32'));
      const out = await allReduceGradients(grads, buckets, twoWorkerSum(buckets, gradsOf(1)), { staging });
      expect(grads.every((g) => g.isDisposed)).toBe(true);
      expect(out.map((t) => t.shape)).toEqual(SHAPES);
      const want = expected();
      out.forEach((t, p) => expect(Array.from(t.dataSync())).toEqual(Array.from(want[p]!)));
      out.forEach((t) => t.dispose());
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('host staging writes into the transport buffer it is offered and copies the sums out of it', async () => {
    const buckets = planBuckets(sizes, 40 * 4 * 2 ** -20);
    const slot = new Float32Array(Math.max(...buckets.map((b) => b.length)));
    const seen: number[] = [];
    const grads = gradsOf(0).map((g, p) => tf.tensor(g, SHAPES[p]!, 'float32'));
    const sum = twoWorkerSum(buckets, gradsOf(1));
    const out = await allReduceGradients(
      grads,
      buckets,
      async (a) => {
        expect(a.buffer).toBe(slot.buffer);
        seen.push(a.length);
        await sum(a);
      },
      { staging: 'host', transferBuffer: (n) => Promise.resolve(slot.subarray(0, n)) },
    );
    expect(seen).toEqual(buckets.map((b) => b.length));
    slot.fill(NaN); // the results must not alias the reused buffer
    const want = expected();
    out.forEach((t, p) => expect(Array.from(t.dataSync())).toEqual(Array.from(want[p]!)));
    out.forEach((t) => t.dispose());
  });

  it("device staging downloads bucket k+1 before bucket k's reduction starts, so the two overlap", async () => {
    const buckets = planBuckets(sizes, 40 * 4 * 2 ** -20);
    const events: string[] = [];
    const proto = tf.Tensor.prototype as unknown as { data(this: tf.Tensor): Promise<tf.TypedArray> };
    const data = Reflect.get(proto, 'data') as (this: tf.Tensor) => Promise<tf.TypedArray>;
    vi.spyOn(proto, 'data').mockImplementation(function (this: tf.Tensor) {
      events.push('download');
      return data.call(this);
    });
    const sum = twoWorkerSum(buckets, gradsOf(1));
    let k = 0;
    const grads = gradsOf(0).map((g, p) => tf.tensor(g, SHAPES[p]!, 'float32'));
    const out = await allReduceGradients(
      grads,
      buckets,
      async (a) => {
        const i = k++;
        events.push(`reduce ${i}`);
        await sum(a);
      },
      { staging: 'device' },
    );
    out.forEach((t) => t.dispose());
    // one download per bucket (not per parameter), each issued before the previous bucket's reduction
    const expectedEvents = ['download', ...buckets.flatMap((_, i) => (i + 1 < buckets.length ? ['download', `reduce ${i}`] : [`reduce ${i}`]))];
    expect(events).toEqual(expectedEvents);
  });

  it('device staging: a failed reduction rejects and leaves no tensor of its own behind', async () => {
    const buckets = planBuckets(sizes, 40 * 4 * 2 ** -20);
    const before = tf.memory().numTensors;
    const grads = gradsOf(0).map((g, p) => tf.tensor(g, SHAPES[p]!, 'float32'));
    let calls = 0;
    const failing = async () => {
      if (++calls === 2) throw new Error('ring closed');
      await new Promise((r) => setTimeout(r, 1));
    };
    await expect(allReduceGradients(grads, buckets, failing, { staging: 'device' })).rejects.toThrow('ring closed');
    await new Promise((r) => setTimeout(r, 10));
    // the caller still owns its gradients
    expect(tf.memory().numTensors - before).toBe(grads.length);
    grads.forEach((g) => g.dispose());
  });

  it('picks device staging for tfjs-node and host staging for the CPU backends', () => {
    expect([stagingForBackend('tensorflow'), stagingForBackend('cpu-native'), stagingForBackend('cpu')]).toEqual(['device', 'host', 'host']);
  });
});
