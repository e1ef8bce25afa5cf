/**
 * `occlusion: adversarial`: adversarial feature masking plus occlusion
 * segmentation (docs/methods.md#adversarial-training), as one worker's step. The backbone is split at its
 * last feature map, f = F(x), embeddings R(f) (Backbone.features / head); a
 * mask generator G proposes which cells of f to drop and a segmentation head S
 * learns to find the dropped cells (src/models/occlusion-nets.ts).
 *
 * Steps 1 … occlusionStartStep train as usual (train.ts). Then:
 *
 * Stage 1, adversary pre-training (occlusionPretrainSteps steps): F, R and the
 * classifier are frozen (no update, no BatchNorm statistics). Every sample's
 * feature map is masked with every candidate of docs/methods.md#feature-masks (7 landmark windows,
 * 4 halves, occlusionRandomHalves random halves); all B·K masked embeddings
 * go through the sharded classifier as ONE batch of B·K rows per worker (the
 * coordinator takes one softmax exchange per step and checks rows = batch ×
 * workers, which holds with batch = B·K on every worker); the per-row p_y
 * comes back (ShardStepResult.ownedTargetProbability, reduce-scattered), and
 * the lowest-p_y candidate is the target M* of a per-cell BCE for G. As in
 * A-Fast-RCNN only a random 40% of the negative cells contribute.
 *
 * Stage 2, joint training: π = G(stopgrad f); each sample's mask ranks its
 * cells by π and drops `drop` of the top `top` at random (P = 20, K = 15 of
 * 49, scaled with H·W). A share `structuredShare` (default ½) of the samples
 * instead takes one of the docs/methods.md#feature-masks candidates (landmark window, half, random
 * half) drawn uniformly: docs/methods.md#adversarial-training step 2's "structured families mixed in as
 * data augmentation". They train F, R and S like G's masks, but G learns only
 * from its own samples. The clean and the masked embeddings go through the
 * sharded classifier as ONE batch of 2B rows per worker, [clean B; masked B],
 * both labelled y. Its loss is the mean over those 2N rows, ½(L_clean +
 * L_masked): every term of the reference's L_FR (docs/methods.md#adversarial-training) is halved (the backbone's step size
 * then matches a run without occlusion), so the backbone minimises
 *
 *   ½(L_clean + L_masked) + λ_seg·L_seg,   L_seg = BCE(S(f ⊙ (1 − M)), M),
 *
 * and G minimises occlusionAdversaryWeight · BCE(π, M) over the samples whose
 * mask (G's own) cut p_y by more than occlusionGate (p_before − p_after, from
 * the same classifier batch). When no sample of any worker passes the gate,
 * G's optimizer does not step at all: a zero gradient would still move G
 * along its momentum and shrink it by weight decay. Both BCEs are sums over cells divided by the global cell
 * count N·H·W (N = B × workers), so SUMMING the gradients of G and S over
 * workers, like the backbone's, gives the gradient of the global mean.
 *
 * BatchNorm in R: masked feature maps go through R in training mode, with the
 * masked batch's own statistics, but never write the running statistics (only
 * the clean pass does, once per step). R in inference mode for the masked
 * pass (running statistics, as an occluded face meets them at inference) was
 * tried first and measured worse on `bench occlusion` (seed 1: +0.6 points of
 * mean occluded accuracy instead of +1.4, seed 2: −0.8 instead of +1.3).
 *
 * Stop-gradient: G reads a copy of the feature map that the tape did not
 * make, so nothing flows from G into F; the masks are constants.
 *
 * One forward per step: stage 2 records F, R, S and G once under a deferred
 * tape (src/ops/deferred-gradients.ts) and backpropagates after the
 * classifier exchange. Nothing the step computes is written before the
 * training method applies the step: G's and S's optimizer steps and the
 * backbone's BatchNorm statistics wait for `apply` (a step the numerical
 * guard skips drops them), though their gradients are summed over workers
 * within the step.
 */
import { tf } from '../ops/tf.js';
import { Rng } from '../common/random.js';
import type { Backbone, TrainableVariable } from '../models/index.js';
import { OcclusionNet } from '../models/occlusion-nets.js';
import { PendingStats } from '../models/index.js';
import { DeferredTape } from '../ops/deferred-gradients.js';
import { adversaryGate, boxCells, candidateMasks, hardestCandidate, sampleTopKMask, topKDropCounts, type CellMask, type FractionBox } from '../ops/occlusion-masks.js';
import { BackboneOptimizer, clipGradNorm, type OptimizerSettings } from './backbone-optimizer.js';
import { allReduceGradients, planBuckets, type Bucket } from './grad-buckets.js';
import type { ShardComm, ShardedClassifier, ShardStepResult } from './sharded-classifier.js';

export interface OcclusionSettings {
  /** Plain training up to and including this step. */
  startStep: number;
  pretrainSteps: number;
  segWeight: number;
  adversaryWeight: number;
  gate: number;
  width: number;
  randomHalves: number;
  /** Stage 2: share of the masks drawn from the docs/methods.md#feature-masks candidates instead of G (default STRUCTURED_SHARE). */
  structuredShare?: number;
  seed: number;
  imageSize: number;
  clipGradNorm: number;
  bucketMb: number;
  optimizer: OptimizerSettings;
}

/** What the ring offers this module: sums across workers. */
export interface OcclusionRing {
  allReduce(a: Float32Array, op: 'sum'): Promise<void>;
  reduceScatter(a: Float32Array, op: 'sum'): Promise<Float32Array>;
}

export interface OcclusionStepResult {
  /** The classifier's answer; train.ts updates the classifier with it unless `backboneGrads` is null. */
  cls: ShardStepResult;
  /** This worker's gradients of the backbone's trainable variables (in their order); null while F and R are frozen (stage 1). */
  backboneGrads: tf.Tensor[] | null;
  metrics: Record<string, number>;
  /** The step's updates of G and S (their optimizer steps) and of the backbone's BatchNorm statistics: only when the step is applied. */
  apply(lr: number): void;
  /** Drops them: G, S and the statistics stay as they were. */
  discard(): void;
}

/** An optimizer step whose gradients are summed and clipped already, waiting for the step to be applied. */
interface PendingUpdate {
  /** The summed gradients' norm before clipping. */
  norm: number;
  apply(lr: number): void;
  discard(): void;
}

const NO_UPDATE: PendingUpdate = { norm: 0, apply: () => {}, discard: () => {} };

/** A-Fast-RCNN back-propagates the pre-training BCE on this fraction of the negative cells. */
const NEGATIVE_CELL_SHARE = 0.4;

/** R on masked features uses the masked batch's BatchNorm statistics; see the top of the file. */
const MASKED_HEAD_TRAINING = true;

/** Stage 2: share of the samples masked with a structured docs/methods.md#feature-masks candidate rather than G's sample. */
const STRUCTURED_SHARE = 0.5;

export class OcclusionTrainer {
  readonly generator: OcclusionNet;
  readonly segmentation: OcclusionNet;
  readonly grid: [number, number, number];
  private readonly genOptimizer: BackboneOptimizer;
  private readonly segOptimizer: BackboneOptimizer;
  private readonly genBuckets: Bucket[];
  private readonly segBuckets: Bucket[];

  constructor(
    private readonly s: OcclusionSettings,
    private readonly backbone: Backbone,
    private readonly params: TrainableVariable[],
    private readonly world: number,
    private readonly rank: number,
    private readonly ring: OcclusionRing,
  ) {
    this.grid = backbone.featureShape(s.imageSize);
    const nets = { channels: this.grid[2], width: s.width, seed: s.seed };
    this.generator = OcclusionNet.generator(nets);
    this.segmentation = OcclusionNet.segmentation(nets);
    this.genOptimizer = new BackboneOptimizer(this.generator.trainableVariables(), s.optimizer);
    this.segOptimizer = new BackboneOptimizer(this.segmentation.trainableVariables(), s.optimizer);
    const sizes = (n: OcclusionNet) => n.trainableVariables().map((p) => p.variable.size);
    this.genBuckets = planBuckets(sizes(this.generator), s.bucketMb);
    this.segBuckets = planBuckets(sizes(this.segmentation), s.bucketMb);
  }

  /** Whether step `step` is an occlusion step (else train.ts trains as usual). */
  active(step: number): boolean {
    return step > this.s.startStep;
  }

  stage(step: number): 1 | 2 {
    return step <= this.s.startStep + this.s.pretrainSteps ? 1 : 2;
  }

  /** G's and S's tensors, for the checkpoint (names prefixed `occlusion.`). */
  state(): Map<string, tf.Variable> {
    return new Map([...this.generator.state(), ...this.segmentation.state()]);
  }

  /** G's and S's optimizers (their slots and update counts go into checkpoints, for a resume). */
  get optimizers(): { generator: BackboneOptimizer; segmentation: BackboneOptimizer } {
    return { generator: this.genOptimizer, segmentation: this.segOptimizer };
  }

  /** `occluders`: the box of the synthetic occluder drawn on each image (augment.occluders), or null per image. */
  async step(step: number, x: tf.Tensor4D, labels: Int32Array, classifier: ShardedClassifier, comm: ShardComm, occluders?: readonly (FractionBox | null)[]): Promise<OcclusionStepResult> {
    return this.stage(step) === 1 ? this.pretrainStep(step, x, labels, classifier, comm) : this.jointStep(step, x, labels, classifier, comm, occluders);
  }

  /** Stage 1: G learns the hardest candidate mask of each sample; everything else frozen. */
  private async pretrainStep(step: number, x: tf.Tensor4D, labels: Int32Array, classifier: ShardedClassifier, comm: ShardComm): Promise<OcclusionStepResult> {
    const [h, w] = this.grid;
    const b = labels.length;
    const cells = h * w;
    const f = this.backbone.features(x, true, { updateStats: false });
    try {
      const candidates = candidateMasks(h, w, { randomHalves: this.s.randomHalves, rng: Rng.derive(this.s.seed, 'occlusion-candidates', step, this.rank) });
      const k = candidates.length;
      // candidate-major rows: row c·B + i is sample i under candidate c
      const dim = this.backbone.embeddingSize;
      const emb = new Float32Array(k * b * dim);
      candidates.forEach((c, ci) => {
        const e = tf.tidy(() => this.backbone.head(maskFeatures(f, broadcastMask(c.mask, b, h, w)), MASKED_HEAD_TRAINING, { updateStats: false }));
        emb.set(e.dataSync() as Float32Array, ci * b * dim);
        e.dispose();
      });
      const allLabels = new Int32Array(k * b);
      for (let ci = 0; ci < k; ci++) allLabels.set(labels, ci * b);
      const cls = await classifier.forwardBackward(step, emb, allLabels, comm);
      const pY = await this.ring.reduceScatter(cls.ownedTargetProbability, 'sum');

      // the target M*: per sample, the candidate with the lowest p_y
      const target = new Float32Array(b * cells);
      const family = { landmark: 0, half: 0, random: 0 };
      for (let i = 0; i < b; i++) {
        const best = hardestCandidate(Array.from({ length: k }, (_, ci) => pY[ci * b + i]!));
        const c = candidates[best]!;
        target.set(c.mask, i * cells);
        family[c.name.startsWith('landmark') ? 'landmark' : c.name.startsWith('half') ? 'half' : 'random']++;
      }
      // BCE on every positive cell and a random 40% of the negative ones
      const keepRng = Rng.derive(this.s.seed, 'occlusion-negatives', step, this.rank);
      const weight = Float32Array.from(target, (t) => (t === 1 || keepRng.next() < NEGATIVE_CELL_SHARE ? 1 : 0));
      const globalCells = b * this.world * cells;
      const t = tf.tensor4d(target, [b, h, w, 1]);
      const wt = tf.tensor4d(weight, [b, h, w, 1]);
      const genVars = this.generator.trainableVariables().map((q) => q.variable);
      const { value, grads } = tf.engine().gradients(() => tf.div(tf.sum(tf.mul(wt, bceWithLogits(this.generator.apply(f), t))), globalCells) as tf.Scalar, genVars);
      const genLoss = await this.sumOverWorkers(value.dataSync()[0]!);
      value.dispose();
      t.dispose();
      wt.dispose();
      const gen = await this.reduce(grads, this.genBuckets, this.genOptimizer);
      cls.gradWeight.dispose(); // the classifier is frozen in stage 1
      return {
        cls,
        backboneGrads: null,
        apply: (lr) => gen.apply(lr),
        discard: () => gen.discard(),
        metrics: {
          occlusionStage: 1,
          occlusionCandidates: k,
          generatorLoss: genLoss,
          generatorGradNorm: gen.norm,
          targetLandmarkShare: family.landmark / b,
          targetHalfShare: family.half / b,
          targetRandomShare: family.random / b,
        },
      };
    } finally {
      f.dispose();
    }
  }

  /** Stage 2: clean + masked through the classifier; F, R, S minimise, G follows the masks that hurt. */
  private async jointStep(step: number, x: tf.Tensor4D, labels: Int32Array, classifier: ShardedClassifier, comm: ShardComm, occluders?: readonly (FractionBox | null)[]): Promise<OcclusionStepResult> {
    const [h, w] = this.grid;
    const b = labels.length;
    const cells = h * w;
    const dim = this.backbone.embeddingSize;
    const globalCells = b * this.world * cells;

    // one forward of F, R, S and G under a deferred tape (src/ops/deferred-gradients.ts), backpropagated after the
    // classifier exchange; the backbone's BatchNorm statistics are staged for apply. The nodes are recorded in the
    // order of a single tape over the whole loss, so every gradient sums its parts in the same order.
    const tape = new DeferredTape();
    const stats = new PendingStats();
    const owned: tf.Tensor[] = [];
    const pending: PendingUpdate[] = [];
    try {
      // f, and G's logits on a copy of f: a tensor the tape did not make, so nothing flows from G into F (stop-gradient)
      const { ft, gLogits } = tape.record(() => {
        const ft = this.backbone.features(x, true, { updateStats: stats });
        const fStop = tf.tensor4d(new Float32Array(ft.dataSync() as Float32Array), ft.shape);
        return { ft, gLogits: this.generator.apply(fStop) };
      });
      owned.push(ft, gLogits);
      const pi = tf.tidy(() => tf.sigmoid(gLogits).dataSync() as Float32Array);
      const { top, drop } = topKDropCounts(h, w);
      const maskRng = Rng.derive(this.s.seed, 'occlusion-mask', step, this.rank);
      const structured = candidateMasks(h, w, { randomHalves: this.s.randomHalves, rng: Rng.derive(this.s.seed, 'occlusion-candidates', step, this.rank) });
      const share = this.s.structuredShare ?? STRUCTURED_SHARE;
      const masks = new Float32Array(b * cells);
      const fromG = new Uint8Array(b); // 1 = G's sample, 0 = a structured candidate
      for (let i = 0; i < b; i++) {
        if (maskRng.next() < share) masks.set(structured[maskRng.int(structured.length)]!.mask, i * cells);
        else {
          masks.set(sampleTopKMask(pi.subarray(i * cells, (i + 1) * cells), top, drop, maskRng), i * cells);
          fromG[i] = 1;
        }
      }
      // drawn occluders (augment.occluders): their cells O join the dropped ones in the masked pass and S's
      // target, while S itself reads f ⊙ (1 − M), where those cells still hold the occluder's features: so S
      // learns to find real occluders, which `--seg-gate` blanks out at inference. G does not learn from
      // occluded samples (their loss drop is not all G's doing).
      let occluded = 0;
      const union = new Float32Array(masks);
      occluders?.forEach((box, i) => {
        if (!box || i >= b) return;
        occluded++;
        fromG[i] = 0;
        boxCells(h, w, box).forEach((v, c) => {
          if (v) union[i * cells + c] = 1;
        });
      });
      const mask = tf.tensor4d(union, [b, h, w, 1]);
      const segInputMask = occluded > 0 ? tf.tensor4d(masks, [b, h, w, 1]) : mask;
      owned.push(mask);
      if (segInputMask !== mask) owned.push(segInputMask);
      // R on the clean and the masked map (only the clean pass counts for BatchNorm statistics), S on the masked one
      const { eClean, eMasked, segLogits } = tape.record(() => {
        const fm = maskFeatures(ft, mask);
        const eClean = this.backbone.head(ft, true, { updateStats: stats });
        const eMasked = this.backbone.head(fm, MASKED_HEAD_TRAINING, { updateStats: false });
        const segInput = segInputMask === mask ? fm : maskFeatures(ft, segInputMask);
        return { eClean, eMasked, segLogits: this.segmentation.apply(segInput) };
      });
      owned.push(eClean, eMasked, segLogits);
      const emb = new Float32Array(2 * b * dim);
      emb.set(eClean.dataSync() as Float32Array, 0);
      emb.set(eMasked.dataSync() as Float32Array, b * dim);

      // one classifier batch of 2B rows per worker: [clean; masked], loss = ½(L_clean + L_masked)
      const twice = new Int32Array(2 * b);
      twice.set(labels, 0);
      twice.set(labels, b);
      const cls = await classifier.forwardBackward(step, emb, twice, comm);
      const p = await this.ring.reduceScatter(cls.ownedTargetProbability, 'sum');
      const gate = new Float32Array(b);
      for (let i = 0; i < b; i++) gate[i] = fromG[i] && adversaryGate(p[i]!, p[b + i]!, this.s.gate) ? 1 : 0;
      const gated = await this.sumOverWorkers(gate.reduce((a, v) => a + v, 0));

      // the loss on the recorded outputs, then the backward through F, R, S and G
      const dyClean = tf.tensor2d(cls.gradEmbeddings.subarray(0, b * dim), [b, dim]);
      const dyMasked = tf.tensor2d(cls.gradEmbeddings.subarray(b * dim), [b, dim]);
      const gateT = tf.tensor4d(gate, [b, 1, 1, 1]);
      owned.push(dyClean, dyMasked, gateT);
      const backboneVars = this.params.map((q) => q.variable);
      const segVars = this.segmentation.trainableVariables().map((q) => q.variable);
      const genVars = this.generator.trainableVariables().map((q) => q.variable);
      let segLoss = 0;
      let genLoss = 0;
      const total = tape.record(() => {
        const recognition = tf.add(tf.sum(tf.mul(eClean, dyClean)), tf.sum(tf.mul(eMasked, dyMasked)));
        const lSeg = tf.div(tf.sum(bceWithLogits(segLogits, mask)), globalCells);
        const lGen = tf.div(tf.sum(tf.mul(gateT, bceWithLogits(gLogits, mask))), globalCells);
        segLoss = lSeg.dataSync()[0]!;
        genLoss = lGen.dataSync()[0]!;
        return tf.addN([recognition, tf.mul(lSeg, this.s.segWeight), tf.mul(lGen, this.s.adversaryWeight)]) as tf.Scalar;
      });
      owned.push(total);
      const grads = tape.gradients(total, [...backboneVars, ...segVars, ...genVars]);
      const backboneGrads = grads.slice(0, backboneVars.length);
      const seg = await this.reduce(grads.slice(backboneVars.length, backboneVars.length + segVars.length), this.segBuckets, this.segOptimizer);
      pending.push(seg);
      const genGrads = grads.slice(backboneVars.length + segVars.length);
      let gen = NO_UPDATE;
      if (gated > 0) gen = await this.reduce(genGrads, this.genBuckets, this.genOptimizer);
      else genGrads.forEach((g) => g.dispose());
      pending.push(gen);

      // global means, for the log: L_clean, L_masked (−log p_y), L_seg, gated share, BCE(π, M) on the gated samples, G's share, drawn occluders' share
      const sums = new Float32Array(7);
      for (let i = 0; i < b; i++) {
        sums[0] += -Math.log(Math.max(p[i]!, 1e-30));
        sums[1] += -Math.log(Math.max(p[b + i]!, 1e-30));
        sums[3] += gate[i]!;
        sums[5] += fromG[i]!;
      }
      sums[2] = segLoss;
      sums[4] = genLoss;
      sums[6] = occluded;
      await this.ring.allReduce(sums, 'sum');
      const n = b * this.world;
      return {
        cls,
        backboneGrads,
        apply: (lr) => {
          stats.commit();
          seg.apply(lr);
          gen.apply(lr);
        },
        discard: () => {
          stats.discard();
          seg.discard();
          gen.discard();
        },
        metrics: {
          occlusionStage: 2,
          lossClean: sums[0]! / n,
          lossMasked: sums[1]! / n,
          segLoss: sums[2]!,
          adversaryShare: sums[3]! / n,
          generatorMaskShare: sums[5]! / n,
          occludedShare: sums[6]! / n,
          generatorLoss: sums[4]!,
          segGradNorm: seg.norm,
          generatorGradNorm: gen.norm,
          droppedCells: drop,
        },
      };
    } catch (e) {
      tape.dispose();
      stats.discard();
      pending.forEach((u) => u.discard());
      throw e;
    } finally {
      owned.forEach((t) => t.dispose());
    }
  }

  /** Sums over workers and clips now (the collectives belong to the step); the optimizer step waits for apply. */
  private async reduce(local: tf.Tensor[], buckets: Bucket[], optimizer: BackboneOptimizer): Promise<PendingUpdate> {
    const summed = await allReduceGradients(local, buckets, (a) => this.ring.allReduce(a, 'sum'));
    const { grads, norm } = clipGradNorm(summed, this.s.clipGradNorm);
    const release = () => grads.forEach((g) => g.dispose());
    return {
      norm,
      apply: (lr) => {
        optimizer.step(grads, lr);
        release();
      },
      discard: release,
    };
  }

  private async sumOverWorkers(v: number): Promise<number> {
    const a = Float32Array.of(v);
    await this.ring.allReduce(a, 'sum');
    return a[0]!;
  }

  dispose(): void {
    this.generator.dispose();
    this.segmentation.dispose();
    this.genOptimizer.dispose();
    this.segOptimizer.dispose();
  }
}

/** f ⊙ (1 − M), M [B, H, W, 1] broadcast over channels. */
export function maskFeatures(f: tf.Tensor, m: tf.Tensor): tf.Tensor4D {
  return tf.mul(f, tf.sub(1, m)) as tf.Tensor4D;
}

/** One mask for every sample: [B, H, W, 1]. */
function broadcastMask(mask: CellMask, b: number, h: number, w: number): tf.Tensor4D {
  return tf.tile(tf.tensor4d(Float32Array.from(mask), [1, h, w, 1]), [b, 1, 1, 1]) as tf.Tensor4D;
}

/** Element-wise binary cross-entropy from logits z against targets t: max(z, 0) − z·t + log(1 + e^−|z|). */
export function bceWithLogits(z: tf.Tensor, t: tf.Tensor): tf.Tensor {
  return tf.add(tf.sub(tf.relu(z), tf.mul(z, t)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))));
}
