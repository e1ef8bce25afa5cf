/**
 * Printing a configuration (`--print-config`, as YAML that loads back) and the
 * reference table of all keys (for the README), both from CONFIG_KEYS.
 */
import { CONFIG_KEYS, describeType } from './schema.js';
import type { TrainConfig } from './schema.js';

function valueAt(cfg: TrainConfig, key: string): unknown {
  let o: unknown = cfg;
  for (const p of key.split('.')) o = (o as Record<string, unknown>)[p];
  return o;
}

/** The config as YAML, every key preceded by its documentation as a comment (docs: false leaves them out). */
export function formatConfig(cfg: TrainConfig, opts: { docs?: boolean } = {}): string {
  const docs = opts.docs ?? true;
  const lines: string[] = [];
  let group = '';
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    const dot = key.lastIndexOf('.');
    const g = dot >= 0 ? key.slice(0, dot) : '';
    if (g !== group) {
      if (g) lines.push(`${g}:`);
      group = g;
    }
    const indent = g ? '  ' : '';
    if (docs) lines.push(`${indent}# ${spec.docs} (${describeType(spec)})`);
    lines.push(`${indent}${key.slice(dot + 1)}: ${JSON.stringify(valueAt(cfg, key))}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Markdown table of every key: command-line name, type, default, meaning. */
export function configReference(): string {
  const rows = Object.entries(CONFIG_KEYS).map(([key, spec]) => {
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    return `| \`${key}\` | \`${flag}\` | ${describeType(spec)} | \`${JSON.stringify(spec.default)}\` | ${spec.docs} |`;
  });
  return ['| key | option | type | default | meaning |', '|---|---|---|---|---|', ...rows].join('\n') + '\n';
}

/** Plain-text list of every key as a command-line option, for `--help`. */
export function configHelp(): string {
  return Object.entries(CONFIG_KEYS)
    .map(([key, spec]) => {
      const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      return `  ${flag.padEnd(22)} ${spec.docs}\n  ${''.padEnd(22)} ${describeType(spec)}; default ${JSON.stringify(spec.default)}`;
    })
    .join('\n');
}
