/**
 * `shardface model-info --backbone NAME [--image-size S] [--no-se] [--json] [--layers]`:
 * parameters and multiply-adds of a backbone, traced from its description (no
 * tensors are allocated, so even iresnet200 answers instantly).
 */
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { BACKBONE_NAMES, humanCount, isBackboneName, modelInfo, type ModelInfo } from '../../models/index.js';

const OPTIONS: Record<string, OptionSpec> = {
  backbone: { kind: 'string', help: `one of ${BACKBONE_NAMES.join(', ')}` },
  'image-size': { kind: 'int', help: 'square input side in pixels (default 112)' },
  'embedding-size': { kind: 'int', default: 512, help: 'embedding size D' },
  se: { kind: 'boolean', help: 'vargfacenet: squeeze-excitation on (default) or off (--no-se)' },
  json: { kind: 'boolean', default: false, help: 'print one JSON line instead of a table' },
  layers: { kind: 'boolean', default: false, help: 'also list every layer (output shape, params, MACs)' },
  help: { kind: 'boolean', default: false, help: 'show this help' },
};

export async function run(argv: string[]): Promise<number> {
  const { options } = parseArgs(argv, OPTIONS);
  if (options.help) {
    console.log(usage('model-info', OPTIONS));
    return 0;
  }
  const name = options.backbone as string | undefined;
  if (!name) throw new UsageError(`model-info needs --backbone (${BACKBONE_NAMES.join(', ')})`);
  if (!isBackboneName(name)) throw new UsageError(`unknown backbone ${JSON.stringify(name)}; choose one of ${BACKBONE_NAMES.join(', ')}`);
  const se = options.se as boolean | undefined;
  if (se !== undefined && name !== 'vargfacenet') throw new UsageError('--se / --no-se apply to vargfacenet only');

  let info: ModelInfo;
  try {
    info = modelInfo(name, {
      inputSize: options['image-size'] as number | undefined,
      embeddingSize: options['embedding-size'] as number,
      ...(se !== undefined ? { se } : {}),
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }

  if (options.json) {
    const { layers, ...summary } = info;
    console.log(JSON.stringify(options.layers ? { ...summary, layers } : summary));
    return 0;
  }
  console.log(table(info, options.layers as boolean));
  return 0;
}

function table(info: ModelInfo, withLayers: boolean): string {
  const k = info.paramsByKind;
  const rows: [string, string][] = [
    ['backbone', info.name],
    ['input', `${info.inputSize}×${info.inputSize}×3`],
    ['embedding', String(info.embeddingSize)],
    ['params', `${humanCount(info.params)} (${info.params.toLocaleString('en-US')})`],
    ['  conv/FC', `${humanCount(k.convFc)} (${k.convFc.toLocaleString('en-US')})`],
    ['  BatchNorm γ,β', `${humanCount(k.batchNorm)} (${k.batchNorm.toLocaleString('en-US')})`],
    ['  PReLU', `${humanCount(k.prelu)} (${k.prelu.toLocaleString('en-US')})`],
    ['  trainable', `${humanCount(info.paramsTrainable)} (${info.paramsTrainable.toLocaleString('en-US')})`],
    ['BN running stats', info.buffers.toLocaleString('en-US')],
    ['MACs / image', `${humanCount(info.macs)} (${info.macs.toLocaleString('en-US')}; ×2 for FLOPs)`],
  ];
  const lines = rows.map(([a, b]) => `${a.padEnd(18)} ${b}`);
  if (withLayers) {
    lines.push('', `${'layer'.padEnd(44)} ${'kind'.padEnd(10)} ${'output'.padEnd(18)} ${'params'.padStart(11)} ${'MACs'.padStart(14)}`);
    for (const l of info.layers)
      lines.push(`${l.name.padEnd(44)} ${l.kind.padEnd(10)} ${`[${l.outShape.slice(1).join(',')}]`.padEnd(18)} ${String(l.params).padStart(11)} ${String(l.macs).padStart(14)}`);
  }
  return lines.join('\n');
}
