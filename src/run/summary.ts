/** The end of a run: summary.json's content and the few lines a person reads at the terminal. */
import { formatDuration } from './progress.js';

export interface Verification {
  accuracy: number;
  accuracy_std: number;
  threshold: number;
  pairs: number;
}

export interface RunSummary {
  ok: boolean;
  steps: number;
  epochs: number;
  images_per_s: number | null;
  final_loss: number;
  verification: Verification | null;
  checkpoint: string | null;
  run_dir: string;
  /** Where the run's log records are (JSON lines). */
  logs?: string[];
  seconds: number;
  /** The HTML report (RUN_DIR/report/index.html), when it could be written. */
  report?: string;
  /** Unreadable training images that were replaced by others, over all workers and steps. */
  skipped_images: number;
  /** skipped_images over the images drawn. */
  skipped_image_share: number;
  /** Times the job restarted from a checkpoint after a worker failed (maxRestarts). */
  restarts: number;
  error?: string;
  /** The signal that stopped the run (SIGTERM, SIGINT); `error` then says after which step and names the final checkpoint. */
  stopped_by?: string;
}

export function summaryLines(s: RunSummary): string[] {
  const v = s.verification;
  return [
    '',
    s.ok ? 'shardface: training finished' : s.stopped_by ? `shardface: training stopped by ${s.stopped_by}: ${s.error}` : `shardface: training FAILED: ${s.error}`,
    `  steps          ${s.steps} (${s.epochs.toFixed(2)} epochs) in ${formatDuration(s.seconds)}`,
    `  throughput     ${s.images_per_s ? s.images_per_s.toFixed(1) : '-'} images/s`,
    `  final loss     ${Number.isFinite(s.final_loss) ? s.final_loss.toFixed(4) : '-'}`,
    `  skipped        ${s.skipped_images} unreadable images${s.skipped_images > 0 ? ` (${(100 * s.skipped_image_share).toFixed(2)}% of the images drawn)` : ''}`,
    v ? `  verification   ${(v.accuracy * 100).toFixed(2)}% ± ${(v.accuracy_std * 100).toFixed(2)} (threshold ${v.threshold.toFixed(2)}, ${v.pairs} held-out pairs)` : '  verification   -',
    `  checkpoint     ${s.checkpoint ?? '-'}`,
    `  run directory  ${s.run_dir}`,
    ...(s.report ? [`  report         ${s.report}`] : []),
    ...(s.logs?.length ? [`  logs           ${s.logs.join(', ')}`] : []),
  ];
}
