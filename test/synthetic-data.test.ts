import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataSpecError, parseDataSpec } from '../src/data/dataset.js';
import { encodePng, encodePpm, tileImages, writePpm } from '../src/data/image-file.js';
import { createSyntheticDataset, createSyntheticSplits, facePrototype, renderSyntheticFace, sampleVariation } from '../src/data/synthetic.js';
import { renderFace } from '../src/data/face-render.js';
import { Rng } from '../src/common/random.js';
import { makeVerificationPairs } from '../src/eval/pairs.js';
import { tenFoldAccuracy } from '../src/eval/verification.js';

describe('synthetic faces are a pure function of (seed, identity, sample)', () => {
  it('renders the same bytes in a fresh dataset, with or without the cache', () => {
    const a = createSyntheticDataset({ identities: 3, imagesPerIdentity: 4, imageSize: 32, seed: 11 });
    const b = createSyntheticDataset({ identities: 3, imagesPerIdentity: 4, imageSize: 32, seed: 11, cacheBytes: 0 });
    for (let i = 0; i < a.size; i++) {
      expect(Buffer.from(b.rgb(i)).equals(Buffer.from(a.rgb(i)))).toBe(true);
      expect(Buffer.from(a.rgb(i)).equals(Buffer.from(renderSyntheticFace(11, a.label(i), i % 4, 32)))).toBe(true);
    }
  });

  it('differs between seeds, identities and samples', () => {
    const key = (seed: number, id: number, s: number) => Buffer.from(renderSyntheticFace(seed, id, s, 24)).toString('hex');
    const all = new Set([key(1, 0, 0), key(2, 0, 0), key(1, 1, 0), key(1, 0, 1)]);
    expect(all.size).toBe(4);
  });

  it('identityOffset renders later identities, so held-out sets are disjoint from training', () => {
    const { train, heldOut } = createSyntheticSplits({ identities: 6, heldOutIdentities: 2, imagesPerIdentity: 2, imageSize: 16, seed: 3 });
    const whole = createSyntheticDataset({ identities: 8, imagesPerIdentity: 2, imageSize: 16, seed: 3 });
    expect(heldOut!.numClasses).toBe(2);
    expect(heldOut!.label(3)).toBe(1);
    expect(Buffer.from(heldOut!.rgb(3)).equals(Buffer.from(whole.rgb(6 * 2 + 3)))).toBe(true);
    expect(Buffer.from(train.rgb(0)).equals(Buffer.from(whole.rgb(0)))).toBe(true);
  });
});

describe('synthetic dataset API', () => {
  it('labels image i as floor(i / imagesPerIdentity) and reports sizes', () => {
    const ds = createSyntheticDataset({ identities: 5, imagesPerIdentity: 3, imageSize: 8, seed: 0 });
    expect([ds.numClasses, ds.size, ds.imageSize]).toEqual([5, 15, 8]);
    expect([0, 2, 3, 14].map((i) => ds.label(i))).toEqual([0, 0, 1, 4]);
    expect(() => ds.label(15)).toThrow(/out of range/);
    expect(() => createSyntheticDataset({ identities: 0, imagesPerIdentity: 3, imageSize: 8, seed: 0 })).toThrow(/identities/);
    expect(() => createSyntheticDataset({ identities: 2, imagesPerIdentity: 3, imageSize: 4, seed: 0 })).toThrow(/imageSize/);
  });

  it('read() writes HWC float32 (x/255 − 0.5)/0.5 at the offset', () => {
    const ds = createSyntheticDataset({ identities: 2, imagesPerIdentity: 2, imageSize: 16, seed: 5 });
    const n = 16 * 16 * 3;
    const out = new Float32Array(n + 10).fill(99);
    ds.read(3, out, 10);
    const px = ds.rgb(3);
    expect(out[9]).toBe(99);
    for (let i = 0; i < n; i++) expect(out[10 + i]).toBeCloseTo((px[i]! / 255 - 0.5) / 0.5, 6);
    expect(() => ds.read(0, new Float32Array(n - 1), 0)).toThrow(/fit/);
  });

  it.each([8, 32, 48, 112])('renders %i×%i images with real contrast', (size) => {
    const px = renderSyntheticFace(1, 7, 0, size);
    expect(px.length).toBe(size * size * 3);
    let lo = 255;
    let hi = 0;
    for (const v of px) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(hi - lo).toBeGreaterThan(60);
  });
});

describe('synthetic identities carry identity, not just colour', () => {
  const mse = (a: Uint8Array, b: Uint8Array) => a.reduce((s, v, i) => s + (v - b[i]!) ** 2, 0) / a.length;

  it('under one fixed pose/camera, a different identity changes the image far more than resampled noise', () => {
    const size = 32;
    const variation = sampleVariation(9, 0, 0);
    const render = (id: number, noiseSeed: number) => renderFace(facePrototype(9, id), variation, size, new Rng(noiseSeed));
    const base = render(0, 1);
    const sameId = mse(base, render(0, 2));
    let otherIds = 0;
    for (let id = 1; id <= 10; id++) otherIds += mse(base, render(id, 1)) / 10;
    expect(otherIds).toBeGreaterThan(5 * sameId);
  });

  it('mean colour alone verifies identities poorly (within-identity colour varies)', () => {
    const ds = createSyntheticDataset({ identities: 40, imagesPerIdentity: 6, imageSize: 24, seed: 21 });
    const feats = new Float64Array(ds.size * 3);
    for (let i = 0; i < ds.size; i++) {
      const px = ds.rgb(i);
      for (let p = 0; p < px.length; p++) feats[i * 3 + (p % 3)] += px[p]! / 255 / (px.length / 3);
    }
    const labels = Int32Array.from({ length: ds.size }, (_, i) => ds.label(i));
    const pairs = makeVerificationPairs({ labels, pairs: 400, seed: 1 });
    const dist = Array.from(pairs.a, (a, k) => {
      const b = pairs.b[k]!;
      return (feats[a * 3]! - feats[b * 3]!) ** 2 + (feats[a * 3 + 1]! - feats[b * 3 + 1]!) ** 2 + (feats[a * 3 + 2]! - feats[b * 3 + 2]!) ** 2;
    });
    const fine = Array.from({ length: 3000 }, (_, i) => i * 0.0005);
    const acc = tenFoldAccuracy(dist, pairs.issame, { thresholds: fine }).accuracy;
    expect(acc).toBeLessThan(0.72);
  });
});

describe('parseDataSpec', () => {
  it('reads synthetic:IDS', () => {
    expect(parseDataSpec('synthetic:500')).toEqual({ kind: 'synthetic', identities: 500 });
  });
  it.each(['synthetic:0', 'synthetic:', 'synthetic:1.5', 'synthetic:abc', 'synthetic'])('rejects %s with the expected form', (s) => {
    expect(() => parseDataSpec(s)).toThrow(/synthetic:IDS|at least 1/);
  });
  it.each(['/data/ms1m/train.rec', 'folder:/data/faces', 'list:train.lst'])('says %s does not exist and what is accepted', (s) => {
    expect(() => parseDataSpec(s)).toThrow(DataSpecError);
    expect(() => parseDataSpec(s)).toThrow(/no such file or folder.*synthetic:IDS.*RecordIO.*image folder.*list file/);
  });
});

describe('looking at images', () => {
  it('writes a P6 PPM and a valid PNG header', () => {
    const rgb = renderSyntheticFace(1, 0, 0, 16);
    const ppm = encodePpm(rgb, 16, 16);
    expect(ppm.subarray(0, 13).toString('ascii')).toBe('P6\n16 16\n255\n');
    expect(ppm.length).toBe(13 + 16 * 16 * 3);
    const dir = mkdtempSync(join(tmpdir(), 'sf-ppm-'));
    writePpm(join(dir, 'a.ppm'), rgb, 16, 16);
    expect(readFileSync(join(dir, 'a.ppm')).equals(ppm)).toBe(true);
    const png = encodePng(rgb, 16, 16);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.subarray(12, 16).toString('ascii')).toBe('IHDR');
    expect(png.readUInt32BE(16)).toBe(16);
    expect(() => encodePng(rgb, 15, 16)).toThrow(/bytes/);
  });

  it('tiles images into a grid with gaps and zoom', () => {
    const imgs = [0, 1, 2].map((s) => renderSyntheticFace(1, 0, s, 8));
    const g = tileImages(imgs, 8, 2, { zoom: 2, gap: 1 });
    expect([g.width, g.height]).toEqual([2 * 16 + 3, 2 * 16 + 3]);
    const at = (x: number, y: number) => [...g.rgb.subarray((y * g.width + x) * 3, (y * g.width + x) * 3 + 3)];
    expect(at(1, 1)).toEqual([...imgs[0]!.subarray(0, 3)]);
    expect(at(2, 2)).toEqual([...imgs[0]!.subarray(0, 3)]);
    expect(at(0, 0)).toEqual([128, 128, 128]);
  });
});
