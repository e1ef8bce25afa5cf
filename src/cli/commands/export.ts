/**
 * `shardface export --checkpoint RUN_DIR/ckpt[/step-N] --out DIR [--format graph]`:
 * writes the checkpoint's backbone as a TensorFlow.js graph model that loads
 * without shardface (DIR/README.md shows how, in a browser and in Node), plus
 * DIR/shardface.json (backbone, sizes, preprocessing, step). Prints one JSON
 * line: {out, backbone, step, embeddingSize, imageSize, weightBytes, ops, files}.
 */
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { initBackend } from '../../ops/backend.js';
import { CheckpointError, resolveCheckpointDir } from '../../eval/load-backbone.js';
import { EXPORT_FORMATS, exportCheckpoint, type ExportFormat } from '../../export/export-checkpoint.js';

const OPTIONS: Record<string, OptionSpec> = {
  checkpoint: { kind: 'string', help: 'RUN_DIR/ckpt (latest complete step) or RUN_DIR/ckpt/step-N' },
  out: { kind: 'string', help: 'output directory (created; model.json, weight shards, shardface.json, README.md)' },
  format: {
    kind: 'string',
    default: 'graph',
    help: 'graph: tf.loadGraphModel (every backbone). layers (tf.loadLayersModel) is not offered: Keras layers have no grouped convolution',
  },
  help: { kind: 'boolean', default: false, help: 'show this help' },
};

export async function run(argv: string[]): Promise<number> {
  const { options: o } = parseArgs(argv, OPTIONS);
  if (o.help) {
    console.log(usage('export', OPTIONS));
    return 0;
  }
  const checkpoint = o.checkpoint as string | undefined;
  const out = o.out as string | undefined;
  if (!checkpoint) throw new UsageError('export needs --checkpoint RUN_DIR/ckpt or RUN_DIR/ckpt/step-N');
  if (!out) throw new UsageError('export needs --out DIR');
  const format = o.format as string;
  if (format === 'layers')
    throw new UsageError('--format layers is not supported: tfjs-layers has no grouped convolution (mobilefacenet, vargfacenet); use --format graph, which loads with tf.loadGraphModel');
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format must be one of ${EXPORT_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);

  try {
    resolveCheckpointDir(checkpoint);
    // no computation happens here; the stock CPU backend just holds the tensors
    await initBackend('cpu');
    const r = await exportCheckpoint({ checkpoint, out, format: format as ExportFormat });
    const { card } = r;
    console.log(
      JSON.stringify({ out: r.out, backbone: card.backbone, step: card.step, embeddingSize: card.embeddingSize, imageSize: card.imageSize, weightBytes: r.weightBytes, ops: r.ops, files: r.files }),
    );
    return 0;
  } catch (e) {
    if (e instanceof CheckpointError) throw new UsageError(e.message);
    throw e;
  }
}
