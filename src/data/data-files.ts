/**
 * What a data path holds, read without decoding any image: which kind of
 * source it is (RecordIO, image folder, list file), its images in dataset
 * order and, where the layout says, their labels and the number of classes.
 *
 * Scans are synchronous (config checking needs the sizes before any process
 * starts) and cached per path and modification time, so the config check,
 * the coordinator and a worker in the same process scan once.
 *
 * Label assignment:
 * - RecordIO in insightface's layout: record 0 is a header whose labels
 *   [a, b) give the identity records' keys; image keys are [1, a); identity
 *   record a + j holds the image-key range of label j (labels [start, end),
 *   or id/id2 when it has no labels). Classes = b − a, unless a `property`
 *   file (`num_classes,h,w`) says otherwise.
 * - Plain im2rec RecordIO (no header): every key of the .idx is an image, its
 *   label is the first label of its own IRHeader; classes from the property
 *   file, else max label + 1 (a scan of the record headers, 36 bytes each).
 * - Image folder: one sub-folder per identity; folders sorted by name get
 *   labels 0, 1, …; images in a folder sorted by name. Empty folders and
 *   files at the top level are ignored. Symbolic links are followed, for
 *   identity folders and image files alike; a link that loops (to itself, or
 *   an identity folder that leads back to the data folder or above it) or
 *   that points at nothing is an error naming it.
 * - List file: `path<TAB>label` per line (also im2rec's `index<TAB>label<TAB>path`);
 *   relative paths are resolved against the list's folder; `#` starts a comment.
 *   Classes = max label + 1.
 */
import { existsSync, readdirSync, readFileSync, realpathSync, statSync, type Dirent, type Stats } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { parseIndex, RecordError, RecordIOReader, unpackRecord } from './recordio.js';
import type { FileDataSpec } from './dataset.js';

const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.pgm', '.ppm'] as const;

function isImageFile(name: string): boolean {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(extname(name).toLowerCase());
}

export interface RecordIOLayout {
  kind: 'recordio';
  rec: string;
  idx: string;
  property: string | null;
  /** insightface (header record 0 + identity records) or plain im2rec. */
  layout: 'insightface' | 'plain';
  /** Record key of dataset image i. */
  keys: Float64Array;
  /** Labels from the identity records (insightface layout), or null: each record's own header says. */
  labels: Int32Array | null;
  numClasses: number;
  /** [height, width] from the property file, or null. */
  imageShape: [number, number] | null;
  /** Records that could not be read while scanning (identity records; plain layout's header scan), as `key: reason`. */
  problems: string[];
}

export interface FileListLayout {
  kind: 'folder' | 'list';
  /** The folder or list file. */
  path: string;
  /** Absolute image paths in dataset order. */
  files: string[];
  labels: Int32Array;
  numClasses: number;
  /** Folder layout: the identity (sub-folder) name of each label. */
  classNames: string[] | null;
}

export type DataLayout = RecordIOLayout | FileListLayout;

const cache = new Map<string, { mtimeMs: number; layout: DataLayout }>();

/** The layout at `path`, or null when nothing is there. Throws on a malformed source. */
export function scanDataPath(path: string): DataLayout | null {
  const p = resolve(path);
  if (!existsSync(p)) return null;
  const st = statSync(p);
  const hit = cache.get(p);
  if (hit && hit.mtimeMs === st.mtimeMs) return hit.layout;
  let layout: DataLayout;
  if (st.isDirectory()) {
    layout = existsSync(join(p, 'train.rec')) ? scanRecordIO(join(p, 'train.rec')) : scanImageFolder(p);
  } else if (extname(p).toLowerCase() === '.rec' || extname(p).toLowerCase() === '.idx') {
    layout = scanRecordIO(extname(p).toLowerCase() === '.idx' ? p.slice(0, -4) + '.rec' : p);
  } else {
    layout = readImageList(p);
  }
  cache.set(p, { mtimeMs: st.mtimeMs, layout });
  return layout;
}

/** The `--data` facts of a file source (for parseDataSpec), or null when the path does not exist. */
export function describeDataFiles(path: string): FileDataSpec | null {
  const l = scanDataPath(path);
  if (!l) return null;
  if (l.kind === 'recordio') return { kind: 'recordio', rec: l.rec, idx: l.idx, property: l.property, identities: l.numClasses, images: l.keys.length };
  if (l.kind === 'folder') return { kind: 'folder', dir: l.path, identities: l.numClasses, images: l.files.length };
  return { kind: 'list', file: l.path, identities: l.numClasses, images: l.files.length };
}

/** Reads a `property` file: `num_classes,height,width`. */
function readProperty(path: string): { numClasses: number; height: number; width: number } {
  const parts = readFileSync(path, 'utf8')
    .trim()
    .split(/[,\s]+/)
    .map(Number);
  if (parts.length < 1 || !parts.every((x) => Number.isInteger(x) && x > 0)) {
    throw new RecordError(`${path}: expected "num_classes,height,width", got ${JSON.stringify(readFileSync(path, 'utf8').trim().slice(0, 60))}`);
  }
  return { numClasses: parts[0]!, height: parts[1] ?? 0, width: parts[2] ?? parts[1] ?? 0 };
}

export function scanRecordIO(recPath: string): RecordIOLayout {
  const rec = resolve(recPath);
  const idx = rec.replace(/\.rec$/i, '') + '.idx';
  if (!existsSync(rec)) throw new RecordError(`${rec} does not exist`);
  if (!existsSync(idx)) throw new RecordError(`${idx} (the index of ${basename(rec)}) does not exist; RecordIO needs both`);
  const propertyPath = join(dirname(rec), 'property');
  const property = existsSync(propertyPath) ? readProperty(propertyPath) : null;
  const index = parseIndex(readFileSync(idx, 'utf8'), idx);
  if (index.keys.length === 0) throw new RecordError(`${idx} lists no records`);
  const reader = new RecordIOReader(rec, index);
  const problems: string[] = [];
  try {
    const head = readHeaderIfInsightface(reader, problems);
    if (head) {
      const [a, b] = head;
      const keys: number[] = [];
      for (let k = 1; k < a; k++) keys.push(k);
      const labels = new Int32Array(keys.length).fill(-1);
      for (let j = 0; j < b - a; j++) {
        let header;
        try {
          ({ header } = unpackRecord(reader.readSync(a + j, 64)));
        } catch (e) {
          // a broken identity record (e.g. a file cut short): its images fall back to the labels in their own headers
          problems.push(`identity record ${a + j}: ${(e as Error).message}`);
          continue;
        }
        const [start, end] = header.flag >= 2 ? [header.labels[0]!, header.labels[1]!] : [header.id, header.id2];
        for (let k = Math.max(1, start); k < Math.min(end, a); k++) labels[k - 1] = j;
      }
      return {
        kind: 'recordio',
        rec,
        idx,
        property: property ? propertyPath : null,
        layout: 'insightface',
        keys: Float64Array.from(keys),
        labels,
        numClasses: property?.numClasses ?? b - a,
        imageShape: property ? [property.height, property.width] : null,
        problems,
      };
    }
    let numClasses = property?.numClasses ?? 0;
    if (!property) {
      // plain im2rec without a property file: the classes are max label + 1 over the record headers
      let max = -1;
      for (const key of index.keys) {
        try {
          const { header } = unpackRecord(reader.readSync(key, 64));
          if (Number.isInteger(header.label) && header.label > max) max = header.label;
        } catch (e) {
          problems.push(`${key}: ${(e as Error).message}`);
        }
      }
      numClasses = max + 1;
      if (numClasses < 1) throw new RecordError(`${rec}: no record has a usable label${problems.length ? ` (${problems[0]})` : ''}`);
    }
    return {
      kind: 'recordio',
      rec,
      idx,
      property: property ? propertyPath : null,
      layout: 'plain',
      keys: index.keys.slice(),
      labels: null,
      numClasses,
      imageShape: property ? [property.height, property.width] : null,
      problems,
    };
  } finally {
    void reader.close();
  }
}

/** [a, b) from an insightface header record 0, or null when record 0 is an ordinary image (or absent). */
function readHeaderIfInsightface(reader: RecordIOReader, problems: string[]): [number, number] | null {
  if (!reader.has(0)) return null;
  let header;
  let data;
  try {
    ({ header, data } = unpackRecord(reader.readSync(0)));
  } catch (e) {
    // key 0 is insightface's header record; unreadable, the file can only be read as plain im2rec (every key an image)
    problems.push(`header record 0: ${(e as Error).message}; read as a plain im2rec file`);
    return null;
  }
  if (header.flag < 2 || data.length !== 0) return null;
  const a = header.labels[0]!;
  const b = header.labels[1]!;
  if (!Number.isInteger(a) || !Number.isInteger(b) || a < 1 || b < a) return null;
  if (b > a && !reader.has(a)) throw new RecordError(`${reader.path}: header record 0 names identity records [${a}, ${b}) but key ${a} is not in the index`);
  return [a, b];
}

export function scanImageFolder(dir: string): FileListLayout {
  const root = resolve(dir);
  const realRoot = realpathSync(root);
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const classNames: string[] = [];
  const files: string[] = [];
  const labels: number[] = [];
  const identities = readdirSync(root, { withFileTypes: true })
    .filter((e) => entryStats(root, e, root).isDirectory())
    .sort((x, y) => byName(x.name, y.name));
  for (const e of identities) {
    const folder = join(root, e.name);
    if (e.isSymbolicLink()) {
      // an identity folder that leads back to the data folder (or above it) would list the identities as images of one
      const target = realpathSync(folder);
      if (target === realRoot || realRoot.startsWith(target + sep))
        throw new Error(`${folder}: symbolic link loop: the identity folder leads back to ${target}, ${target === realRoot ? 'the data folder itself' : 'a folder above the data folder'}`);
    }
    const images = readdirSync(folder, { withFileTypes: true })
      .filter((f) => isImageFile(f.name) && entryStats(folder, f, root).isFile())
      .map((f) => f.name)
      .sort(byName);
    if (images.length === 0) continue;
    const label = classNames.length;
    classNames.push(e.name);
    for (const f of images) {
      files.push(join(folder, f));
      labels.push(label);
    }
  }
  if (files.length === 0) throw new Error(`${root}: no identity sub-folders with images (${IMAGE_EXTENSIONS.join(', ')}) found`);
  return { kind: 'folder', path: root, files, labels: Int32Array.from(labels), numClasses: classNames.length, classNames };
}

/** What a folder entry is, following a symbolic link to its target; a loop or a dangling link is an error naming it. */
function entryStats(dir: string, e: Dirent, root: string): Pick<Stats, 'isDirectory' | 'isFile'> {
  if (!e.isSymbolicLink()) return e;
  const path = join(dir, e.name);
  try {
    return statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const shown = relative(root, path) || path;
    if (code === 'ELOOP') throw new Error(`${root}: ${shown} is a symbolic link loop (it resolves to itself)`);
    if (code === 'ENOENT') throw new Error(`${root}: ${shown} is a symbolic link to nothing (its target does not exist)`);
    throw new Error(`${root}: cannot follow the symbolic link ${shown}: ${code ?? (err as Error).message}`);
  }
}

function readImageList(listPath: string): FileListLayout {
  const file = resolve(listPath);
  const base = dirname(file);
  const lines = readFileSync(file, 'utf8').split(/\r?\n/);
  const files: string[] = [];
  const labels: number[] = [];
  let max = -1;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line || line.startsWith('#')) continue;
    const f = line.split('\t');
    let path: string;
    let label: string;
    if (f.length === 2) [path, label] = [f[0]!, f[1]!];
    else if (f.length >= 3 && /^\d+$/.test(f[0]!) && /^[-+.\deE]+$/.test(f[1]!)) [label, path] = [f[1]!, f[f.length - 1]!];
    else throw new Error(`${file}:${i + 1}: expected "path<TAB>label", got ${JSON.stringify(line.slice(0, 80))}`);
    const n = Number(label);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${file}:${i + 1}: label must be a non-negative integer, got ${JSON.stringify(label)}`);
    files.push(isAbsolute(path) ? path : join(base, path));
    labels.push(n);
    if (n > max) max = n;
  }
  if (files.length === 0) throw new Error(`${file}: the list names no images`);
  return { kind: 'list', path: file, files, labels: Int32Array.from(labels), numClasses: max + 1, classNames: null };
}
