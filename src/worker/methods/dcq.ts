/**
 * `classifier: dcq`: the Dynamic Class Queue (dcq-training.ts) as a training
 * method. No classifier rows: the queue softmax gives ∂L/∂q, and the queue
 * and key encoder move in the step's apply (nothing of theirs in a skipped step).
 *
 * Checkpoints (checkpoint/checkpoint.ts layout, manifest unchanged):
 *  - backbone.safetensors (rank 0) holds the network to run at inference
 *    under the plain tensor names, which for DCQ is the KEY encoder, so
 *    `shardface eval`, `embed` and `export` use it as they are; the trained
 *    query encoder rides along under `query.<name>` (metadata
 *    `network: dcq-key-encoder`, `queryPrefix`), and its optimizer's slots
 *    under `query.optimizer.<name>` (metadata `optimizer`, `optimizerStep`).
 *  - queue-shard-<rank>.safetensors: the worker's queue block (`keys`
 *    slots×D, `labels`) with metadata slotStart, slotCount, queueSize, ptr.
 *    The manifest lists it among `shards` (with the worker's class range, as
 *    for fc).
 */
import { createBackbone } from '../../models/index.js';
import { BACKBONE_FILE } from '../../checkpoint/checkpoint.js';
import { DCQ_NETWORK, DCQ_QUERY_OPTIMIZER_PREFIX, DCQ_QUERY_PREFIX, DcqTraining, queueShardFile } from '../dcq-training.js';
import { embeddingStep } from './embedding-step.js';
import { networkMeta } from './checkpoint.js';
import { backboneOptions } from './backbone-options.js';
import { join } from 'node:path';
import { readTensorFile } from '../../checkpoint/tensor-file.js';
import { restoreNetwork, type RestorePoint } from './restore.js';
import { storedTensors, type CheckpointContent, type MethodContext, type MethodStepInput, type MethodStepResult, type TrainingMethod } from './method.js';

export class DcqMethod implements TrainingMethod {
  readonly name = 'dcq';
  private readonly dcq: DcqTraining;

  constructor(private readonly m: MethodContext) {
    // the key encoder: a second network of the query's architecture
    this.dcq = new DcqTraining(m.worker, m.cfg, m.backbone, createBackbone(m.cfg.backbone, backboneOptions(m.cfg)), m.loader);
  }

  /** Verification and inference use the key encoder. */
  get inferenceNetwork() {
    return this.dcq.inferenceNetwork;
  }

  step(input: MethodStepInput): Promise<MethodStepResult> {
    return embeddingStep(this.m.backbone, this.m.params, input, async (emb) => {
      const r = await this.dcq.step(input.step, input.epoch, input.batchIndex, emb, input.batch.labels, this.m.comm);
      return { loss: r.loss, gradEmbeddings: r.gradEmbeddings, metrics: { activeClasses: this.dcq.queue.slots.count }, apply: () => r.apply(), discard: () => r.discard() };
    });
  }

  async checkpoint(): Promise<CheckpointContent> {
    const { worker, cfg, backbone, optimizer } = this.m;
    const q = this.dcq.queue;
    const shard = {
      file: queueShardFile(worker.rank),
      tensors: { keys: { data: q.state.keys, shape: [q.slots.count, cfg.embeddingSize] }, labels: { data: q.state.labels, shape: [q.slots.count] } },
      meta: { classifier: 'dcq', slotStart: String(q.slots.start), slotCount: String(q.slots.count), queueSize: String(cfg.dcq.queueSize), ptr: String(q.state.ptr) },
      announce: { slotStart: q.slots.start, slotCount: q.slots.count },
    };
    if (worker.rank !== 0) return { shard, network: null };
    // the query encoder's optimizer slots ride along under `query.optimizer.` (for a resume; loaders ignore them)
    const tensors = {
      ...(await storedTensors(this.dcq.keyEncoder.network.state())),
      ...(await storedTensors(backbone.state(), DCQ_QUERY_PREFIX)),
      ...(await storedTensors(optimizer.state(), DCQ_QUERY_OPTIMIZER_PREFIX)),
    };
    return {
      shard,
      network: {
        file: BACKBONE_FILE,
        tensors,
        meta: { ...networkMeta(cfg, optimizer), network: DCQ_NETWORK, queryPrefix: DCQ_QUERY_PREFIX },
      },
    };
  }

  /** The key encoder, the query encoder and its optimizer, and this worker's queue block with the pointer. */
  restore(from: RestorePoint): Promise<void> {
    const { worker, backbone, optimizer } = this.m;
    restoreNetwork(from, backbone, optimizer, this.dcq.keyEncoder.network.state(), { backbonePrefix: DCQ_QUERY_PREFIX, optimizerPrefix: DCQ_QUERY_OPTIMIZER_PREFIX });
    const q = this.dcq.queue;
    const entry = from.manifest.shards.find((s) => s.rank === worker.rank);
    if (!entry) throw new Error(`${from.dir}: the manifest has no queue shard for rank ${worker.rank}`);
    const path = join(from.dir, entry.file);
    const { tensors, metadata } = readTensorFile(path, entry.sha256);
    if (Number(metadata.slotStart) !== q.slots.start || Number(metadata.slotCount) !== q.slots.count)
      throw new Error(
        `${path}: queue slots ${metadata.slotStart}+${metadata.slotCount}, this rank holds ${q.slots.start}+${q.slots.count} (DCQ resumes with the same worker count and queue size only)`,
      );
    const keys = tensors.keys?.data;
    const labels = tensors.labels?.data;
    if (!(keys instanceof Float32Array) || keys.length !== q.state.keys.length) throw new Error(`${path}: keys missing or of another size`);
    if (!(labels instanceof Int32Array) || labels.length !== q.state.labels.length) throw new Error(`${path}: labels missing or of another size`);
    const ptr = Number(metadata.ptr);
    if (!Number.isSafeInteger(ptr) || ptr < 0) throw new Error(`${path}: metadata ptr ${JSON.stringify(metadata.ptr)} is not a queue position`);
    q.state.keys.set(keys);
    q.state.labels.set(labels);
    q.state.ptr = ptr;
    return Promise.resolve();
  }

  dispose(): void {
    this.dcq.close();
  }
}
