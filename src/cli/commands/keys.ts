/** `shardface keys generate DIR`: CURVE key pairs and authorized_keys for `--curve-keys DIR`. */
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { generateKeys, KeyFileError } from '../../protocol/keys.js';

const KEYS_OPTIONS: Record<string, OptionSpec> = {
  workers: { kind: 'int', default: 0, help: 'one key pair per worker (worker-0 … worker-N-1); 0 = one pair shared by all workers' },
  force: { kind: 'boolean', help: 'replace existing keys in DIR' },
  help: { kind: 'boolean', help: 'show this help' },
};

export async function run(argv: string[]): Promise<number> {
  const { options: o, positional } = parseArgs(argv, KEYS_OPTIONS, { allowPositional: true });
  if (o.help || positional.length === 0) {
    console.log(
      `${usage('keys generate DIR', KEYS_OPTIONS)}\n\nWrites DIR/coordinator.key (secret, the coordinator only), DIR/coordinator.pub (every worker),\nworker.key or worker-<i>.key (secret, one per worker node), their .pub files and DIR/authorized_keys\n(the worker keys the coordinator and the ring inboxes accept). Pass --curve-keys DIR to train, launch,\ncoordinator and worker.`,
    );
    return o.help ? 0 : 2;
  }
  const [sub, dir, ...extra] = positional;
  if (sub !== 'generate') throw new UsageError(`unknown keys sub-command ${JSON.stringify(sub)}; use: shardface keys generate DIR`);
  if (!dir || extra.length) throw new UsageError('usage: shardface keys generate DIR [--workers N] [--force]');
  const workers = o.workers as number;
  if (workers < 0 || workers > 4096) throw new UsageError(`--workers must be in [0, 4096], got ${workers}`);
  try {
    const files = generateKeys(dir, { workers, force: o.force === true });
    console.log(`wrote ${files.length} files to ${dir}:\n${files.map((f) => `  ${f}`).join('\n')}`);
    return 0;
  } catch (e) {
    if (e instanceof KeyFileError) throw new UsageError(e.message);
    throw e;
  }
}
