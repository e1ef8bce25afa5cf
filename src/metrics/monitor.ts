/**
 * A run's monitoring endpoint, in one object the training run hooks in with
 * a few lines: Prometheus series at /metrics, the status page at /, its data
 * at /api/status. It reads the coordinator (a snapshot per request) and is fed
 * each completed step; it never talks to workers.
 */
import type { JobSnapshot } from '../coordinator/coordinator.js';
import type { Row } from './charts.js';
import { TrainingMetrics } from './prometheus.js';
import { serveRoutes, type MonitorServer } from './server.js';
import { statusPageHtml } from './status-page.js';
import { RunHistory, workerStatus, type RunStatus } from './status.js';

export interface MonitorOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  steps: number;
  runDir?: string;
  /** The coordinator's view, once there is a coordinator. */
  snapshot: () => JobSnapshot | null;
}

export class RunMonitor {
  private readonly metrics: TrainingMetrics;
  private readonly history = new RunHistory();
  private readonly lastMetrics = new Map<number, Record<string, number>>();
  private latest: Row | null = null;
  private skippedSteps = 0;
  private readonly started = Date.now();
  private server: MonitorServer | null = null;

  private constructor(private readonly opts: MonitorOptions) {
    this.metrics = new TrainingMetrics({ steps: opts.steps, snapshot: opts.snapshot });
  }

  /** Starts serving; rejects with a MonitorServerError naming host and port when it cannot listen. */
  static async start(opts: MonitorOptions): Promise<RunMonitor> {
    const m = new RunMonitor(opts);
    const page = statusPageHtml();
    m.server = await serveRoutes(opts.host, opts.port, {
      '/': { contentType: 'text/html; charset=utf-8', body: () => page },
      '/metrics': { contentType: m.metrics.contentType, body: () => m.metrics.metrics() },
      '/api/status': { contentType: 'application/json', body: () => JSON.stringify(m.status()) },
    });
    return m;
  }

  get url(): string {
    return this.server!.url;
  }

  /** One completed step: every rank's metrics (index = rank), its metrics.jsonl record and wall time. */
  onStep(perRank: Record<string, number>[], rec: Row, wallSeconds: number): void {
    this.metrics.onStep(perRank, rec, wallSeconds);
    perRank.forEach((m, r) => this.lastMetrics.set(r, m));
    if (perRank.some((m) => (m.skipped ?? 0) > 0)) this.skippedSteps++;
    this.latest = rec;
    this.history.push(rec);
  }

  status(): RunStatus {
    const s = this.opts.snapshot();
    const now = Date.now();
    return {
      job: s?.job ?? '',
      phase: s?.phase ?? 'starting',
      step: s?.step ?? 0,
      steps: this.opts.steps,
      elapsedSeconds: (now - this.started) / 1000,
      runDir: this.opts.runDir ?? null,
      latest: this.latest,
      workers: s ? s.workers.map((w) => workerStatus(w, s, w.rank === null ? undefined : this.lastMetrics.get(w.rank), now)).sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9)) : [],
      history: this.history.all(),
      counters: { restarts: s?.restarts ?? 0, skippedSteps: this.skippedSteps },
    };
  }

  async close(): Promise<void> {
    await this.server?.close();
  }
}
