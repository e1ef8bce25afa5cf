#!/usr/bin/env node
/**
 * The `shardface` command. Each sub-command lives in its own module under
 * ./commands and is loaded only when called, so `shardface coordinator` never
 * pays for TensorFlow.js and a broken optional piece cannot break the others.
 */
import { UsageError } from './args.js';

type CommandModule = { run(argv: string[]): Promise<number> };

const COMMANDS: Record<string, { file: string; summary: string }> = {
  coordinator: { file: 'coordinator', summary: 'run the job coordinator' },
  worker: { file: 'worker', summary: 'run one worker (one device)' },
  launch: { file: 'launch', summary: 'start a coordinator and N local workers' },
  keys: { file: 'keys', summary: 'generate CURVE keys for encrypted, authenticated connections' },
  train: { file: 'train', summary: 'train a model (coordinator + local workers)' },
  selftest: { file: 'selftest', summary: 'check the sharded classifier against one process' },
  bench: { file: 'bench', summary: 'benchmarks (collectives, classifier, kernels, profile, train)' },
  'model-info': { file: 'model-info', summary: 'parameters and multiply-adds of a backbone' },
  data: { file: 'data', summary: 'inspect training data (info) and convert image folders to RecordIO' },
  export: { file: 'export', summary: 'write a checkpoint as a TensorFlow.js model' },
  embed: { file: 'embed', summary: 'face embeddings (and magnitudes) of image files' },
  eval: { file: 'eval', summary: 'verification accuracy of a checkpoint' },
  ckpt: { file: 'ckpt', summary: 'inspect and verify checkpoints (info), merge the classifier shards (merge)' },
  report: { file: 'report', summary: 'plots (SVG, PNG) and an HTML report of a run directory' },
};

function help(): string {
  const rows = Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(12)} ${v.summary}`);
  return `shardface — distributed training for large-scale face recognition\n\nusage: shardface <command> [options]\n\n${rows.join('\n')}\n\nRun 'shardface <command> --help' for a command's options.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`shardface: unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return 2;
  }
  let mod: CommandModule;
  try {
    mod = (await import(`./commands/${cmd.file}.js`)) as CommandModule;
  } catch (e) {
    console.error(`shardface: command ${name} is not available: ${(e as Error).message}`);
    return 1;
  }
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      console.error(`shardface: ${e.message}`);
      process.exitCode = 2;
    } else {
      console.error(`shardface: ${(e as Error)?.stack ?? String(e)}`);
      process.exitCode = 1;
    }
  },
);
