/**
 * What every training or evaluation data source looks like to the rest of
 * shardface, and how a `--data` specification string is read.
 *
 * Images are delivered HWC (height, width, RGB), float32, normalised the
 * arcface_torch way: `(x/255 − 0.5)/0.5`, so pixel values lie in [−1, 1].
 */

import { describeDataFiles } from './data-files.js';

export interface Dataset {
  /** Number of identities (classifier rows); labels are 0..numClasses−1. */
  readonly numClasses: number;
  /** Number of images. */
  readonly size: number;
  /** Images are imageSize × imageSize × 3. */
  readonly imageSize: number;
  /** Identity label of image `index`. */
  label(index: number): number;
  /** Writes image `index` as HWC float32 normalised (x/255 − 0.5)/0.5 into `out` at `offset`. */
  read(index: number, out: Float32Array, offset: number): void;
}

/**
 * A data source whose images are decoded from files (RecordIO, image folders,
 * list files): reading is asynchronous, so decoding happens off the event
 * loop (sharp/libvips threads) while the step computes. The label comes with
 * the image, as insightface reads it from the record itself.
 */
export interface LoadOptions {
  /** Write the image mirrored horizontally (columns reversed). Only honoured when `flipsOnLoad`. */
  flip?: boolean;
}

export interface AsyncDataset {
  readonly numClasses: number;
  readonly size: number;
  /** Images are decoded to imageSize × imageSize × 3. */
  readonly imageSize: number;
  /** Where the data lives (a file or folder), for messages. */
  readonly source: string;
  /**
   * Decodes image `index` as HWC float32 normalised (x/255 − 0.5)/0.5 into
   * `out` at `offset` and resolves to its label. An unreadable image rejects
   * with a BadSampleError (never a wrong label).
   */
  load(index: number, out: Float32Array, offset: number, opts?: LoadOptions): Promise<number>;
  /** True when load() honours `opts.flip` (the loader then skips its own flip pass). */
  readonly flipsOnLoad?: boolean;
  /** Releases open files. */
  close(): Promise<void>;
}

/** Either kind of training data the loader accepts. */
export type AnyDataset = Dataset | AsyncDataset;

export function isAsyncDataset(d: AnyDataset): d is AsyncDataset {
  return typeof (d as AsyncDataset).load === 'function';
}

/** One image that cannot be used: which file, which image, why. */
export class BadSampleError extends Error {
  override name = 'BadSampleError';
  constructor(
    /** The file holding the image (the .rec, or the image file itself). */
    readonly file: string,
    /** Dataset index of the image. */
    readonly index: number,
    /** Why, in a few words (bad magic, truncated record, cannot decode image…). */
    readonly reason: string,
    /** The RecordIO key, where there is one. */
    readonly key: number | null = null,
  ) {
    super(`${file}: image ${index}${key !== null && key !== index ? ` (record ${key})` : ''}: ${reason}`);
  }
}

/** A parsed `--data` value, with the sizes read from the data itself. */
export type DataSpec =
  | { kind: 'synthetic'; identities: number }
  | {
      kind: 'recordio';
      /** train.rec, train.idx and the optional property file (num_classes,h,w). */
      rec: string;
      idx: string;
      property: string | null;
      /** Classes, from the property file, the header record or the labels (max + 1). */
      identities: number;
      images: number;
    }
  | { kind: 'folder'; dir: string; identities: number; images: number }
  | { kind: 'list'; file: string; identities: number; images: number };

export type FileDataSpec = Exclude<DataSpec, { kind: 'synthetic' }>;

export class DataSpecError extends Error {
  override name = 'DataSpecError';
}

const PREFIXES = { rec: 'recordio', folder: 'folder', list: 'list' } as const;

const KINDS_HELP =
  'synthetic:IDS (e.g. synthetic:500), a RecordIO file (train.rec next to train.idx) or its folder, an image folder with one sub-folder per identity, or a list file (path<TAB>label per line)';

/**
 * Reads a data specification:
 * - `synthetic:IDS`: IDS procedurally drawn identities (a positive integer);
 * - `PATH.rec`, or a folder holding `train.rec` + `train.idx`: insightface RecordIO;
 * - a folder with one sub-folder per identity (JPEG, PNG, PGM);
 * - a list file (`.lst`, `.txt`, `.tsv`, …): `path<TAB>label` per line;
 * - `rec:PATH`, `folder:PATH`, `list:PATH`: the same, insisting on the kind.
 * For files the sizes are read (once per process) from the data.
 */
export function parseDataSpec(spec: string): DataSpec {
  const s = spec.trim();
  const colon = s.indexOf(':');
  const kind = colon >= 0 ? s.slice(0, colon) : s;
  const arg = colon >= 0 ? s.slice(colon + 1) : '';
  if (kind === 'synthetic') {
    if (!/^[0-9]+$/.test(arg)) {
      throw new DataSpecError(`data ${JSON.stringify(spec)}: expected synthetic:IDS with IDS a positive integer (e.g. synthetic:500)`);
    }
    const identities = Number(arg);
    if (identities < 1 || !Number.isSafeInteger(identities)) {
      throw new DataSpecError(`data ${JSON.stringify(spec)}: the number of identities must be at least 1`);
    }
    return { kind: 'synthetic', identities };
  }
  if (s === '') throw new DataSpecError(`data is empty; expected ${KINDS_HELP}`);
  // an optional kind prefix (rec:, folder:, list:) says what the path must be
  const forced = (PREFIXES as Record<string, FileDataSpec['kind']>)[kind];
  const path = forced ? arg : s;
  let facts: FileDataSpec | null;
  try {
    facts = describeDataFiles(path);
  } catch (e) {
    throw new DataSpecError(`data ${JSON.stringify(spec)}: ${(e as Error).message}`);
  }
  if (!facts) throw new DataSpecError(`data ${JSON.stringify(spec)}: no such file or folder${forced ? '' : ' and not synthetic:IDS'}; expected ${KINDS_HELP}`);
  if (forced && facts.kind !== forced)
    throw new DataSpecError(`data ${JSON.stringify(spec)}: ${path} is ${facts.kind === 'recordio' ? 'RecordIO' : `a ${facts.kind}`}, not ${forced === 'recordio' ? 'RecordIO' : `a ${forced}`}`);
  return facts;
}

/** Normalisation shared by every source: byte value → [−1, 1]. */
export function normalisePixel(x: number): number {
  return (x / 255 - 0.5) / 0.5;
}
