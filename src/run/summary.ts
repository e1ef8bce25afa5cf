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
  error?: string;
}

export function summaryLines(s: RunSummary): string[] {
  const v = s.verification;
  return [
    '',
    s.ok ? 'shardface: training finished' : `shardface: training FAILED: ${s.error}`,
    `  steps          ${s.steps} (${s.epochs.toFixed(2)} epochs) in ${formatDuration(s.seconds)}`,
    `  throughput     ${s.images_per_s ? s.images_per_s.toFixed(1) : '-'} images/s`,
    `  final loss     ${Number.isFinite(s.final_loss) ? s.final_loss.toFixed(4) : '-'}`,
    v ? `  verification   ${(v.accuracy * 100).toFixed(2)}% ± ${(v.accuracy_std * 100).toFixed(2)} (threshold ${v.threshold.toFixed(2)}, ${v.pairs} held-out pairs)` : '  verification   -',
    `  checkpoint     ${s.checkpoint ?? '-'}`,
    `  run directory  ${s.run_dir}`,
    ...(s.logs?.length ? [`  logs           ${s.logs.join(', ')}`] : []),
  ];
}
