/**
 * `shardface bench classifier`: seconds per step of the sharded classifier
 * (real coordinator and worker processes), with the matmul ceiling of the same
 * backend at the same shapes printed beside it.
 */
import { performance } from 'node:perf_hooks';
import { launchLocal } from '../src/launcher/launch.js';
import { createLogger } from '../src/log/logger.js';
import { tf } from '../src/ops/tf.js';
import { initBackend, type BackendChoice } from '../src/ops/backend.js';
import { classRange, numSampled } from '../src/ops/class-range.js';

export interface BenchClassifierOptions {
  workers: number;
  classes: number;
  dim: number;
  batch: number;
  sampleRate: number;
  steps: number;
  chunkRows: number;
  backend: BackendChoice;
  // --- DCQ: 'dcq' benches the sharded class queue of queueSize slots (no C×D matrix anywhere)
  classifier?: 'fc' | 'dcq';
  queueSize?: number;
  // --- end DCQ
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export async function benchClassifier(o: BenchClassifierOptions): Promise<Record<string, unknown>> {
  const logger = createLogger({ role: 'launcher', level: 'warn' });
  const perStep: { seconds: number[]; activeRows: number[]; maxRssMb: number[] }[] = [];
  const { done } = await launchLocal({
    coordinator: {
      workers: o.workers,
      job: `bench-classifier-${process.pid}`,
      token: '',
      heartbeatMs: 2000,
      workerTimeoutMs: 300_000,
      joinTimeoutMs: 300_000,
      spec: {
        kind: 'bench',
        steps: o.steps,
        numClasses: o.classes,
        seed: 1,
        config: { dim: o.dim, batch: o.batch, sampleRate: o.sampleRate, chunkRows: o.chunkRows, classifier: o.classifier ?? 'fc', queueSize: o.queueSize ?? 8192 },
      },
      logger,
      onStepEnd: (_step, metrics) => {
        perStep.push({ seconds: metrics.map((m) => m.seconds!), activeRows: metrics.map((m) => m.activeRows!), maxRssMb: metrics.map((m) => m.maxRssMb!) });
      },
    },
    workerArgs: ['--backend', o.backend, '--log-format', 'json'],
    out: (line, from, stream) => {
      if (/"level":(50|60)/.test(line) || stream === 'stderr') process.stderr.write(`[worker ${from.index}] ${line}\n`);
    },
  });
  const r = await done;
  if (!r.ok) throw new Error(`bench classifier failed: ${r.reason}`);
  // A step is as slow as its slowest worker; the first step is warm-up.
  const timed = perStep.length > 1 ? perStep.slice(1) : perStep;
  const secondsPerStep = median(timed.map((s) => Math.max(...s.seconds)));
  const rows = o.workers * o.batch;
  const activeRank0 = median(timed.map((s) => s.activeRows[0]!));
  // Three GEMMs of rows×active×dim per shard: logits, ∂E, ∂W (2 flops per multiply-add).
  // DCQ: also three, logits, recomputed logits and ∂q, with `active` = this worker's queue slots.
  const flopsRank0 = 3 * 2 * rows * activeRank0 * o.dim;

  // The ceiling: the same backend's matmul at the logits shape, in this process.
  await initBackend(o.backend);
  const peak = matmulGflops(rows, activeRank0, o.dim);
  return {
    bench: 'classifier',
    workers: o.workers,
    classes: o.classes,
    dim: o.dim,
    batch: o.batch,
    sample_rate: o.sampleRate,
    // --- DCQ
    classifier: o.classifier ?? 'fc',
    ...(o.classifier === 'dcq' ? { queue_size: o.queueSize ?? 8192, queue_slots_per_worker: classRange(o.queueSize ?? 8192, o.workers, 0).count } : {}),
    // --- end DCQ
    steps: perStep.length,
    seconds_per_step: secondsPerStep,
    samples_per_s: rows / secondsPerStep,
    gflops: flopsRank0 / secondsPerStep / 1e9,
    matmul_peak_gflops: peak,
    active_rows_per_worker: activeRank0,
    shard_rows_per_worker: classRange(o.classes, o.workers, 0).count,
    sampled_rows_target: numSampled(o.sampleRate, classRange(o.classes, o.workers, 0).count),
    peak_rss_mb_per_worker: Math.max(...perStep.flatMap((s) => s.maxRssMb)),
    backend: o.backend,
  };
}

function matmulGflops(m: number, n: number, k: number): number {
  const a = tf.randomNormal([m, k]);
  const b = tf.randomNormal([n, k]);
  const run = () => tf.tidy(() => tf.matMul(a, b, false, true)).dataSync();
  run();
  const reps = 3;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) run();
  const s = (performance.now() - t0) / 1000 / reps;
  a.dispose();
  b.dispose();
  return (2 * m * n * k) / s / 1e9;
}
