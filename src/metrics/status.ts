/**
 * What the status page shows, as plain data (`/api/status`): the job, each
 * worker as the coordinator sees it plus its last step's metrics, and a
 * bounded history of step records for the curves. Pure: the monitor feeds it.
 */
import type { JobSnapshot } from '../coordinator/coordinator.js';
import type { MemberView } from '../coordinator/membership.js';
import { stepPhases, type Row } from './charts.js';

export type WorkerState = 'registered' | 'loading' | 'training' | 'waiting' | 'silent' | 'gone' | 'stopped';

export interface WorkerStatus {
  rank: number | null;
  host: string;
  pid: number;
  device: string;
  backend: string;
  state: WorkerState;
  /** Seconds since the coordinator last heard from it (heartbeat or message). */
  lastSeenSecondsAgo: number;
  lastStep: number;
  /** From its last step's metrics; null before its first step. */
  rssBytes: number | null;
  stepSeconds: number | null;
  imagesPerSecond: number | null;
  /** Last step's time by phase (seconds), keyed by the Prometheus phase label. */
  phases: Record<string, number> | null;
  ringBytesSent: number | null;
  ringBytesReceived: number | null;
}

export interface RunStatus {
  job: string;
  phase: string;
  step: number;
  steps: number;
  elapsedSeconds: number;
  runDir: string | null;
  latest: Row | null;
  workers: WorkerStatus[];
  history: Row[];
  counters: { restarts: number; skippedSteps: number };
}

/** A worker silent for more than this many heartbeat periods shows as silent (the job's own timeout acts later). */
const SILENT_HEARTBEATS = 3;

export function workerState(w: MemberView, job: Pick<JobSnapshot, 'phase' | 'step' | 'heartbeatMs'>, now: number): WorkerState {
  if (w.gone) return 'gone';
  if (job.phase === 'stopping' || job.phase === 'done') return 'stopped';
  if (now - w.lastSeen > SILENT_HEARTBEATS * job.heartbeatMs) return 'silent';
  if (w.rank === null) return 'registered';
  if (!w.ready) return 'loading';
  return w.lastStep >= job.step ? 'waiting' : 'training';
}

export function workerStatus(w: MemberView, job: JobSnapshot, last: Record<string, number> | undefined, now: number): WorkerStatus {
  const phases = last ? Object.fromEntries(stepPhases().flatMap((p) => (last[p.worker] !== undefined ? [[p.label, last[p.worker]!]] : []))) : null;
  return {
    rank: w.rank,
    host: w.host,
    pid: w.pid,
    device: w.device,
    backend: w.backend,
    state: workerState(w, job, now),
    lastSeenSecondsAgo: Math.max(0, (now - w.lastSeen) / 1000),
    lastStep: w.lastStep,
    rssBytes: last?.rssBytes ?? null,
    stepSeconds: last?.seconds ?? null,
    imagesPerSecond: last && last.images !== undefined && last.seconds ? last.images / last.seconds : null,
    phases: phases && Object.keys(phases).length > 0 ? phases : null,
    ringBytesSent: last?.ringBytesSent ?? null,
    ringBytesReceived: last?.ringBytesReceived ?? null,
  };
}

/**
 * Step records for the curves, at most `capacity` of them: when full, every
 * other one is dropped (so the history always spans the whole run, ever more
 * coarsely), except records carrying a verification result, which are rare
 * and make the accuracy curve.
 */
export class RunHistory {
  private rows: Row[] = [];

  constructor(private readonly capacity = 2000) {
    if (!(capacity >= 2)) throw new Error(`RunHistory: capacity must be >= 2, got ${capacity}`);
  }

  push(row: Row): void {
    this.rows.push(row);
    if (this.rows.length <= this.capacity) return;
    const last = this.rows.length - 1;
    const thinned = this.rows.filter((r, i) => i % 2 === 0 || i === last || hasVerification(r));
    // (verification every step: thin those too, or the history would grow without bound)
    this.rows = thinned.length <= this.capacity ? thinned : this.rows.filter((_, i) => i % 2 === 0 || i === last);
  }

  all(): Row[] {
    return this.rows.slice();
  }
}

function hasVerification(r: Row): boolean {
  return Object.keys(r).some((k) => k === 'val_accuracy' || /^val_.+_accuracy$/.test(k));
}
