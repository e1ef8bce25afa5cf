/**
 * The job's Prometheus series (prom-client), fed by the coordinator: per step
 * from every worker's step metrics, and at scrape time from the coordinator's
 * view of its members (who they are, when it last heard from them). Names and
 * meanings are listed in the README's "Watching a run".
 *
 * Traffic counters come from the workers' own counts of the bytes they put on
 * and took off their sockets (ring and control plane, headers included), which
 * they report cumulatively with every step; the heartbeat thread's few bytes
 * are not counted.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { JobSnapshot } from '../coordinator/coordinator.js';
import { stepPhases, type Row } from './charts.js';
import { workerState } from './status.js';

/** The cumulative byte counts workers report, and the plane each belongs to. */
const TRAFFIC = [
  { key: 'ringBytesSent', plane: 'ring', dir: 'sent' },
  { key: 'ringBytesReceived', plane: 'ring', dir: 'received' },
  { key: 'controlBytesSent', plane: 'control', dir: 'sent' },
  { key: 'controlBytesReceived', plane: 'control', dir: 'received' },
] as const;

export class TrainingMetrics {
  readonly registry = new Registry();
  private readonly step: Gauge;
  private readonly epoch: Gauge;
  private readonly loss: Gauge;
  private readonly lr: Gauge;
  private readonly gradNorm: Gauge;
  private readonly imagesPerSecond: Gauge;
  private readonly images: Counter;
  private readonly stepWall: Histogram;
  private readonly workerImagesPerSecond: Gauge;
  private readonly workerStepSeconds: Gauge;
  private readonly phaseSeconds: Gauge;
  private readonly phaseSecondsTotal: Counter;
  private readonly rss: Gauge;
  private readonly bytesSent: Counter;
  private readonly bytesReceived: Counter;
  private readonly skipped: Counter;
  private readonly accuracy: Gauge;
  /** Last cumulative byte count seen per rank and key, so counters grow by the difference. */
  private readonly lastTraffic = new Map<string, number>();

  constructor(opts: { steps: number; snapshot: () => JobSnapshot | null }) {
    const registers = [this.registry];
    const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers });
    const counter = (name: string, help: string, labelNames: string[] = []) => new Counter({ name, help, labelNames, registers });
    this.step = gauge('shardface_step', 'Last completed training step.');
    gauge('shardface_steps_planned', 'Steps this run is to train.').set(opts.steps);
    this.epoch = gauge('shardface_epoch', 'Epoch of the last completed step.');
    this.loss = gauge('shardface_loss', 'Loss of the last step (mean over the global batch).');
    this.lr = gauge('shardface_lr', 'Learning rate of the last step.');
    this.gradNorm = gauge('shardface_grad_norm', 'Backbone gradient norm of the last step, before clipping.');
    this.imagesPerSecond = gauge('shardface_images_per_second', 'Images per second of the whole job over the last step (coordinator wall clock).');
    this.images = counter('shardface_images_total', 'Images trained on by all workers together.');
    this.stepWall = new Histogram({
      name: 'shardface_step_duration_seconds',
      help: 'Wall time of a step at the coordinator, from the previous step end to this one.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.workerImagesPerSecond = gauge('shardface_worker_images_per_second', 'Images per second of one worker over its own last step (its batch / its step time).', ['rank']);
    this.workerStepSeconds = gauge('shardface_worker_step_seconds', 'Time one worker spent on its last step.', ['rank']);
    this.phaseSeconds = gauge('shardface_worker_phase_seconds', "One worker's last step by phase: data, forward, classifier (exchange), backward, allreduce, optimizer.", ['rank', 'phase']);
    this.phaseSecondsTotal = counter('shardface_worker_phase_seconds_total', 'Time one worker spent in each phase, all steps so far.', ['rank', 'phase']);
    this.rss = gauge('shardface_worker_rss_bytes', 'Resident set size of a worker process at the end of its last step.', ['rank']);
    this.bytesSent = counter('shardface_worker_bytes_sent_total', 'Bytes a worker sent, by plane (ring = data plane to its right neighbour, control = to the coordinator).', ['rank', 'plane']);
    this.bytesReceived = counter('shardface_worker_bytes_received_total', 'Bytes a worker received, by plane (ring = from its left neighbour, control = from the coordinator).', ['rank', 'plane']);
    const { snapshot } = opts;
    new Counter({
      name: 'shardface_restarts_total',
      help: 'Times the job was restarted from a checkpoint after a failure.',
      registers,
      // the coordinator counts restarts; the counter shows its count
      collect() {
        this.reset();
        const n = snapshot()?.restarts ?? 0;
        if (n > 0) this.inc(n);
      },
    });
    this.skipped = counter('shardface_skipped_steps_total', 'Steps skipped (not applied) because a worker reported them skipped.');
    this.accuracy = gauge('shardface_verification_accuracy', 'Last verification accuracy, by set (held-out = the pairs held out of the training data; others: the config `val` sets).', ['set']);

    // Worker views are read at scrape time (so a scrape between steps still shows fresh heartbeats): the first
    // of these series, which prom-client serialises first, refreshes the others.
    new Gauge({
      name: 'shardface_workers_expected',
      help: 'Workers the job needs.',
      registers,
      collect() {
        const s = snapshot();
        workerInfo.reset();
        lastSeen.reset();
        up.reset();
        if (!s) return;
        this.set(s.world);
        registered.set(s.workers.length);
        const now = Date.now();
        for (const w of s.workers) {
          const rank = w.rank === null ? `pid${w.pid}` : String(w.rank);
          workerInfo.set({ rank, host: w.host, pid: String(w.pid), device: w.device, backend: w.backend }, 1);
          lastSeen.set({ rank }, Math.max(0, (now - w.lastSeen) / 1000));
          const state = workerState(w, s, now);
          up.set({ rank }, state === 'gone' || state === 'silent' ? 0 : 1);
        }
      },
    });
    const registered = gauge('shardface_workers_registered', 'Workers registered with the coordinator.');
    const workerInfo = gauge('shardface_worker_info', 'One series per worker, value 1: its rank, host, pid, device and backend.', ['rank', 'host', 'pid', 'device', 'backend']);
    const lastSeen = gauge('shardface_worker_last_seen_seconds', 'Seconds since the coordinator last heard from a worker (heartbeat or message).', ['rank']);
    const up = gauge('shardface_worker_up', '1 while a worker is in the job and heard from within 3 heartbeats, else 0.', ['rank']);
    collectDefaultMetrics({ register: this.registry, prefix: 'shardface_coordinator_' });
  }

  /** One completed step: every rank's metrics (index = rank), the step record written to metrics.jsonl, and the step's wall time. */
  onStep(perRank: Record<string, number>[], rec: Row, wallSeconds: number): void {
    const num = (v: number | null | undefined) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
    if (num(rec.step) !== null) this.step.set(rec.step as number);
    if (num(rec.epoch) !== null) this.epoch.set(rec.epoch as number);
    if (num(rec.loss) !== null) this.loss.set(rec.loss as number);
    if (num(rec.lr) !== null) this.lr.set(rec.lr as number);
    if (num(rec.grad_norm) !== null) this.gradNorm.set(rec.grad_norm as number);
    if (num(rec.images_per_s) !== null) this.imagesPerSecond.set(rec.images_per_s as number);
    if (num(rec.val_accuracy) !== null) this.accuracy.set({ set: 'held-out' }, rec.val_accuracy as number);
    for (const [k, v] of Object.entries(rec)) {
      const m = /^val_(.+)_accuracy$/.exec(k);
      if (m && num(v) !== null) this.accuracy.set({ set: m[1]! }, v as number);
    }
    if (wallSeconds > 0) this.stepWall.observe(wallSeconds);
    if (perRank.some((m) => (m.skipped ?? 0) > 0)) this.skipped.inc();
    perRank.forEach((m, r) => {
      const rank = String(r);
      if (m.images !== undefined) this.images.inc(m.images);
      if (m.seconds !== undefined) {
        this.workerStepSeconds.set({ rank }, m.seconds);
        if (m.images !== undefined && m.seconds > 0) this.workerImagesPerSecond.set({ rank }, m.images / m.seconds);
      }
      for (const p of stepPhases()) {
        const v = m[p.worker];
        if (v === undefined || !Number.isFinite(v)) continue;
        this.phaseSeconds.set({ rank, phase: p.label }, v);
        if (v > 0) this.phaseSecondsTotal.inc({ rank, phase: p.label }, v);
      }
      if (m.rssBytes !== undefined) this.rss.set({ rank }, m.rssBytes);
      for (const t of TRAFFIC) {
        const v = m[t.key];
        if (v === undefined) continue;
        const id = `${rank}:${t.key}`;
        const delta = v - (this.lastTraffic.get(id) ?? 0);
        this.lastTraffic.set(id, v);
        // counters only grow; a smaller count means the worker restarted and counts afresh
        (t.dir === 'sent' ? this.bytesSent : this.bytesReceived).inc({ rank, plane: t.plane }, delta >= 0 ? delta : v);
      }
    });
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
