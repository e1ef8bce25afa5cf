/**
 * Datasets read from files: insightface RecordIO (random access through the
 * .idx, only the records asked for are read) and image folders / list files.
 * Both decode with decode.ts (sharp off the event loop; PGM parsed here) and
 * turn every way an image can be unusable into a BadSampleError naming the
 * file, the image and the reason; the loader decides what to do with it.
 */
import { readFile } from 'node:fs/promises';
import { BadSampleError, type AsyncDataset, type LoadOptions } from './dataset.js';
import { DecodeError, decodeInto } from './decode.js';
import { RecordError, RecordIOReader, parseIndex, unpackRecord } from './recordio.js';
import { readFileSync } from 'node:fs';
import type { FileListLayout, RecordIOLayout } from './data-files.js';

export class RecordIODataset implements AsyncDataset {
  readonly flipsOnLoad = true;
  readonly numClasses: number;
  readonly size: number;
  readonly imageSize: number;
  readonly source: string;
  readonly layout: RecordIOLayout;
  private readonly reader: RecordIOReader;

  constructor(layout: RecordIOLayout, imageSize: number) {
    this.layout = layout;
    this.numClasses = layout.numClasses;
    this.size = layout.keys.length;
    this.imageSize = imageSize;
    this.source = layout.rec;
    this.reader = new RecordIOReader(layout.rec, parseIndex(readFileSync(layout.idx, 'utf8'), layout.idx));
  }

  /** The label the identity records give image `index`, or null (plain layout: only the record knows). */
  knownLabel(index: number): number | null {
    const l = this.layout.labels?.[index];
    return l === undefined || l < 0 ? null : l;
  }

  /** Record key of image `index`. */
  key(index: number): number {
    this.check(index);
    return this.layout.keys[index]!;
  }

  /** The encoded image and its label, without decoding. */
  async record(index: number): Promise<{ label: number; image: Uint8Array }> {
    const key = this.key(index);
    const bad = (reason: string) => new BadSampleError(this.source, index, reason, key);
    let payload: Uint8Array;
    try {
      payload = await this.reader.read(key);
    } catch (e) {
      if (e instanceof RecordError) throw bad(e.reason);
      throw e;
    }
    let header;
    let data: Uint8Array;
    try {
      ({ header, data } = unpackRecord(payload));
    } catch (e) {
      throw bad((e as Error).message);
    }
    const label = header.label;
    if (!Number.isInteger(label) || label < 0 || label >= this.numClasses) throw bad(`label ${label} outside [0, ${this.numClasses})`);
    return { label, image: data };
  }

  async load(index: number, out: Float32Array, offset: number, opts?: LoadOptions): Promise<number> {
    const { label, image } = await this.record(index);
    try {
      await decodeInto(image, { size: this.imageSize, flip: opts?.flip === true }, out, offset);
    } catch (e) {
      if (e instanceof DecodeError) throw new BadSampleError(this.source, index, e.message, this.layout.keys[index]!);
      throw e;
    }
    return label;
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) throw new RangeError(`${this.source}: index ${index} out of range [0, ${this.size})`);
  }

  close(): Promise<void> {
    return this.reader.close();
  }
}

/** An image folder or a list file: one file per image, labels known up front. */
export class ImageFileDataset implements AsyncDataset {
  readonly flipsOnLoad = true;
  readonly numClasses: number;
  readonly size: number;
  readonly imageSize: number;
  readonly source: string;
  readonly layout: FileListLayout;

  constructor(layout: FileListLayout, imageSize: number) {
    this.layout = layout;
    this.numClasses = layout.numClasses;
    this.size = layout.files.length;
    this.imageSize = imageSize;
    this.source = layout.path;
  }

  label(index: number): number {
    this.check(index);
    return this.layout.labels[index]!;
  }

  file(index: number): string {
    this.check(index);
    return this.layout.files[index]!;
  }

  async load(index: number, out: Float32Array, offset: number, opts?: LoadOptions): Promise<number> {
    const file = this.file(index);
    let bytes: Uint8Array;
    try {
      bytes = await readFile(file);
    } catch (e) {
      throw new BadSampleError(file, index, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      await decodeInto(bytes, { size: this.imageSize, flip: opts?.flip === true }, out, offset);
    } catch (e) {
      if (e instanceof DecodeError) throw new BadSampleError(file, index, e.message);
      throw e;
    }
    return this.layout.labels[index]!;
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) throw new RangeError(`${this.source}: index ${index} out of range [0, ${this.size})`);
  }

  async close(): Promise<void> {}
}
