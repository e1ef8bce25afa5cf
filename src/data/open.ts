/**
 * From a `--data` value to a dataset: the one place that knows every kind.
 * Synthetic data stays synchronous (rendered in place, fast); file sources
 * are AsyncDatasets that decode off the event loop.
 */
import { parseDataSpec, type AnyDataset, type DataSpec } from './dataset.js';
import { scanDataPath } from './data-files.js';
import { ImageFileDataset, RecordIODataset } from './file-datasets.js';
import { createSyntheticDataset, createSyntheticSplits } from './synthetic.js';

export interface OpenOptions {
  /** Images are decoded (resized, centre-cropped) to imageSize × imageSize. */
  imageSize: number;
  /** Synthetic data: images per identity (default 20) and seed (default 1). */
  imagesPerIdentity?: number;
  seed?: number;
}

/** Opens a `--data` value (or an already parsed spec). */
export async function openDataset(spec: string | DataSpec, o: OpenOptions): Promise<AnyDataset> {
  const s = typeof spec === 'string' ? parseDataSpec(spec) : spec;
  if (s.kind === 'synthetic') return createSyntheticDataset({ identities: s.identities, imagesPerIdentity: o.imagesPerIdentity ?? 20, imageSize: o.imageSize, seed: o.seed ?? 1 });
  const path = s.kind === 'recordio' ? s.rec : s.kind === 'folder' ? s.dir : s.file;
  const layout = scanDataPath(path);
  if (!layout) throw new Error(`data ${path} has disappeared`);
  return layout.kind === 'recordio' ? new RecordIODataset(layout, o.imageSize) : new ImageFileDataset(layout, o.imageSize);
}

/** The settings of the train config that say what to train on. */
export interface TrainingDataConfig {
  data: string;
  imageSize: number;
  imagesPerIdentity: number;
  heldOutIdentities: number;
  seed: number;
}

/**
 * The training set and, for synthetic data, the held-out identities for
 * verification. Real data has no built-in held-out split (heldOut is null);
 * its verification comes from separate `--val` sets.
 */
export async function openTrainingData(cfg: TrainingDataConfig): Promise<{ train: AnyDataset; heldOut: ReturnType<typeof createSyntheticSplits>['heldOut'] }> {
  const spec = parseDataSpec(cfg.data);
  if (spec.kind === 'synthetic') {
    return createSyntheticSplits({ identities: spec.identities, heldOutIdentities: cfg.heldOutIdentities, imagesPerIdentity: cfg.imagesPerIdentity, imageSize: cfg.imageSize, seed: cfg.seed });
  }
  return { train: await openDataset(spec, { imageSize: cfg.imageSize }), heldOut: null };
}
