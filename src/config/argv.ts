/**
 * Command-line side of the configuration: `--config FILE`, `--print-config`
 * and `--key value` / `--key=value` / `--flag` / `--no-flag` overrides of any
 * config key (dashed or camelCase, dotted for margin.*). Options the caller
 * handles itself are passed through; anything else unknown is an error.
 */
import { ConfigError, assertKnownKey, normaliseKey } from './resolve.js';
import { CONFIG_KEYS } from './schema.js';

export interface ConfigArgs {
  file?: string;
  printConfig: boolean;
  overrides: Record<string, string | boolean>;
  /** Pass-through options, as given (name without dashes → value, or true for flags). */
  other: Record<string, string | boolean>;
}

export function parseConfigArgv(argv: string[], opts: { passThrough?: Record<string, 'flag' | 'value'> } = {}): ConfigArgs {
  const out: ConfigArgs = { printConfig: false, overrides: {}, other: {} };
  const pass = opts.passThrough ?? {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument ${JSON.stringify(arg)}`);
    let name = arg.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const takeValue = (): string => {
      if (value !== undefined) return value;
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(`--${name} needs a value`, normaliseKey(name));
      return next;
    };
    if (name === 'print-config') {
      out.printConfig = true;
      continue;
    }
    if (name === 'config') {
      out.file = takeValue();
      continue;
    }
    if (pass[name]) {
      out.other[name] = pass[name] === 'flag' ? (value ?? true) : takeValue();
      continue;
    }
    const key = normaliseKey(name);
    if (!(name.startsWith('no-') && CONFIG_KEYS[normaliseKey(name.slice(3))]?.kind === 'boolean')) assertKnownKey(key, `command line (--${name})`);
    const negated = name.startsWith('no-') ? normaliseKey(name.slice(3)) : null;
    if (CONFIG_KEYS[key]?.kind === 'boolean') {
      const next = argv[i + 1];
      if (value !== undefined) out.overrides[name] = value;
      else if (next === 'true' || next === 'false') out.overrides[name] = argv[++i]!;
      else out.overrides[name] = true;
    } else if (negated && CONFIG_KEYS[negated]?.kind === 'boolean' && value === undefined) {
      out.overrides[name.slice(3)] = false;
    } else {
      out.overrides[name] = takeValue();
    }
  }
  return out;
}
