/**
 * How an exported model is used without shardface: the model card
 * (`shardface.json`), and the loading code written into the export's README.md.
 * The Node snippet is the one the export tests run in a fresh process that
 * imports only @tensorflow/tfjs, so the documentation cannot rot.
 */

/** `DIR/shardface.json`: what a user needs to feed the model. */
export interface ModelCard {
  format: 'tfjs-graph-model';
  backbone: string;
  embeddingSize: number;
  /** Square input side the model was trained at (any size ≥ 16 works when `anyInputSize`). */
  imageSize: number;
  anyInputSize: boolean;
  preprocessing: string;
  input: { name: string; shape: number[]; dtype: 'float32' };
  output: { name: string; shape: number[]; dtype: 'float32'; meaning: string };
  /** Checkpoint step the weights come from. */
  step: number;
  checkpoint: string;
  exportedAt: string;
}

export const PREPROCESSING = '(x/255-0.5)/0.5, NHWC RGB';

/**
 * Plain @tensorflow/tfjs in Node has no `file://` handler (that comes with
 * tfjs-node), so the model files are read with fs and handed over through
 * `tf.io.fromMemory`. Defines `loadGraphModelFromDir(dir)`.
 */
export const NODE_LOADER = `import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

// Plain @tensorflow/tfjs has no file:// loader in Node (tfjs-node adds one):
// read model.json and its weight shards, and pass them in memory.
async function loadGraphModelFromDir(dir) {
  const json = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8'));
  const paths = json.weightsManifest.flatMap((group) => group.paths);
  const bytes = Buffer.concat(await Promise.all(paths.map((p) => readFile(join(dir, p)))));
  return tf.loadGraphModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      signature: json.signature,
      userDefinedMetadata: json.userDefinedMetadata,
      weightSpecs: json.weightsManifest.flatMap((group) => group.weights),
      weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    }),
  );
}
`;

export function exportReadme(card: ModelCard): string {
  const s = card.anyInputSize ? 'S' : String(card.imageSize);
  return `# ${card.backbone} face embedding model (TensorFlow.js graph model)

Exported by \`shardface export\` from ${card.checkpoint} (step ${card.step}).

- input \`${card.input.name}\`: float32 [N, ${s}, ${s}, 3], NHWC RGB, each pixel x in 0..255 mapped to (x/255 − 0.5)/0.5${card.anyInputSize ? ` (trained at ${card.imageSize}; any S ≥ 16 runs)` : ''}
- output \`${card.output.name}\`: float32 [N, ${card.embeddingSize}], ${card.output.meaning}

Compare faces by the cosine of L2-normalised embeddings; insightface's
verification protocol sums the embeddings of an image and its horizontal
mirror before normalising. The norm of the raw embedding is a quality score
for MagFace-trained models.

## Browser

\`\`\`js
import * as tf from '@tensorflow/tfjs';
const model = await tf.loadGraphModel('https://your.host/path/to/this/dir/model.json');
const embedding = model.predict(input); // input: tf.Tensor4D as above
\`\`\`

## Node, with @tensorflow/tfjs only

\`\`\`js
${NODE_LOADER}
const model = await loadGraphModelFromDir('path/to/this/dir');
const embedding = model.predict(tf.zeros([1, ${card.imageSize}, ${card.imageSize}, 3]));
\`\`\`

With @tensorflow/tfjs-node installed, \`tf.loadGraphModel('file://path/to/this/dir/model.json')\` works directly.
`;
}
