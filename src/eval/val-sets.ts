/**
 * Verification during training: the train config's `val` key names sets,
 * rank 0 reads them once at start-up and scores the backbone on them every
 * `valEvery` steps (and after the last step). The results ride in that step's
 * metrics as `val_NAME_accuracy`, `val_NAME_accuracy_std`,
 * `val_NAME_threshold` and, where the set has enough negative pairs,
 * `val_NAME_tar_at_far_1e-3` / `_1e-4`; the coordinator writes them to
 * metrics.jsonl.
 *
 * While rank 0 scores, the other ranks have already sent their step-end and
 * wait for the coordinator's next step message (the step clock starts a step
 * only when every rank has ended the previous one), so no collective is left
 * pending and the ring's receive timeout cannot fire; heartbeats keep coming
 * from every worker's heartbeat thread.
 */
import type { Backbone } from '../models/index.js';
import { loadVerificationSet, VerificationSetError, type VerificationSet, type VerificationSpec } from './verification-set.js';
import { verifySet, type SetVerificationOptions } from './verify-set.js';

export interface ValSet {
  name: string;
  set: VerificationSet;
}

/**
 * The `val` value: comma-separated `NAME=PATH` entries, where PATH is
 * `FILE.bin` (an insightface pack), `PAIRS::IMAGES_DIR` (an LFW-style
 * pairs.txt over an image folder) or any other file (a pair list). NAME
 * (letters, digits, _) names the metrics. `none` (the default) or '' = no sets.
 */
export function parseValSpecs(value: string): { name: string; spec: VerificationSpec }[] {
  const out: { name: string; spec: VerificationSpec }[] = [];
  if (value.trim() === '' || value.trim() === 'none') return out;
  for (const raw of value.split(',')) {
    const entry = raw.trim();
    const eq = entry.indexOf('=');
    const bad = (why: string) => new VerificationSetError(`val: ${why} in ${JSON.stringify(entry)} (expected NAME=FILE.bin, NAME=PAIRS.txt::IMAGES_DIR or NAME=PAIR_LIST, comma-separated)`);
    if (eq <= 0) throw bad('no NAME=');
    const name = entry.slice(0, eq);
    const path = entry.slice(eq + 1).trim();
    if (!/^[A-Za-z0-9_]+$/.test(name)) throw bad(`the name ${JSON.stringify(name)} must be letters, digits and _`);
    if (path === '') throw bad('no path');
    if (out.some((o) => o.name === name)) throw bad(`the name ${name} is used twice`);
    const sep = path.indexOf('::');
    let spec: VerificationSpec;
    if (sep >= 0) {
      const pairs = path.slice(0, sep);
      const images = path.slice(sep + 2);
      if (pairs === '' || images === '') throw bad('PAIRS::IMAGES_DIR needs both parts');
      spec = { kind: 'lfw-pairs', pairs, images };
    } else if (path.toLowerCase().endsWith('.bin')) spec = { kind: 'bin', file: path };
    else spec = { kind: 'pair-list', file: path };
    out.push({ name, spec });
  }
  return out;
}

/** Parses `val` and reads every set (files are checked now, images decoded at scoring time). */
export function loadValSets(value: string): ValSet[] {
  return parseValSpecs(value).map(({ name, spec }) => {
    try {
      return { name, set: loadVerificationSet(spec) };
    } catch (e) {
      throw new VerificationSetError(`val ${name}: ${(e as Error).message}`);
    }
  });
}

/** Scores every set; the answer is metrics keyed `val_NAME_…` (TAR@FAR left out where undefined). */
export async function scoreValSets(backbone: Backbone, sets: readonly ValSet[], opts: SetVerificationOptions): Promise<Record<string, number>> {
  const metrics: Record<string, number> = {};
  for (const { name, set } of sets) {
    const r = await verifySet(backbone, set, opts);
    metrics[`val_${name}_accuracy`] = r.accuracy;
    metrics[`val_${name}_accuracy_std`] = r.std;
    metrics[`val_${name}_threshold`] = r.threshold;
    for (const [far, tar] of Object.entries(r.tarAtFar)) if (tar !== null) metrics[`val_${name}_tar_at_far_${far}`] = tar;
  }
  return metrics;
}
