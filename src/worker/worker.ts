/**
 * A worker process: pins its device, registers with the coordinator, learns
 * its rank and class range, brings up the compute backend and the ring, then
 * runs whatever steps the coordinator clocks until told to stop.
 */
import { hostname } from 'node:os';
import { signalExitCode } from '../common/signals.js';
import type { ShardfaceLogger } from '../log/logger.js';
import { initBackend, type BackendChoice } from '../ops/backend.js';
import { bindInbox, Ring } from '../collectives/ring.js';
import { openCollectives, type TransportChoice } from '../collectives/transport.js';
import type { Collectives } from '../collectives/collectives.js';
import { ControlChannel, JobStopped } from './control.js';
import { applyPin, choosePin, describeDevice, localRankFromEnv, type DevicePin } from './device.js';
import { chooseAdvertised } from './advertise.js';
import { startHeartbeat, type Heartbeat } from './heartbeat.js';
import { JOB_MODULES, type JobFactory, type WorkerContext, type WorkerJob } from './job.js';
import { PLAIN_TRANSPORT, type StepKind, type Transport } from '../protocol/index.js';
import { RateLimitedLog } from '../log/rate-limit.js';

export interface WorkerOptions {
  coordinator: string;
  rank?: number;
  device?: string;
  /** Compute backend; default: the job config's `backend`, else auto. */
  backend?: BackendChoice;
  /** Native kernel threads; default: the job config's `threads` (0 = share of the cores). */
  threads?: number;
  job?: string;
  token: string;
  /** Host name or address other workers use to reach this one's data plane. */
  advertise?: string;
  logger: ShardfaceLogger;
  /** CURVE keys and frame limit; default plain TCP. */
  transport?: Transport;
  /** Until the job's workerTimeoutMs is known (welcome): how long the coordinator may be unreachable or silent. Default 30 s. */
  timeoutMs?: number;
}

/**
 * Returns the process exit code. A job with `maxRestarts` may stop this worker
 * for a restart (another rank failed): it then registers again, in this
 * process, for the rank it held, and the coordinator starts the next round
 * from the newest checkpoint (docs/architecture.md#restarts).
 */
export async function runWorker(opts: WorkerOptions): Promise<number> {
  const { log } = opts.logger;
  // once per process: the pin narrows CUDA_VISIBLE_DEVICES, which a second choice would read as the parent's list
  const pin = choosePin({ device: opts.device, localRank: localRankFromEnv(), visible: process.env.CUDA_VISIBLE_DEVICES });
  if (!pin.ok) {
    log.error({ device: opts.device ?? null, cudaVisibleDevices: process.env.CUDA_VISIBLE_DEVICES ?? null }, pin.message);
    return 1;
  }
  applyPin(pin);
  for (let o = opts; ;) {
    const r = await runWorkerRound(o, pin);
    if (typeof r === 'number') return r;
    o = { ...o, rank: r.rank, job: r.job };
  }
}

/** A stop for a restart: register again as `rank` of `job`. */
interface RegisterAgain {
  rank: number | undefined;
  job: string;
}

/** One round of a job, from registering to a stop: the exit code, or a restart to register again for. */
async function runWorkerRound(opts: WorkerOptions, pin: DevicePin): Promise<number | RegisterAgain> {
  const { log, ctx: logCtx } = opts.logger;
  const device = pin.cudaVisibleDevices ?? 'cpu';
  let advertised;
  try {
    advertised = await chooseAdvertised(opts.coordinator, opts.advertise);
  } catch (e) {
    log.error({ coordinator: opts.coordinator }, (e as Error).message);
    return 1;
  }
  const transport = opts.transport ?? PLAIN_TRANSPORT;
  const strangers = new RateLimitedLog(log, 'refused connections or messages from strangers on the ring inbox');
  const {
    inbox,
    address: dataAddress,
    release: releaseInbox,
  } = await bindInbox(advertised.bind, advertised.host, transport, {
    onRefused: (peer, why) => strangers.warn({ peer, why }, 'ring inbox refused a connection: CURVE key not authorised'),
  });

  const control = new ControlChannel(opts.coordinator, opts.logger, transport);
  control.job = opts.job ?? '';
  control.rank = opts.rank ?? -1;
  control.connect();
  control.watch(opts.timeoutMs ?? 30_000);
  let ring: Ring | null = null;
  let collectives: Collectives | null = null;
  let job: WorkerJob | null = null;
  let heartbeat: Heartbeat | null = null;
  // A stop (coordinator's, its silence, a signal) ends whatever this worker waits on, connecting included.
  const stopConnecting = new AbortController();
  control.onStop = () => {
    stopConnecting.abort();
    void ring?.close();
    void collectives?.close();
    inbox.close();
  };
  // A signal while training (schedulers signal every process of a job at about the same time): keep serving the
  // coordinator, which finishes the step, asks for a final checkpoint and stops the job; tell it, in case it was not
  // signalled itself. Bounded by the job's shutdownTimeoutMs; a second signal, or one at any other time, stops at once.
  let signalled: NodeJS.Signals | null = null;
  let graceTimer: NodeJS.Timeout | undefined;
  let training = false;
  let graceMs = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    const first = signalled === null;
    signalled ??= sig;
    if (!first || !training) return control.fail(`received ${sig}${first ? '' : ' again'}`);
    log.warn({ signal: sig, graceMs }, `received ${sig}: serving the coordinator until it stops the job after a final checkpoint (at most ${graceMs / 1000} s; a second signal stops at once)`);
    control.send('event', { name: 'signal', fields: { signal: sig } }).catch(() => undefined);
    graceTimer = setTimeout(() => control.fail(`received ${sig}, and the coordinator did not stop the job within ${graceMs / 1000} s`), graceMs);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    await control.send(
      'hello',
      { host: hostname(), pid: process.pid, token: opts.token, dataAddress, device, backend: opts.backend ?? 'job default', curveKey: transport.curve?.own.publicKey ?? '' },
      [],
      0,
    );
    log.info({ coordinator: opts.coordinator, requestedRank: opts.rank ?? null, device, deviceSource: pin.source, dataAddress, advertised: advertised.how }, 'registering');
    const welcome = (await control.waitFor('welcome')).header;
    const w = welcome.body;
    control.job = welcome.job;
    control.welcomed = true;
    control.rank = w.rank;
    control.world = w.world;
    logCtx.rank = w.rank;
    log.info({ world: w.world, classRange: w.classRange, peers: w.peers, curve: transport.curve !== null }, 'joined job');

    const timeoutMs = Number(w.config.workerTimeoutMs ?? 30000);
    control.stopWatching();
    heartbeat = startHeartbeat({ coordinator: opts.coordinator, job: welcome.job, rank: w.rank, session: w.session, periodMs: w.heartbeatMs, timeoutMs, transport }, (ms) =>
      control.fail(`coordinator at ${opts.coordinator} silent for ${(ms / 1000).toFixed(1)} s`),
    );

    const cfgThreads = Number(w.config.threads ?? 0);
    const backend = await initBackend(opts.backend ?? (w.config.backend as BackendChoice | undefined) ?? 'auto', {
      threads: opts.threads ?? (cfgThreads > 0 ? cfgThreads : undefined),
    });
    log.info({ backend: backend.backend, device: backend.device, threads: backend.threads, why: backend.reason }, 'compute backend');
    if (backend.warning) log.warn({ backend: backend.backend }, backend.warning);
    const dev = describeDevice(backend.backend, pin);
    log[dev.level]({ gpu: dev.gpu, cudaVisibleDevices: pin.cudaVisibleDevices, deviceSource: pin.source }, `device: ${dev.message}`);
    if (dev.level === 'error') throw new Error(dev.message);

    // Connecting is bounded by the job's worker timeout (an unreachable neighbour is named).
    // Within steps no collective timeout: a slow peer is not a dead one. Liveness is the
    // coordinator's job (heartbeats); when it stops the job, closing the inbox
    // ends whatever collective is waiting.
    ring = await Ring.connect({
      job: welcome.job,
      rank: w.rank,
      world: w.world,
      peers: w.peers,
      inbox,
      timeoutMs: -1,
      connectTimeoutMs: timeoutMs,
      signal: stopConnecting.signal,
      transport,
      peerKeys: w.peerKeys,
      ids: w.ringIds,
      onStranger: (info) => strangers.warn(info, "ring inbox dropped a message from a connection other than the left neighbour's"),
    });
    // Same-host workers move the gradient buckets through shared memory; the slot is one bucket.
    collectives = await openCollectives({
      ring,
      job: welcome.job,
      rank: w.rank,
      world: w.world,
      hosts: w.hosts,
      choice: (w.config.collectiveTransport as TransportChoice | undefined) ?? 'auto',
      slotBytes: Math.ceil(Number(w.config.bucketMb ?? 16) * 2 ** 20),
      timeoutMs,
      // Jobs over several hosts: the ring among equal local ranks gets its own inbox, bound like the first.
      bindCrossInbox: () =>
        bindInbox(advertised.bind, advertised.host, transport, { onRefused: (peer, why) => strangers.warn({ peer, why }, 'cross-host ring inbox refused a connection: CURVE key not authorised') }),
      transport,
      peerKeys: w.peerKeys,
      onChoice: ({ transport: via, reason, removed }) => {
        for (const name of removed) log.warn({ segment: name }, 'removed a stale shared-memory segment left by a dead run');
        log.info({ collectiveTransport: via, reason }, `gradient all-reduce over ${via === 'shm' ? 'shared memory' : 'the TCP ring'}`);
      },
    });
    const kind = (typeof w.config.kind === 'string' ? w.config.kind : 'empty') as StepKind;
    const ctx: WorkerContext = {
      rank: w.rank,
      world: w.world,
      numClasses: w.numClasses,
      classRange: w.classRange,
      seed: w.seed,
      config: w.config,
      ring,
      collectives,
      logger: opts.logger,
      async exchangeSoftmax(step, batch, stats) {
        await control.send(
          'softmax-stats',
          { rows: stats.rowMax.length, batch },
          [
            { name: 'rowMax', data: stats.rowMax },
            { name: 'sumExp', data: stats.sumExp },
            { name: 'target', data: stats.target },
            { name: 'owned', data: stats.owned },
            ...('rowLossExtra' in stats && stats.rowLossExtra ? [{ name: 'rowLossExtra', data: stats.rowLossExtra }] : []),
          ],
          step,
        );
        const m = await control.waitFor('softmax-reduced', step);
        const lse = m.tensors.logSumExp;
        if (!(lse instanceof Float32Array) || lse.length !== stats.rowMax.length) throw new Error(`coordinator sent logSumExp of ${lse?.length ?? 'no'} rows, expected ${stats.rowMax.length}`);
        return { logSumExp: lse, loss: m.header.body.loss, extras: m.header.body.extras };
      },
      async exchangeTargets(step, batch, stats) {
        await control.send(
          'target-stats',
          { rows: stats.targetCos.length, batch },
          [
            { name: 'targetCos', data: stats.targetCos },
            { name: 'owned', data: stats.owned },
          ],
          step,
        );
        const m = await control.waitFor('target-reduced', step);
        const cos = m.tensors.targetCos;
        if (!(cos instanceof Float32Array) || cos.length !== stats.targetCos.length) throw new Error(`coordinator sent targetCos of ${cos?.length ?? 'no'} rows, expected ${stats.targetCos.length}`);
        return { targetCos: cos, extras: m.header.body.extras };
      },
      emit: (name, fields) => control.send('event', { name, fields }),
    };
    const mod = (await import(JOB_MODULES[kind])) as { createJob: JobFactory };
    job = await mod.createJob(ctx);
    await control.send('ready', { backend: backend.backend, device: backend.device, threads: backend.threads, reason: backend.reason }, [], 0);

    training = kind === 'train';
    // the coordinator's bound on a graceful stop, plus a margin for its stop message to arrive
    graceMs = Number(w.config.shutdownTimeoutMs ?? 120_000) + 10_000;

    for (;;) {
      const next = await control.waitForAny(['step-begin', 'checkpoint'] as const);
      const step = next.header.step;
      if (next.header.type === 'checkpoint') {
        if (!job.checkpoint) throw new Error(`the coordinator asked for a checkpoint of step ${step}, but a ${kind} job has none`);
        await job.checkpoint(step);
        continue;
      }
      logCtx.step = step;
      const metrics = { ...(await job.step(step, { checkpoint: next.header.body.checkpoint === true })), ...trafficMetrics(control, ring) };
      await control.send('step-end', { metrics }, [], step);
    }
  } catch (caught) {
    // A collective cut short by a stop reports the stop, not the broken socket.
    const e = control.stopReason && !(caught instanceof JobStopped) ? control.stopReason : caught;
    if (e instanceof JobStopped) {
      if (e.restart) {
        // the rank this worker held (or asked for, if the stop came before its welcome) is its again in the next round
        const rank = control.rank >= 0 ? control.rank : opts.rank;
        log.warn({ reason: e.reason, rank: rank ?? null }, 'job restarting from its newest checkpoint; registering again');
        await job?.close?.(false);
        return { rank, job: control.job || (opts.job ?? '') };
      }
      if (e.ok) {
        log.info({ reason: e.reason }, 'stopped');
        await job?.close?.(true);
        return 0;
      }
      log.error({ reason: e.reason }, 'job stopped with an error');
      // Stopped here (a signal, the coordinator unreachable): tell the coordinator, so it need not wait for the heartbeat timeout.
      if (control.stoppedHere && control.rank >= 0) await control.sendLast('bye', { reason: e.reason, ok: false });
      await job?.close?.(false);
      return signalled ? signalExitCode(signalled) : 1;
    }
    const err = e as Error;
    log.error({ err: { message: err.message, stack: err.stack } }, 'worker failed');
    await control.sendLast('bye', { reason: err.message, ok: false });
    await job?.close?.(false);
    return 1;
  } finally {
    clearTimeout(graceTimer);
    await heartbeat?.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await collectives?.close().catch(() => undefined);
    await ring?.close().catch(() => undefined);
    if (!inbox.closed) inbox.close();
    releaseInbox();
    strangers.flush();
    // Let a final message (bye) leave before closing the socket.
    await new Promise((r) => setTimeout(r, 50));
    control.close();
  }
}

/** Bytes this worker moved so far, cumulative, on the control plane and on the ring (the data plane); the coordinator turns them into counters. */
function trafficMetrics(control: ControlChannel, ring: Ring | null): Record<string, number> {
  return { controlBytesSent: control.bytesSent, controlBytesReceived: control.bytesReceived, ringBytesSent: ring?.bytesSent ?? 0, ringBytesReceived: ring?.bytesReceived ?? 0 };
}
