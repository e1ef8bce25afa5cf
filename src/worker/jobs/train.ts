/**
 * One worker's share of training, step by step (ARCHITECTURE.md "one training
 * step"): its slice of the data → backbone → sharded classifier → backbone
 * backward from the returned embedding gradient → all-reduce of backbone
 * gradients in buckets → clip → optimizer step. Reads top to bottom in the
 * order a person thinks of training.
 */
import { performance } from 'node:perf_hooks';
import { tf } from '../../ops/tf.js';
import type { JobFactory, WorkerContext } from '../job.js';
import type { TrainConfig } from '../../config/schema.js';
import { openTrainingData } from '../../data/open.js';
import { DistributedSampler } from '../../data/sampler.js';
import { Loader, type Batch } from '../../data/loader.js';
import { createBackbone, type Backbone } from '../../models/index.js';
import { resolveMargin, type MarginSpec } from '../../ops/margin.js';
import { marginSchedule, marginWarmupSteps } from '../../ops/margin-schedule.js';
import { learningRate } from '../../ops/lr-schedule.js';
import { initialShardWeights } from '../../ops/classifier-init.js';
import { ShardedClassifier } from '../sharded-classifier.js';
import { CURRICULAR_T, lossHeadFromConfig } from '../loss-head-step.js'; // --- loss heads (MagFace, CurricularFace)
import { initBackboneFrom, Teacher } from '../distillation.js'; // --- distillation
import { shardComm } from '../shard-comm.js';
import { DcqTraining } from '../dcq-training.js'; // --- DCQ
import { OcclusionTrainer } from '../occlusion-training.js'; // --- occlusion
import { BackboneOptimizer, clipGradNorm } from '../backbone-optimizer.js';
import { allReduceGradients, planBuckets } from '../grad-buckets.js';
import { makeVerificationPairs } from '../../eval/pairs.js';
import { verifyBackbone } from '../../eval/evaluate.js';
import { loadValSets, scoreValSets } from '../../eval/val-sets.js';
import { BACKBONE_FILE, shardFile, stepDir, writeCheckpointFile } from '../../checkpoint/checkpoint.js';
import type { StoredTensor } from '../../checkpoint/tensor-file.js';

/** The train config plus what the coordinator derived from it. */
export type TrainJobConfig = TrainConfig & { steps: number; stepsPerEpoch: number; runDir: string };

export function marginFromConfig(m: TrainConfig['margin']): MarginSpec {
  // 'softmax' is the normalised softmax: the arcface formula with m2 = 0.
  if (m.type === 'softmax') return resolveMargin({ type: 'arcface', s: m.s, m1: 1, m2: 0, m3: 0 });
  return resolveMargin({ type: m.type, s: m.s, m1: m.m1, m2: m.m2, m3: m.m3 });
}

export const createJob: JobFactory = async (ctx) => {
  const cfg = ctx.config as unknown as TrainJobConfig;
  const { rank, world } = ctx;

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

  // backbone: same init everywhere, made certain by a broadcast from rank 0
  const backbone = createBackbone(cfg.backbone, {
    seed: cfg.seed,
    embeddingSize: cfg.embeddingSize,
    inputSize: cfg.imageSize,
    ...(cfg.backbone === 'tiny' ? { norm: cfg.backboneNorm } : {}),
  });
  // --- distillation: the next generation starts from a previous run's backbone (rank 0 reads it; the broadcast copies it)
  if (cfg.initFrom !== 'none' && rank === 0) ctx.logger.log.info({ initFrom: initBackboneFrom(backbone, cfg.initFrom) }, 'backbone initialised from checkpoint');
  await broadcastState(ctx, backbone);
  const teacher = cfg.teacher !== 'none' ? await Teacher.load(cfg.teacher, cfg.distill, cfg.distillWeight) : null;
  // --- end distillation
  const params = backbone.trainableVariables();
  const optimizer = new BackboneOptimizer(
    params,
    cfg.optimizer === 'sgd' ? { kind: 'sgd', momentum: cfg.momentum, weightDecay: cfg.weightDecay } : { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: cfg.weightDecay },
  );
  const buckets = planBuckets(
    params.map((p) => p.variable.size),
    cfg.bucketMb,
  );

  // classifier: this rank's rows only (none for DCQ)
  const classifier = cfg.classifier === 'dcq' ? null : new ShardedClassifier(
    ctx.classRange,
    rank,
    { dim: cfg.embeddingSize, margin: marginFromConfig(cfg.margin), marginAt: marginSchedule(marginFromConfig(cfg.margin), marginWarmupSteps(cfg)), marginGrad: cfg.marginGrad, sampleRate: cfg.sampleRate, chunkRows: cfg.chunkRows || Number.MAX_SAFE_INTEGER, optimizer: cfg.optimizer, seed: cfg.seed, loss: lossHeadFromConfig(cfg) },
    initialShardWeights(ctx.classRange, cfg.embeddingSize, cfg.seed, cfg.classifierInitStd),
  );
  // --- DCQ (classifier: dcq, SPEC §5): key encoder, reference images and this rank's block of the class queue
  const dcq = cfg.classifier === 'dcq' ? new DcqTraining(ctx, cfg, backbone, createBackbone(cfg.backbone, { seed: cfg.seed, embeddingSize: cfg.embeddingSize, inputSize: cfg.imageSize, ...(cfg.backbone === 'tiny' ? { norm: cfg.backboneNorm } : {}) }), loader) : null;
  /** The network verification scores: DCQ infers with the key encoder (SPEC §5.2), fc with the backbone. */
  const inference = dcq?.inferenceNetwork ?? backbone;
  // --- end DCQ
  // --- occlusion (occlusion: adversarial, SPEC §6.3): mask generator G and segmentation head S, replicated like the backbone
  if (cfg.occlusion === 'adversarial' && !classifier) throw new Error('occlusion adversarial needs the sharded classifier (classifier fc), not DCQ');
  const occlusion =
    cfg.occlusion === 'adversarial'
      ? new OcclusionTrainer(
          {
            startStep: cfg.occlusionStartStep,
            pretrainSteps: cfg.occlusionPretrainSteps,
            segWeight: cfg.occlusionSegWeight,
            adversaryWeight: cfg.occlusionAdversaryWeight,
            gate: cfg.occlusionGate,
            width: cfg.occlusionWidth,
            randomHalves: cfg.occlusionRandomHalves,
            structuredShare: cfg.occlusionStructuredShare,
            seed: cfg.seed,
            imageSize: cfg.imageSize,
            clipGradNorm: cfg.clipGradNorm,
            bucketMb: cfg.bucketMb,
            optimizer: optimizer.settings,
          },
          backbone,
          params,
          world,
          rank,
          ctx.ring,
        )
      : null;
  // --- end occlusion
  const comm = shardComm(ctx);
  const warmupSteps = cfg.warmupSteps || Math.round(cfg.warmupEpochs * cfg.stepsPerEpoch);
  const schedule = { base: cfg.lr, warmupSteps, totalSteps: cfg.steps };
  const pairs = heldOut && rank === 0 && cfg.verificationPairs >= 2 ? makeVerificationPairs({ labels: labelsOf(heldOut), pairs: cfg.verificationPairs, seed: cfg.seed }) : null;
  // val sets (config `val`): read once, by rank 0 only, which alone scores them (eval/val-sets.ts)
  const valSets = rank === 0 ? loadValSets(cfg.val ?? 'none') : [];
  let batch: Batch | undefined;

  return {
    async step(step) {
      const t0 = performance.now();
      const epoch = Math.floor((step - 1) / cfg.stepsPerEpoch);
      batch = await loader.batch(epoch, (step - 1) % cfg.stepsPerEpoch, batch);
      const tData = performance.now();
      const lr = learningRate(step, schedule);
      const x = tf.tensor4d(batch.images, [cfg.batch, cfg.imageSize, cfg.imageSize, 3]);
      let commSeconds = 0;
      try {
        let tc = performance.now();
        let tcDone = tc;
        /** End of the (tape-free) forward; the occlusion step does forward, classifier and backward in one. */
        let tForward = tc;
        let cls: { loss: number; gradEmbeddings: Float32Array; active?: Int32Array; gradWeight?: tf.Tensor2D; lossState?: Record<string, number> };
        let distillLoss: number | null = null; // --- distillation
        let local: tf.Tensor[] | null;
        const occlusionMetrics: Record<string, number> = {};
        // --- occlusion: forward, classifier (clean + masked rows) and backward in one; no backbone
        //     gradients while the backbone and classifier are frozen (adversary pre-training)
        if (occlusion?.active(step)) {
          const occ = await occlusion.step(step, x, batch.labels, classifier!, comm, lr, batch.occluders);
          cls = occ.cls;
          local = occ.backboneGrads;
          Object.assign(occlusionMetrics, occ.metrics);
          tcDone = performance.now();
          if (rank === 0 && (step % cfg.logEvery === 0 || step === cfg.steps || occlusion.stage(step) === 1)) ctx.logger.log.info({ loss: occ.cls.loss, ...occ.metrics }, 'occlusion step');
        } else {
          // (end occlusion) the plain step: forward to the embeddings (no tape yet: the classifier's answer comes over the network)
          const emb = tf.tidy(() => backbone.apply(x, true, { updateStats: false }));
          const embData = (await emb.data()) as Float32Array;
          emb.dispose();
          tForward = performance.now();

          // the sharded classifier: loss and ∂L/∂e for this rank's rows
          tc = performance.now();
          // --- DCQ: the queue softmax takes the sharded classifier's place (no classifier rows to update)
          cls = dcq
            ? await dcq.step(step, epoch, (step - 1) % cfg.stepsPerEpoch, embData, batch.labels, comm)
            : await classifier!.forwardBackward(step, embData, batch.labels, comm);
          tcDone = performance.now();
          // --- distillation: the frozen teacher's pull on this rank's embeddings joins ∂L/∂e
          if (teacher) distillLoss = await teacher.distill(x, embData, cls.gradEmbeddings, cfg.batch * world);

          // backbone backward from ∂L/∂e (the forward is recomputed under the tape)
          const dy = tf.tensor2d(cls.gradEmbeddings, [cfg.batch, cfg.embeddingSize]);
          const vars = params.map((p) => p.variable);
          local = tf.engine().gradients(() => backbone.apply(x, true), vars, dy).grads;
          dy.dispose();
        }
        const tb = performance.now();
        // gradients of the global-batch mean loss: SUM over workers (see sharded-classifier.ts)
        let norm = 0;
        let ta = tb;
        if (local) {
          const summed = await allReduceGradients(local, buckets, (a) => ctx.ring.allReduce(a, 'sum'));
          ta = performance.now();
          commSeconds = (ta - tb) / 1000;
          const clipped = clipGradNorm(summed, cfg.clipGradNorm);
          norm = clipped.norm;
          optimizer.step(clipped.grads, lr);
          clipped.grads.forEach((g) => g.dispose());
          if (classifier && cls.active && cls.gradWeight) classifier.update(cls.active, cls.gradWeight, optimizerHp(cfg, lr));
        }
        const t1 = performance.now();

        const metrics: Record<string, number> = {
          loss: cls.loss,
          lr,
          epoch,
          gradNorm: norm,
          seconds: (t1 - t0) / 1000,
          // the step-time breakdown: data, forward, classifier exchange, backward, all-reduce, optimizer
          dataSeconds: (tData - t0) / 1000,
          forwardSeconds: (tForward - tData) / 1000,
          classifierSeconds: (tcDone - tc) / 1000,
          backwardSeconds: (tb - tcDone) / 1000,
          commSeconds,
          optimizerSeconds: (t1 - ta) / 1000,
          rssBytes: process.memoryUsage().rss,
          activeClasses: cls.active?.length ?? dcq?.queue.slots.count ?? 0,
          images: cfg.batch,
          ...occlusionMetrics, // --- occlusion
          ...(distillLoss !== null ? { distillLoss } : {}), // --- distillation
          ...(cls.lossState?.[CURRICULAR_T] !== undefined ? { curricularT: cls.lossState[CURRICULAR_T]! } : {}), // --- CurricularFace
        };
        if (!Number.isFinite(cls.loss)) throw new Error(`loss is ${cls.loss} at step ${step} (lr ${lr}); stopping before the model is ruined`);
        const last = step === cfg.steps;
        if (last || (cfg.checkpointEvery > 0 && step % cfg.checkpointEvery === 0)) await (dcq ? dcq.writeCheckpoint(step, epoch, backbone) : writeCheckpoint(ctx, cfg, step, epoch, backbone, optimizer, classifier!, occlusion?.state()));
        // Replicas must stay bit-identical; the coordinator compares these across ranks.
        if (last) metrics.paramsHash = await hashParams(params.map((p) => p.variable));
        if (pairs && heldOut && (last || (cfg.evalEvery > 0 && step % cfg.evalEvery === 0))) {
          const v = await verifyBackbone(inference, heldOut, pairs);
          Object.assign(metrics, { valAccuracy: v.accuracy, valStd: v.std, valThreshold: v.threshold, valPairs: v.pairs });
        }
        // --- val sets: rank 0 scores them here while the other ranks, their step ended, wait for the coordinator's next step
        if (valSets.length > 0 && (last || ((cfg.valEvery ?? 0) > 0 && step % cfg.valEvery === 0)))
          Object.assign(metrics, await scoreValSets(inference, valSets, { imageSize: cfg.imageSize, batch: cfg.batch }));
        // --- end val sets
        return metrics;
      } finally {
        x.dispose();
      }
    },
    async close() {
      backbone.dispose();
      optimizer.dispose();
      dcq?.close();
      occlusion?.dispose(); // --- occlusion
      teacher?.dispose(); // --- distillation
    },
  };
};

function optimizerHp(cfg: TrainConfig, lr: number) {
  return cfg.optimizer === 'sgd'
    ? ({ kind: 'sgd', lr, momentum: cfg.momentum, weightDecay: cfg.weightDecay } as const)
    : ({ kind: 'adamw', lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: cfg.weightDecay } as const);
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

/** `extra`: further replicated tensors saved in the backbone file (occlusion: G and S, names prefixed `occlusion.`). */
async function writeCheckpoint(
  ctx: WorkerContext,
  cfg: TrainJobConfig,
  step: number,
  epoch: number,
  backbone: Backbone,
  optimizer: BackboneOptimizer,
  classifier: ShardedClassifier,
  extra?: Map<string, tf.Variable>,
): Promise<void> {
  const dir = stepDir(`${cfg.runDir}/ckpt`, step);
  const meta = { step: String(step), epoch: String(epoch), rank: String(ctx.rank), world: String(ctx.world) };
  const shardTensors: Record<string, StoredTensor> = {};
  const st = classifier.state;
  for (const [name, v] of [['weight', st.weight], ['momentum', st.momentum], ['expAvg', st.expAvg], ['expAvgSq', st.expAvgSq]] as const)
    if (v) shardTensors[name] = { data: (await v.data()) as Float32Array, shape: v.shape };
  const shard = writeCheckpointFile(dir, shardFile(ctx.rank), shardTensors, { ...meta, optimizer: st.optimizer, optimizerStep: String(st.step), classStart: String(ctx.classRange.start), classCount: String(ctx.classRange.count), numClasses: String(ctx.numClasses) });
  await ctx.emit('checkpoint-file', { kind: 'shard', step, dir, rank: ctx.rank, classStart: ctx.classRange.start, classCount: ctx.classRange.count, ...shard });
  if (ctx.rank === 0) {
    const t: Record<string, StoredTensor> = {};
    // Optimizer slots ride along under `optimizer.` names (loaders of the backbone ignore them).
    const optimizerState = [...optimizer.state()].map(([name, v]) => [`optimizer.${name}`, v] as const);
    for (const [name, v] of [...backbone.state(), ...(extra ?? []), ...optimizerState]) t[name] = { data: (await v.data()) as Float32Array, shape: v.shape };
    const b = writeCheckpointFile(dir, BACKBONE_FILE, t, {
      ...meta,
      backbone: cfg.backbone,
      embeddingSize: String(cfg.embeddingSize),
      imageSize: String(cfg.imageSize),
      optimizer: optimizer.settings.kind,
      optimizerStep: String(optimizer.stepCount),
    });
    await ctx.emit('checkpoint-file', { kind: 'backbone', step, dir, rank: 0, name: cfg.backbone, ...b });
  }
}
