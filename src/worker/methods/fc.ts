/**
 * `classifier: fc`: the sharded classifier — this worker's rows of the C×D
 * class matrix with the margin family, MagFace or CurricularFace head
 * (sharded-classifier.ts, loss-head-step.ts). Its rows are updated after the
 * backbone's optimizer step; its checkpoint is this worker's shard (rows and
 * their optimizer slots) and, on rank 0, the backbone with its optimizer slots.
 */
import { join } from 'node:path';
import type { tf } from '../../ops/tf.js';
import type { TrainConfig } from '../../config/schema.js';
import { resolveMargin, type MarginSpec } from '../../ops/margin.js';
import { initialShardWeights } from '../../ops/classifier-init.js';
import { marginSchedule, marginWarmupSteps } from '../../ops/margin-schedule.js';
import type { RowHyperParams } from '../../ops/row-optimizer.js';
import { BACKBONE_FILE, shardFile } from '../../checkpoint/checkpoint.js';
import type { StoredTensor } from '../../checkpoint/tensor-file.js';
import { ShardedClassifier, type ShardStepResult } from '../sharded-classifier.js';
import { CURRICULAR_T, lossHeadFromConfig } from '../loss-head-step.js';
import { embeddingStep, type EmbeddingLoss } from './embedding-step.js';
import { networkMeta } from './checkpoint.js';
import { restoreNetwork, restoreShard, type RestorePoint } from './restore.js';
import { storedTensors, type CheckpointContent, type MethodContext, type MethodStepInput, type MethodStepResult, type TrainingMethod } from './method.js';

export function marginFromConfig(m: TrainConfig['margin']): MarginSpec {
  // 'softmax' is the normalised softmax: the arcface formula with m2 = 0.
  if (m.type === 'softmax') return resolveMargin({ type: 'arcface', s: m.s, m1: 1, m2: 0, m3: 0 });
  return resolveMargin({ type: m.type, s: m.s, m1: m.m1, m2: m.m2, m3: m.m3 });
}

/** The classifier rows' optimizer hyper-parameters at learning rate `lr` (the backbone's settings). */
export function rowHyperParams(cfg: TrainConfig, lr: number): RowHyperParams {
  return cfg.optimizer === 'sgd'
    ? ({ kind: 'sgd', lr, momentum: cfg.momentum, weightDecay: cfg.weightDecay } as const)
    : ({ kind: 'adamw', lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: cfg.weightDecay } as const);
}

export class FcMethod implements TrainingMethod {
  readonly name: string = 'fc';
  readonly classifier: ShardedClassifier;

  constructor(protected readonly m: MethodContext) {
    const { cfg, worker } = m;
    this.classifier = new ShardedClassifier(
      worker.classRange,
      worker.rank,
      {
        dim: cfg.embeddingSize,
        margin: marginFromConfig(cfg.margin),
        // the margin warm-up (ops/margin-schedule.ts): each step is an ordinary fixed-margin head
        marginAt: marginSchedule(marginFromConfig(cfg.margin), marginWarmupSteps(cfg)),
        marginGrad: cfg.marginGrad,
        sampleRate: cfg.sampleRate,
        chunkRows: cfg.chunkRows || Number.MAX_SAFE_INTEGER,
        optimizer: cfg.optimizer,
        seed: cfg.seed,
        loss: lossHeadFromConfig(cfg),
      },
      initialShardWeights(worker.classRange, cfg.embeddingSize, cfg.seed, cfg.classifierInitStd),
    );
  }

  get inferenceNetwork() {
    return this.m.backbone;
  }

  step(input: MethodStepInput): Promise<MethodStepResult> {
    return embeddingStep(this.m.backbone, this.m.params, input, async (emb) => this.embeddingLoss(await this.classifier.forwardBackward(input.step, emb, input.batch.labels, this.m.comm)));
  }

  /** The classifier's answer as the loop's step result: its rows update after the backbone's. */
  protected embeddingLoss(cls: ShardStepResult): EmbeddingLoss {
    const t = cls.lossState?.[CURRICULAR_T];
    return {
      loss: cls.loss,
      gradEmbeddings: cls.gradEmbeddings,
      metrics: { activeClasses: cls.active.length, ...(t !== undefined ? { curricularT: t } : {}) },
      apply: (lr) => this.classifier.update(cls.active, cls.gradWeight, rowHyperParams(this.m.cfg, lr)),
      discard: () => cls.gradWeight.dispose(),
    };
  }

  /** Further replicated tensors saved in the backbone file (occlusion: G and S with their optimizer slots). */
  protected extraNetworkTensors(): Promise<Record<string, StoredTensor>> {
    return Promise.resolve({});
  }

  /** Further metadata of the backbone file (occlusion: G's and S's update counts). */
  protected extraNetworkMeta(): Record<string, string> {
    return {};
  }

  /** The variables extraNetworkTensors saves, by stored name, for a resume; and what to take from the file's metadata. */
  protected restoreExtraNetwork(): { variables: Map<string, tf.Variable>; meta(metadata: Record<string, string>, file: string): void } {
    return { variables: new Map(), meta: () => {} };
  }

  async checkpoint(): Promise<CheckpointContent> {
    const { worker, backbone, optimizer, cfg } = this.m;
    const st = this.classifier.state;
    const slots = [
      ['weight', st.weight],
      ['momentum', st.momentum],
      ['expAvg', st.expAvg],
      ['expAvgSq', st.expAvgSq],
    ] as const;
    const shard = {
      file: shardFile(worker.rank),
      tensors: await storedTensors(slots.flatMap(([name, v]) => (v ? [[name, v] as const] : []))),
      meta: {
        optimizer: st.optimizer,
        optimizerStep: String(st.step),
        classStart: String(worker.classRange.start),
        classCount: String(worker.classRange.count),
        numClasses: String(worker.numClasses),
      },
      announce: {},
    };
    if (worker.rank !== 0) return { shard, network: null };
    // Optimizer slots ride along under `optimizer.` names (loaders of the backbone ignore them).
    const tensors = { ...(await storedTensors(backbone.state())), ...(await this.extraNetworkTensors()), ...(await storedTensors(optimizer.state(), 'optimizer.')) };
    return {
      shard,
      network: {
        file: BACKBONE_FILE,
        tensors,
        meta: { ...networkMeta(cfg, optimizer), ...this.extraNetworkMeta() },
      },
    };
  }

  async restore(from: RestorePoint): Promise<void> {
    const { worker, backbone, optimizer } = this.m;
    restoreShard(from, worker.classRange, this.classifier.state);
    const extra = this.restoreExtraNetwork();
    const metadata = restoreNetwork(from, backbone, optimizer, extra.variables);
    extra.meta(metadata, join(from.dir, from.manifest.backbone.file));
    return Promise.resolve();
  }

  dispose(): void {}
}
