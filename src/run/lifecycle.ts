/** Job identity and termination signals, shared by every command that runs a job. */
import { randomBytes } from 'node:crypto';

export function newJobId(): string {
  return `job-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}-${randomBytes(3).toString('hex')}`;
}

/** Resolves once the process gets SIGINT or SIGTERM; calls `onSignal` first. */
export function onTermination(onSignal: (sig: NodeJS.Signals) => void): () => void {
  const h = (sig: NodeJS.Signals) => onSignal(sig);
  process.on('SIGINT', h);
  process.on('SIGTERM', h);
  return () => {
    process.off('SIGINT', h);
    process.off('SIGTERM', h);
  };
}
