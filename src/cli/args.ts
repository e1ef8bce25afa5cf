/**
 * A small, strict command-line parser: `--key value`, `--key=value`, `--flag`,
 * `--no-flag`, repeated keys collected, and everything after `--` kept apart.
 * Unknown options are an error, named, so typos never pass silently.
 */
export type OptionKind = 'string' | 'number' | 'int' | 'boolean' | 'list';

export interface OptionSpec {
  kind: OptionKind;
  default?: string | number | boolean | string[];
  help?: string;
}

export type Parsed = {
  options: Record<string, string | number | boolean | string[] | undefined>;
  positional: string[];
  rest: string[];
};

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseArgs(argv: string[], spec: Record<string, OptionSpec>, opts: { allowPositional?: boolean } = {}): Parsed {
  const options: Parsed['options'] = {};
  const positional: string[] = [];
  let rest: string[] = [];
  for (const [k, s] of Object.entries(spec)) if (s.default !== undefined) options[k] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (!a.startsWith('--')) {
      if (!opts.allowPositional) throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
      positional.push(a);
      continue;
    }
    let key = a.slice(2);
    let value: string | undefined;
    const eq = key.indexOf('=');
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    }
    const s = spec[key];
    if (!s && key.startsWith('no-') && spec[key.slice(3)]?.kind === 'boolean' && value === undefined) {
      options[key.slice(3)] = false;
      continue;
    }
    if (!s) throw new UsageError(`unknown option --${key}`);
    if (s.kind === 'boolean') {
      if (value === undefined) options[key] = true;
      else if (value === 'true' || value === 'false') options[key] = value === 'true';
      else throw new UsageError(`--${key} takes true or false, got ${JSON.stringify(value)}`);
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`--${key} needs a value`);
    }
    options[key] = convert(key, s, value, options[key]);
  }
  return { options, positional, rest };
}

function convert(key: string, s: OptionSpec, v: string, prev: Parsed['options'][string]): string | number | string[] {
  switch (s.kind) {
    case 'string':
      return v;
    case 'list':
      return [...(Array.isArray(prev) && prev !== s.default ? prev : []), v];
    case 'number': {
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${key} must be a number, got ${JSON.stringify(v)}`);
      return n;
    }
    case 'int': {
      const n = Number(v);
      if (v.trim() === '' || !Number.isInteger(n)) throw new UsageError(`--${key} must be an integer, got ${JSON.stringify(v)}`);
      return n;
    }
    default:
      throw new UsageError(`--${key}: unsupported kind`);
  }
}

export function usage(command: string, spec: Record<string, OptionSpec>): string {
  const lines = Object.entries(spec).map(([k, s]) => {
    const def = s.default !== undefined ? ` (default ${JSON.stringify(s.default)})` : '';
    return `  --${k}${s.kind === 'boolean' ? '' : ` <${s.kind}>`}  ${s.help ?? ''}${def}`;
  });
  return `usage: shardface ${command} [options]\n${lines.join('\n')}`;
}
