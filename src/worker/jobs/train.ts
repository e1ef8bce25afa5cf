/**
 * One worker's share of training, step by step (docs/architecture.md#the-training-step), in the order of arcface_torch's train_v2.py: config → data
 * → backbone → training method → optimizer and schedule → loop. The method
 * (src/worker/methods/) turns the batch into the loss and this worker's
 * backbone gradients; the loop sums them over workers in buckets, clips, and
 * steps the optimizer, then lets the method update what it owns.
 *
 * Numerical guard: a step whose loss or summed gradients hold NaN or ±Inf is
 * skipped on every rank alike — the loss comes from the coordinator and the
 * summed all-reduce carries a NaN of any rank to all of them — with nothing
 * changed: no optimizer step, and the method's `apply` — its classifier rows,
 * queue, key encoder or adversary, and the BatchNorm running statistics its
 * forward computed — never runs (`discard` drops it instead). The skipped step still uses up
 * its batch and its place in the LR schedule. The coordinator counts the
 * skips (src/run/training.ts) and stops the job after maxBadSteps in a row.
 */
import { performance } from 'node:perf_hooks';
import { tf } from '../../ops/tf.js';
import type { JobFactory, WorkerContext } from '../job.js';
import { openTrainingData } from '../../data/open.js';
import { DistributedSampler } from '../../data/sampler.js';
import { Loader, skippedInBatch, type Batch } from '../../data/loader.js';
import { createBackbone, type Backbone } from '../../models/index.js';
import { learningRate } from '../../ops/lr-schedule.js';
import { initBackboneFrom } from '../distillation.js';
import { shardComm } from '../shard-comm.js';
import { BackboneOptimizer, clipGradNorm } from '../backbone-optimizer.js';
import { allReduceGradients, planBuckets } from '../grad-buckets.js';
import { makeVerificationPairs } from '../../eval/pairs.js';
import { verifyBackbone } from '../../eval/evaluate.js';
import { loadValSets, scoreValSets } from '../../eval/val-sets.js';
import type { TrainJobConfig } from '../methods/method.js';
import { createTrainingMethod } from '../methods/registry.js';
import { backboneOptions } from '../methods/backbone-options.js';
import { writeMethodCheckpoint } from '../methods/checkpoint.js';
import { anyNonFinite } from '../numerical-guard.js';
import { faultAt, parseFaults, stallAt } from '../faults.js';
import { readManifest } from '../../checkpoint/checkpoint.js';

export const createJob: JobFactory = async (ctx) => {
  // config
  const cfg = ctx.config as unknown as TrainJobConfig;
  const { rank, world } = ctx;
  const faults = parseFaults(process.env.SHARDFACE_FAULT);
  // restarts before this round of the job (maxRestarts): a fault fires in its own round only (faults.ts)
  const restarts = Number(ctx.config.restarts ?? 0);

  // data: this rank's disjoint, reshuffled-per-epoch slice
  const { train, heldOut } = await openTrainingData(cfg);
  const sampler = new DistributedSampler({ size: train.size, world, rank, batchPerWorker: cfg.batch, seed: cfg.seed });
  const loader = new Loader({
    dataset: train,
    sampler,
    flip: cfg.flip,
    augment: cfg.augment,
    prefetch: cfg.prefetch,
    decodeThreads: cfg.decodeThreads,
    strictData: cfg.strictData,
    onBadSample: (e) => ctx.logger.log.warn(e, 'unreadable training image skipped'),
  });

  // backbone: same init everywhere (optionally a previous run's weights, read by rank 0), made certain by a broadcast from rank 0
  const backbone = createBackbone(cfg.backbone, backboneOptions(cfg));
  if (cfg.initFrom !== 'none' && rank === 0) ctx.logger.log.info({ initFrom: initBackboneFrom(backbone, cfg.initFrom) }, 'backbone initialised from checkpoint');
  await broadcastState(ctx, backbone);
  const params = backbone.trainableVariables();

  // optimizer, gradient buckets and LR schedule
  const optimizer = new BackboneOptimizer(
    params,
    cfg.optimizer === 'sgd' ? { kind: 'sgd', momentum: cfg.momentum, weightDecay: cfg.weightDecay } : { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: cfg.weightDecay },
  );
  const buckets = planBuckets(
    params.map((p) => p.variable.size),
    cfg.bucketMb,
  );
  const warmupSteps = cfg.warmupSteps || Math.round(cfg.warmupEpochs * cfg.stepsPerEpoch);
  const schedule = { base: cfg.lr, warmupSteps, totalSteps: cfg.steps };

  // training method: fc, dcq or occlusion, with distillation around it when a teacher is set
  const method = await createTrainingMethod({ worker: ctx, cfg, backbone, params, optimizer, loader, comm: shardComm(ctx) });
  // a resumed run: every rank reads its own state back from the verified checkpoint (the data order, sampling and
  // augmentation are functions of seed, epoch, step and rank, so nothing else is needed to continue exactly)
  if (cfg.resumeFrom) {
    const manifest = readManifest(cfg.resumeFrom);
    try {
      await method.restore({ dir: cfg.resumeFrom, manifest });
    } catch (e) {
      method.dispose();
      throw e;
    }
    ctx.logger.log.info({ checkpoint: cfg.resumeFrom, step: manifest.step }, 'state restored from checkpoint');
  }

  // evaluation: held-out pairs and val sets, scored by rank 0 on the method's inference network
  const pairs = heldOut && rank === 0 && cfg.verificationPairs >= 2 ? makeVerificationPairs({ labels: labelsOf(heldOut), pairs: cfg.verificationPairs, seed: cfg.seed }) : null;
  const valSets = rank === 0 ? loadValSets(cfg.val ?? 'none') : [];
  let batch: Batch | undefined;
  /** Skipped steps in a row, as every rank counts them alike. */
  let badSteps = 0;
  /** The step that ended last, whether the guard skipped it and whether its checkpoint is written (for a final checkpoint between steps). */
  let ended: { step: number; skipped: boolean; written: boolean } | null = null;
  const writeCheckpoint = async (step: number, epoch: number) => writeMethodCheckpoint(ctx, cfg, step, epoch, await method.checkpoint());

  return {
    async step(step, request) {
      if (faultAt(faults, 'kill', rank, step, restarts)) process.kill(process.pid, 'SIGKILL');
      const stall = stallAt(faults, rank, step, restarts);
      if (stall > 0) await new Promise((r) => setTimeout(r, stall));
      const t0 = performance.now();
      const epoch = Math.floor((step - 1) / cfg.stepsPerEpoch);
      const batchIndex = (step - 1) % cfg.stepsPerEpoch;
      batch = await loader.batch(epoch, batchIndex, batch);
      const tData = performance.now();
      const lr = learningRate(step, schedule);
      const x = tf.tensor4d(batch.images, [cfg.batch, cfg.imageSize, cfg.imageSize, 3]);
      try {
        const r = await method.step({ step, epoch, batchIndex, x, batch, lr, hooks: [] });
        const tb = performance.now();
        const local = r.backboneGrads;
        if (local && faultAt(faults, 'nan', rank, step, restarts)) local[0] = poison(local[0]!);
        // which rank's own gradients were non-finite (for the coordinator's message; the decision below needs no exchange)
        const nonFiniteLocal = local ? await anyNonFinite(local) : false;
        // gradients of the global-batch mean loss: SUM over workers (see sharded-classifier.ts)
        let norm = 0;
        let ta = tb;
        let skipped = !Number.isFinite(r.loss);
        if (local) {
          const summed = await allReduceGradients(local, buckets, (a) => ctx.collectives.allReduce(a, 'sum'), { transferBuffer: (n) => ctx.collectives.transferBuffer(n) });
          ta = performance.now();
          skipped ||= await anyNonFinite(summed);
          if (skipped) summed.forEach((g) => g.dispose());
          else {
            const clipped = clipGradNorm(summed, cfg.clipGradNorm);
            norm = clipped.norm;
            optimizer.step(clipped.grads, lr);
            clipped.grads.forEach((g) => g.dispose());
          }
        }
        // the method's deferred update (classifier rows, queue, key encoder, adversary, the forward's BatchNorm statistics)
        if (skipped) {
          r.discard();
          badSteps++;
        } else {
          r.apply(lr);
          badSteps = 0;
        }
        const t1 = performance.now();

        const metrics: Record<string, number> = {
          loss: r.loss,
          lr,
          epoch,
          gradNorm: norm,
          seconds: (t1 - t0) / 1000,
          // the step-time breakdown: data, forward, classifier exchange, backward, all-reduce, optimizer
          dataSeconds: (tData - t0) / 1000,
          forwardSeconds: (r.marks.forwardDone - tData) / 1000,
          classifierSeconds: (r.marks.lossDone - r.marks.lossStart) / 1000,
          backwardSeconds: (tb - r.marks.lossDone) / 1000,
          commSeconds: (ta - tb) / 1000,
          optimizerSeconds: (t1 - ta) / 1000,
          rssBytes: process.memoryUsage().rss,
          images: cfg.batch,
          skippedImages: skippedInBatch(batch), // unreadable images replaced in this step's batch; the coordinator sums them
          ...r.metrics,
          ...(skipped ? { skipped: 1, nonFiniteLocal: nonFiniteLocal ? 1 : 0 } : {}),
        };
        if (skipped) delete metrics.gradNorm;
        dropNonFinite(metrics, step, skipped);
        const last = step === cfg.steps;
        // a skipped step writes no periodic checkpoint (its state is the step before's); the final one is written
        // from that restored, finite state unless this skip is the one that stops the job
        // request.checkpoint: the coordinator's decision (checkpointMinutes), the same on every rank
        const due = last ? badSteps < cfg.maxBadSteps : !skipped && ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery === 0) || request.checkpoint);
        if (due) await writeCheckpoint(step, epoch);
        ended = { step, skipped, written: due };
        // Replicas must stay bit-identical; the coordinator compares these across ranks.
        if (last) metrics.paramsHash = await hashParams(params.map((p) => p.variable));
        if (pairs && heldOut && (last || (cfg.evalEvery > 0 && step % cfg.evalEvery === 0))) {
          const v = await verifyBackbone(method.inferenceNetwork, heldOut, pairs);
          Object.assign(metrics, { valAccuracy: v.accuracy, valStd: v.std, valThreshold: v.threshold, valPairs: v.pairs });
        }
        // val sets: rank 0 scores them here while the other ranks, their step ended, wait for the coordinator's next step
        if (valSets.length > 0 && (last || ((cfg.valEvery ?? 0) > 0 && step % cfg.valEvery === 0)))
          Object.assign(metrics, await scoreValSets(method.inferenceNetwork, valSets, { imageSize: cfg.imageSize, batch: cfg.batch }));
        return metrics;
      } finally {
        x.dispose();
      }
    },
    // the final checkpoint of a graceful stop: the state after the step that just ended, never from a step the guard
    // skipped (docs/architecture.md#graceful-stop)
    async checkpoint(step) {
      if (ended?.step !== step) throw new Error(`checkpoint of step ${step} requested, but the last step this worker ran is ${ended?.step ?? 'none'}`);
      if (ended.skipped) throw new Error(`checkpoint of step ${step} requested, but the numerical guard skipped that step: no checkpoint is written from it`);
      if (ended.written) return;
      await writeCheckpoint(step, Math.floor((step - 1) / cfg.stepsPerEpoch));
      ended.written = true;
    },
    async close() {
      method.dispose();
      backbone.dispose();
      optimizer.dispose();
      // a worker that registers again after a restart (maxRestarts) lives on in this process: release the data files too
      await loader.close();
    },
  };
};

/** The fault injection's NaN gradient: same shape, every element NaN. */
function poison(g: tf.Tensor): tf.Tensor {
  const nan = tf.mul(g, Number.NaN);
  g.dispose();
  return nan;
}

/**
 * Step-end metrics must be finite numbers (the protocol refuses others). A
 * skipped step drops its non-finite ones (the loss, the classifier's or the
 * occlusion adversary's figures); on any other step one is a bug that stops
 * the job, naming it, rather than a message the coordinator refuses.
 */
function dropNonFinite(metrics: Record<string, number>, step: number, skipped: boolean): void {
  for (const [k, v] of Object.entries(metrics)) {
    if (Number.isFinite(v)) continue;
    if (!skipped) throw new Error(`metric ${k} is ${v} at step ${step} though the loss and gradients were finite`);
    delete metrics[k];
  }
}

/** FNV-1a over the bytes of every trainable parameter: equal iff the replicas are bit-identical (with overwhelming probability). */
async function hashParams(vars: tf.Variable[]): Promise<number> {
  let h = 0x811c9dc5;
  for (const v of vars) {
    const d = (await v.data()) as Float32Array;
    const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  }
  return h >>> 0;
}

function labelsOf(ds: { size: number; label(i: number): number }): Int32Array {
  return Int32Array.from({ length: ds.size }, (_, i) => ds.label(i));
}

/** Every persistent backbone tensor from rank 0, so all replicas start bit-identical. */
async function broadcastState(ctx: WorkerContext, backbone: Backbone): Promise<void> {
  if (ctx.world === 1) return;
  for (const v of backbone.state().values()) {
    const data = (await v.data()) as Float32Array;
    const copy = new Float32Array(data);
    await ctx.ring.broadcast(copy, 0);
    if (ctx.rank !== 0) v.assign(tf.tensor(copy, v.shape, 'float32'));
  }
}
