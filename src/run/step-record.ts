/**
 * One line of metrics.jsonl from the metrics every worker reported for a step,
 * plus the cross-rank consistency checks (replicas, CurricularFace t) that only
 * the coordinator can make.
 */
import { stepPhases } from '../metrics/charts.js';

export type StepRecord = Record<string, number | null>;

export interface StepRecordResult {
  record: StepRecord;
  /** Images the whole job processed this step. */
  images: number;
  /** Of them, unreadable ones that were replaced by another image. */
  skipped: number;
  /** Consistency failures, each to be logged as an error. */
  problems: { message: string; fields: Record<string, unknown> }[];
}

export function stepRecord(step: number, metrics: Record<string, number>[], loss: number | null, wallSeconds: number): StepRecordResult {
  const images = metrics.reduce((a, m) => a + (m.images ?? 0), 0);
  const m0 = metrics[0]!;
  const problems: StepRecordResult['problems'] = [];
  const rec: StepRecord = {
    step,
    epoch: m0.epoch ?? 0,
    loss: loss ?? m0.loss ?? NaN,
    lr: m0.lr ?? 0,
    images_per_s: images / wallSeconds,
    step_seconds: Math.max(...metrics.map((m) => m.seconds ?? 0)),
    grad_norm: m0.gradNorm ?? null,
    // unreadable images replaced this step, summed over ranks (each rank counts its own batch)
    skipped_images: metrics.reduce((a, m) => a + (m.skippedImages ?? 0), 0),
  };
  // the step-time breakdown (data … optimizer, comm_seconds = the all-reduce): each phase's slowest rank
  for (const p of stepPhases()) rec[p.record] = Math.max(...metrics.map((m) => m[p.worker] ?? 0));
  if (metrics.some((m) => m.rssBytes !== undefined)) rec.rss_bytes = Math.max(...metrics.map((m) => m.rssBytes ?? 0));
  // the numerical guard: every rank skipped the step alike; which ranks' own gradients were non-finite
  if (metrics.some((m) => m.skipped === 1)) rec.skipped = 1;
  if (m0.valAccuracy !== undefined) Object.assign(rec, { val_accuracy: m0.valAccuracy, val_accuracy_std: m0.valStd, val_threshold: m0.valThreshold });
  // distillation: each rank's mean over its rows; equal batches, so their mean is the global batch's
  if (m0.distillLoss !== undefined) rec.distill_loss = metrics.reduce((a, m) => a + (m.distillLoss ?? NaN), 0) / metrics.length;
  // CurricularFace: t, which every rank got from the coordinator
  if (m0.curricularT !== undefined) {
    rec.curricular_t = m0.curricularT;
    rec.curricular_t_identical = metrics.every((m) => m.curricularT === m0.curricularT) ? 1 : 0;
    if (!rec.curricular_t_identical) problems.push({ message: 'workers disagree on the CurricularFace t', fields: { t: metrics.map((m) => m.curricularT) } });
  }
  // val sets (config `val`): rank 0 reports val_NAME_* metrics, written as they are
  for (const [k, v] of Object.entries(m0)) if (k.startsWith('val_')) rec[k] = v;
  if (m0.paramsHash !== undefined) {
    const hashes = metrics.map((m) => m.paramsHash);
    rec.replicas_identical = hashes.every((h) => h === hashes[0]) ? 1 : 0;
    if (!rec.replicas_identical) problems.push({ message: 'backbone replicas diverged across workers', fields: { hashes } });
  }
  return { record: rec, images, skipped: rec.skipped_images as number, problems };
}
