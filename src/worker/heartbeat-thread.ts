/**
 * Heartbeats from a thread of their own. Training steps are synchronous
 * compute that can hold the main event loop for seconds (minutes on a slow
 * CPU backend); liveness must not depend on it. This thread keeps a second
 * control connection whose only job is to say "alive" every period and to
 * notice when the coordinator has gone quiet. Each heartbeat carries the
 * rank's session secret (from welcome): the coordinator accepts heartbeats
 * for a rank only from the connection that proved it holds the rank.
 */
import { randomBytes } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { controlClient, decode, encode, type Transport } from '../protocol/index.js';

export interface HeartbeatThreadData {
  coordinator: string;
  job: string;
  rank: number;
  session: string;
  periodMs: number;
  timeoutMs: number;
  transport: Transport;
}

export type HeartbeatThreadEvent = { type: 'coordinator-silent'; silentMs: number };

async function main(d: HeartbeatThreadData): Promise<void> {
  const socket = controlClient(d.transport, { linger: 0, routingId: `h-${randomBytes(16).toString('hex')}` });
  socket.connect(d.coordinator);
  let lastHeard = Date.now();
  let reported = false;
  const beat = setInterval(() => {
    void socket.send(encode('heartbeat', { job: d.job, step: 0, rank: d.rank }, { session: d.session })).catch(() => undefined);
    const silent = Date.now() - lastHeard;
    if (silent > d.timeoutMs && !reported) {
      reported = true;
      parentPort!.postMessage({ type: 'coordinator-silent', silentMs: silent } satisfies HeartbeatThreadEvent);
    }
  }, d.periodMs);
  parentPort!.on('message', (m: unknown) => {
    if (m === 'stop') {
      clearInterval(beat);
      socket.close();
      // Nothing may keep this thread alive now: it must end on its own. zeromq.js cannot be torn down from a
      // terminated thread (the process aborts with "terminate called after throwing an instance of 'Napi::Error'").
      parentPort!.close();
    }
  });
  try {
    for await (const frames of socket) {
      const r = decode(frames, { job: d.job });
      if (r.ok) lastHeard = Date.now();
    }
  } catch {
    // socket closed on stop
  }
}

void main(workerData as HeartbeatThreadData);
