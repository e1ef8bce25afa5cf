/** Starts the heartbeat thread (see heartbeat-thread.ts) and reports the coordinator's silence. */
import { Worker } from 'node:worker_threads';
import type { HeartbeatThreadData, HeartbeatThreadEvent } from './heartbeat-thread.js';

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
      thread.postMessage('stop');
      await new Promise((r) => setTimeout(r, 20));
      await thread.terminate();
    },
  };
}
