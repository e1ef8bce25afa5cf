/**
 * Checkpoint → TensorFlow.js model directory:
 *
 *   OUT/model.json              graph model (GraphDef as JSON, ./graph-model.ts)
 *   OUT/group1-shardKofN.bin    weights
 *   OUT/shardface.json          model card: backbone, sizes, preprocessing, step
 *   OUT/README.md               how to load it in a browser and in Node
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeBackbone, isBackboneName, type Backbone } from '../models/index.js';
import { loadBackboneFromCheckpoint } from '../eval/load-backbone.js';
import { buildGraphModel, INPUT_NAME, OUTPUT_NAME, writeGraphModel, type GraphModelArtifacts } from './graph-model.js';
import type { HostTensor } from './graph-runner.js';
import { exportReadme, PREPROCESSING, type ModelCard } from './usage.js';

export const EXPORT_FORMATS = ['graph'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export interface ExportResult {
  out: string;
  card: ModelCard;
  ops: Record<string, number>;
  weightBytes: number;
  files: string[];
}

/** Every persistent tensor of a backbone, copied to host memory. */
async function backboneTensors(backbone: Backbone): Promise<Map<string, HostTensor>> {
  const m = new Map<string, HostTensor>();
  for (const [name, v] of backbone.state()) m.set(name, { data: (await v.data()) as Float32Array, shape: [...v.shape] });
  return m;
}

/** The graph model of a live backbone (built with the default architecture options, as training does). */
async function graphModelOf(backbone: Backbone, metadata?: Record<string, unknown>): Promise<GraphModelArtifacts> {
  if (!isBackboneName(backbone.name)) throw new Error(`export: unknown backbone ${backbone.name}`);
  const desc = describeBackbone(backbone.name, { embeddingSize: backbone.embeddingSize, inputSize: backbone.inputSize });
  return buildGraphModel(desc, await backboneTensors(backbone), metadata ? { metadata } : {});
}

export async function exportCheckpoint(opts: { checkpoint: string; out: string; format?: ExportFormat }): Promise<ExportResult> {
  const format = opts.format ?? 'graph';
  if (format !== 'graph') throw new Error(`export: unsupported format ${JSON.stringify(format)}`);
  const { backbone, manifest, dir } = await loadBackboneFromCheckpoint(opts.checkpoint);
  try {
    const desc = describeBackbone(backbone.name as Parameters<typeof describeBackbone>[0], { embeddingSize: backbone.embeddingSize, inputSize: backbone.inputSize });
    const side = desc.anyInputSize ? -1 : desc.inputSize;
    const card: ModelCard = {
      format: 'tfjs-graph-model',
      backbone: backbone.name,
      embeddingSize: backbone.embeddingSize,
      imageSize: backbone.inputSize,
      anyInputSize: desc.anyInputSize,
      preprocessing: PREPROCESSING,
      input: { name: INPUT_NAME, shape: [-1, side, side, 3], dtype: 'float32' },
      output: { name: OUTPUT_NAME, shape: [-1, backbone.embeddingSize], dtype: 'float32', meaning: 'raw (unnormalised) embedding; L2-normalise before comparing' },
      step: manifest.step,
      checkpoint: dir,
      exportedAt: new Date().toISOString(),
    };
    const artifacts = await graphModelOf(backbone, { shardface: card });
    mkdirSync(opts.out, { recursive: true });
    writeFileSync(join(opts.out, 'shardface.json'), JSON.stringify(card, null, 2) + '\n');
    writeFileSync(join(opts.out, 'README.md'), exportReadme(card));
    writeGraphModel(opts.out, artifacts);
    return {
      out: opts.out,
      card,
      ops: artifacts.ops,
      weightBytes: artifacts.shards.reduce((a, s) => a + s.data.byteLength, 0),
      files: ['model.json', ...artifacts.shards.map((s) => s.path), 'shardface.json', 'README.md'],
    };
  } finally {
    backbone.dispose();
  }
}
