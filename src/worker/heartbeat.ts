/** Starts the heartbeat thread (see heartbeat-thread.ts) and reports the coordinator's silence. */
import { Worker } from 'node:worker_threads';
import type { HeartbeatThreadData, HeartbeatThreadEvent } from './heartbeat-thread.js';

/** How long the heartbeat thread gets to end by itself after 'stop'. */
const STOP_GRACE_MS = 5000;

export interface Heartbeat {
  stop(): Promise<void>;
}

export function startHeartbeat(d: HeartbeatThreadData, onSilent: (silentMs: number) => void): Heartbeat {
  // Run the sibling module in the same form as this one (compiled .js, or .ts under tsx).
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  const thread = new Worker(new URL(`./heartbeat-thread${ext}`, import.meta.url), { workerData: d });
  thread.unref();
  thread.on('message', (m: HeartbeatThreadEvent) => {
    if (m.type === 'coordinator-silent') onSilent(m.silentMs);
  });
  return {
    async stop() {
      // Let the thread close its socket and end by itself; terminate() while zeromq.js is still open in it
      // aborts the whole process, so it is only the last resort for a thread that does not end in time.
      // (ref'd meanwhile, so the process cannot exit under a thread that still holds zeromq)
      thread.ref();
      const ended = new Promise<boolean>((r) => thread.once('exit', () => r(true)));
      thread.postMessage('stop');
      let timer: NodeJS.Timeout | undefined;
      const inTime = await Promise.race([ended, new Promise<boolean>((r) => (timer = setTimeout(() => r(false), STOP_GRACE_MS)))]);
      clearTimeout(timer);
      if (!inTime) await thread.terminate();
    },
  };
}
