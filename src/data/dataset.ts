/**
 * What every training or evaluation data source looks like to the rest of
 * shardface, and how a `--data` specification string is read.
 *
 * Images are delivered HWC (height, width, RGB), float32, normalised the
 * arcface_torch way: `(x/255 − 0.5)/0.5`, so pixel values lie in [−1, 1].
 */

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

/** A parsed `--data` value. Only the embedded synthetic source exists so far. */
export type DataSpec = { kind: 'synthetic'; identities: number };

export class DataSpecError extends Error {
  override name = 'DataSpecError';
}

const PLANNED_KINDS = 'image folders, RecordIO (.rec/.idx) and list files are planned but not available yet';

/**
 * Reads a data specification: `synthetic:IDS` (IDS = number of training
 * identities, a positive integer), e.g. `synthetic:500`.
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
  throw new DataSpecError(
    `data ${JSON.stringify(spec)}: unsupported data source; only synthetic:IDS (e.g. synthetic:500) is supported — ${PLANNED_KINDS}`,
  );
}

/** Normalisation shared by every source: byte value → [−1, 1]. */
export function normalisePixel(x: number): number {
  return (x / 255 - 0.5) / 0.5;
}
