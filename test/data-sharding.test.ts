import { describe, expect, it } from 'vitest';
import { DistributedSampler } from '../src/data/sampler.js';
import { Loader, fillBatch, flipDecision, flipHorizontal } from '../src/data/loader.js';
import { createSyntheticDataset } from '../src/data/synthetic.js';

const sampler = (o: Partial<ConstructorParameters<typeof DistributedSampler>[0]> = {}) => new DistributedSampler({ size: 103, world: 3, rank: 0, batchPerWorker: 4, seed: 7, ...o });

describe('DistributedSampler: epochs and global batches', () => {
  it('has floor(size / (world·B)) global batches per epoch, dropping the last incomplete one', () => {
    expect(sampler().epochBatches(0)).toBe(8); // 103 / 12
    expect(sampler({ world: 1, batchPerWorker: 12 }).epochBatches(3)).toBe(8);
    expect(sampler({ size: 96 }).epochBatches(0)).toBe(8);
    expect(() => sampler().batchIndices(0, 8)).toThrow(/out of range/);
  });

  it('gives each rank a disjoint slice, and one epoch covers distinct indices', () => {
    for (const epoch of [0, 1]) {
      const seen = new Set<number>();
      for (let rank = 0; rank < 3; rank++) {
        const s = sampler({ rank });
        for (let k = 0; k < s.epochBatches(epoch); k++) {
          const idx = s.batchIndices(epoch, k);
          expect(idx.length).toBe(4);
          for (const i of idx) {
            expect(i).toBeGreaterThanOrEqual(0);
            expect(i).toBeLessThan(103);
            expect(seen.has(i)).toBe(false);
            seen.add(i);
          }
        }
      }
      expect(seen.size).toBe(8 * 12);
    }
  });

  it('n workers × B see exactly what 1 worker × n·B sees, in rank order', () => {
    const single = sampler({ world: 1, batchPerWorker: 12 });
    for (const epoch of [0, 5]) {
      for (let k = 0; k < 8; k++) {
        const union = [0, 1, 2].flatMap((rank) => [...sampler({ rank }).batchIndices(epoch, k)]);
        expect(union).toEqual([...single.batchIndices(epoch, k)]);
        expect([...sampler().globalBatchIndices(epoch, k)]).toEqual(union);
      }
    }
  });

  it('reshuffles every epoch from (seed, epoch), identically on every rank', () => {
    const a = sampler();
    expect([...a.permutation(0)]).toEqual([...sampler({ rank: 2 }).permutation(0)]);
    expect([...a.permutation(1)]).not.toEqual([...a.permutation(0)]);
    expect([...sampler({ seed: 8 }).permutation(0)]).not.toEqual([...sampler().permutation(0)]);
    expect([...a.permutation(0)].sort((x, y) => x - y)).toEqual(Array.from({ length: 103 }, (_, i) => i));
    // going back to an earlier epoch reproduces it
    const e0 = [...a.batchIndices(0, 3)];
    a.batchIndices(4, 0);
    expect([...a.batchIndices(0, 3)]).toEqual(e0);
  });

  it('keeps index order without shuffling', () => {
    expect([...sampler({ shuffle: false, rank: 1 }).batchIndices(0, 2)]).toEqual([28, 29, 30, 31]);
  });

  it('without dropLast, completes the last global batch by wrapping around', () => {
    const s = sampler({ dropLast: false, shuffle: false, rank: 2 });
    expect(s.epochBatches(0)).toBe(9);
    expect([...s.batchIndices(0, 8)]).toEqual([1, 2, 3, 4]); // positions 104..107 of 103 wrap to 1..4
    expect([...sampler({ dropLast: false, shuffle: false, rank: 1 }).batchIndices(0, 8)]).toEqual([100, 101, 102, 0]);
    expect([...sampler({ dropLast: false, shuffle: false, rank: 0 }).batchIndices(0, 8)]).toEqual([96, 97, 98, 99]);
  });

  it('rejects bad options with the reason', () => {
    expect(() => sampler({ rank: 3 })).toThrow(/rank/);
    expect(() => sampler({ world: 0 })).toThrow(/world/);
    expect(() => sampler({ batchPerWorker: 40 })).toThrow(/exceeds the dataset size/);
  });
});

describe('Loader', () => {
  const ds = createSyntheticDataset({ identities: 6, imagesPerIdentity: 4, imageSize: 12, seed: 2 });
  const px = 12 * 12 * 3;

  it('fills [B,S,S,3] images and labels from the sampler', async () => {
    const s = new DistributedSampler({ size: ds.size, world: 2, rank: 1, batchPerWorker: 5, seed: 3 });
    const b = await new Loader({ dataset: ds, sampler: s }).batch(1, 1);
    expect(b.images.length).toBe(5 * px);
    expect([...b.indices]).toEqual([...s.batchIndices(1, 1)]);
    const one = new Float32Array(px);
    b.indices.forEach((index, k) => {
      expect(b.labels[k]).toBe(ds.label(index));
      ds.read(index, one, 0);
      expect(b.images.subarray(k * px, (k + 1) * px)).toEqual(one);
    });
    expect([...b.flipped]).toEqual([0, 0, 0, 0, 0]);
  });

  it('flips per (seed, epoch, index), so sharded and single-worker batches match', async () => {
    const mk = (world: number, rank: number, batchPerWorker: number) =>
      new Loader({ dataset: ds, sampler: new DistributedSampler({ size: ds.size, world, rank, batchPerWorker, seed: 4 }), flip: true });
    const single = await mk(1, 0, 8).batch(2, 1);
    const parts = [await mk(2, 0, 4).batch(2, 1), await mk(2, 1, 4).batch(2, 1)];
    expect([...parts[0]!.images, ...parts[1]!.images]).toEqual([...single.images]);
    expect([...parts[0]!.flipped, ...parts[1]!.flipped]).toEqual([...single.flipped]);
    // a flipped image is the mirror of the stored one
    const k = single.flipped.indexOf(1);
    expect(k).toBeGreaterThanOrEqual(0);
    const img = new Float32Array(px);
    ds.read(single.indices[k]!, img, 0);
    flipHorizontal(img, 0, 12);
    expect(single.images.subarray(k * px, (k + 1) * px)).toEqual(img);
  });

  it('flips about half of the images', () => {
    let n = 0;
    for (let i = 0; i < 2000; i++) if (flipDecision(1, 0, i)) n++;
    expect(n).toBeGreaterThan(900);
    expect(n).toBeLessThan(1100);
  });

  it('flipHorizontal mirrors columns and is its own inverse', () => {
    const sq = Float32Array.from({ length: 3 * 3 * 3 }, (_, i) => i);
    const sqOrig = sq.slice();
    flipHorizontal(sq, 0, 3);
    expect([...sq.subarray(0, 9)]).toEqual([6, 7, 8, 3, 4, 5, 0, 1, 2]);
    flipHorizontal(sq, 0, 3);
    expect(sq).toEqual(sqOrig);
  });

  it('fillBatch checks buffer sizes', () => {
    expect(() => fillBatch(ds, Int32Array.of(0, 1), new Float32Array(px), new Int32Array(2))).toThrow(/images buffer/);
    expect(() => new Loader({ dataset: ds, sampler: new DistributedSampler({ size: 10, world: 1, rank: 0, batchPerWorker: 2, seed: 0 }) })).toThrow(/sampler covers/);
  });
});
