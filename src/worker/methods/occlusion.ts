/**
 * `occlusion: adversarial`: the sharded classifier (fc) plus the occlusion
 * adversary of occlusion-training.ts — a mask generator G and a segmentation
 * head S, replicated like the backbone and saved in its checkpoint file
 * (names prefixed `occlusion.`). Up to occlusionStartStep the steps are fc's;
 * then the occlusion step runs forward, classifier (clean and masked rows)
 * and backward in one, and while the backbone and classifier are frozen
 * (adversary pre-training) it gives no backbone gradients.
 */
import { performance } from 'node:perf_hooks';
import { OcclusionTrainer } from '../occlusion-training.js';
import { FcMethod } from './fc.js';
import { stepCountOf } from './restore.js';
import { storedTensors, type MethodContext, type MethodStepInput, type MethodStepResult } from './method.js';

export class OcclusionMethod extends FcMethod {
  override readonly name = 'occlusion';
  private readonly occlusion: OcclusionTrainer;

  constructor(m: MethodContext) {
    super(m);
    const { cfg, worker } = m;
    this.occlusion = new OcclusionTrainer(
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
        optimizer: m.optimizer.settings,
      },
      m.backbone,
      m.params,
      worker.world,
      worker.rank,
      worker.ring,
    );
  }

  /**
   * Up to occlusionStartStep: fc's step. After: the occlusion step, which
   * has no single ∂L/∂e of the clean rows to pull on; the config refuses a
   * teacher with occlusion, so no hook is ever handed to it.
   */
  override async step(input: MethodStepInput): Promise<MethodStepResult> {
    const { step, x, batch } = input;
    if (!this.occlusion.active(step)) return super.step(input);
    const start = performance.now();
    const occ = await this.occlusion.step(step, x, batch.labels, this.classifier, this.m.comm, batch.occluders);
    const lossDone = performance.now();
    const { rank } = this.m.worker;
    const { cfg } = this.m;
    if (rank === 0 && (step % cfg.logEvery === 0 || step === cfg.steps || this.occlusion.stage(step) === 1)) this.m.worker.logger.log.info({ loss: occ.cls.loss, ...occ.metrics }, 'occlusion step');
    const l = this.embeddingLoss(occ.cls);
    // stage 1 froze the classifier: the occlusion step already released its gradient
    const frozen = occ.backboneGrads === null;
    return {
      loss: l.loss,
      backboneGrads: occ.backboneGrads,
      metrics: { ...l.metrics, ...occ.metrics },
      marks: { forwardDone: start, lossStart: start, lossDone },
      apply: (lr) => {
        occ.apply(lr);
        if (!frozen) l.apply(lr);
      },
      discard: () => {
        occ.discard();
        if (!frozen) l.discard();
      },
    };
  }

  /** G and S, and their optimizers' slots under `optimizer.` (their names are `occlusion.` ones, apart from the backbone's). */
  protected override async extraNetworkTensors() {
    const { generator, segmentation } = this.occlusion.optimizers;
    return { ...(await storedTensors(this.occlusion.state())), ...(await storedTensors(generator.state(), 'optimizer.')), ...(await storedTensors(segmentation.state(), 'optimizer.')) };
  }

  protected override extraNetworkMeta() {
    const { generator, segmentation } = this.occlusion.optimizers;
    return { occlusionGeneratorOptimizerStep: String(generator.stepCount), occlusionSegmentationOptimizerStep: String(segmentation.stepCount) };
  }

  protected override restoreExtraNetwork() {
    const { generator, segmentation } = this.occlusion.optimizers;
    const slots = (o: typeof generator) => [...o.state()].map(([name, v]) => [`optimizer.${name}`, v] as const);
    return {
      variables: new Map([...this.occlusion.state(), ...slots(generator), ...slots(segmentation)]),
      meta: (metadata: Record<string, string>, file: string) => {
        generator.stepCount = stepCountOf(metadata, 'occlusionGeneratorOptimizerStep', file);
        segmentation.stepCount = stepCountOf(metadata, 'occlusionSegmentationOptimizerStep', file);
      },
    };
  }

  override dispose(): void {
    this.occlusion.dispose();
  }
}
