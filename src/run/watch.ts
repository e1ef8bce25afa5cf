/** Watching a run: its monitoring endpoint while it trains, its report once it ends (see the README's "Watching a run"). */
import type { JobSnapshot } from '../coordinator/coordinator.js';
import type { ShardfaceLogger } from '../log/logger.js';
import { RunMonitor } from '../metrics/monitor.js';
import { MonitorServerError } from '../metrics/server.js';
import type { RunSummary } from './summary.js';

/**
 * The monitoring endpoint at host:port (0 = any free port); null when port is
 * -1 (off); 'failed', said on stderr, when it cannot listen.
 */
export async function startMonitor(o: { host: string; port: number; steps: number; runDir?: string }, snapshot: () => JobSnapshot | null, who = 'shardface'): Promise<RunMonitor | null | 'failed'> {
  if (o.port < 0) return null;
  try {
    return await RunMonitor.start({ ...o, snapshot });
  } catch (e) {
    if (!(e instanceof MonitorServerError)) throw e;
    process.stderr.write(`${who}: ${e.message}\n`);
    return 'failed';
  }
}

/** RUN_DIR/report/; a failure is logged, never fails the run (the metrics are safe in metrics.jsonl). Returns the HTML's path. */
export async function writeRunReport(runDir: string, summary: RunSummary, logger: ShardfaceLogger): Promise<string | null> {
  try {
    const { writeReport } = await import('./report.js'); // (sharp, loaded only at the end of a run)
    const files = await writeReport(runDir, { summary });
    logger.log.info({ report: files.html, plots: files.pngs }, 'report written');
    return files.html;
  } catch (e) {
    logger.log.error({ err: (e as Error).message }, 'could not write the report');
    return null;
  }
}
