/**
 * From a config file plus command-line overrides to one validated TrainConfig:
 * defaults, then the file (JSON or YAML), then overrides; each value checked
 * against CONFIG_KEYS, then the checks that need several keys (does the global
 * batch fit the training set? does every worker own a class?). Every error
 * names the key, where the value came from and what was expected, before any
 * process starts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseDataSpec } from '../data/dataset.js';
import { CONFIG_KEYS, MARGIN_PRESETS, MARGIN_USES, describeType, type KeySpec, type MarginType, type TrainConfig } from './schema.js';
import { checkLossAndDistillation } from './loss-checks.js';
import { marginWarmupSteps } from '../ops/margin-schedule.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    message: string,
    /** The offending key (dotted), or null for a whole-file or command-line problem. */
    readonly key: string | null = null,
  ) {
    super(message);
  }
}

type Value = string | number | boolean;
type Flat = Map<string, { value: Value; source: string }>;

/** `sample-rate` → `sampleRate`, `margin.m2` stays, `Margin.M2` is not a key. */
export function normaliseKey(key: string): string {
  return key
    .split('.')
    .map((part) => part.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase()))
    .join('.');
}

/** The closest known key, for "did you mean" hints. */
function suggest(key: string): string {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best = '';
  let bestD = Infinity;
  for (const k of Object.keys(CONFIG_KEYS)) {
    const d = editDistance(norm(key), norm(k));
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return bestD <= Math.max(2, Math.floor(key.length / 3)) ? ` (did you mean "${best}"?)` : '';
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** Throws the "unknown config key" error (with a suggestion) unless `key` is a key or a group of keys. */
export function assertKnownKey(key: string, source: string): void {
  if (!CONFIG_KEYS[key] && !Object.keys(CONFIG_KEYS).some((k) => k.startsWith(`${key}.`))) specOf(key, source);
}

function specOf(key: string, source: string): KeySpec {
  const spec = CONFIG_KEYS[key];
  if (!spec) throw new ConfigError(`unknown config key "${key}" in ${source}${suggest(key)}; run with --print-config to list the keys`, key);
  return spec;
}

/** Checks (and, for command-line strings, converts) one value against its key's spec. */
function checkValue(key: string, raw: unknown, source: string, fromText: boolean): Value {
  const spec = specOf(key, source);
  const bad = (): never => {
    throw new ConfigError(`config key "${key}" (from ${source}) must be ${describeType(spec)}, got ${JSON.stringify(raw)}`, key);
  };
  let v: unknown = raw;
  if (fromText && typeof raw === 'string') {
    if (spec.kind === 'int' || spec.kind === 'number') v = raw.trim() === '' ? NaN : Number(raw);
    else if (spec.kind === 'boolean') v = raw === 'true' ? true : raw === 'false' ? false : raw;
  }
  switch (spec.kind) {
    case 'boolean':
      if (typeof v !== 'boolean') bad();
      return v as boolean;
    case 'string':
      if (typeof v !== 'string' || v === '') bad();
      return v as string;
    case 'enum':
      if (typeof v !== 'string' || !spec.values.includes(v)) bad();
      return v as string;
    case 'int':
    case 'number': {
      if (typeof v !== 'number' || !Number.isFinite(v)) bad();
      const n = v as number;
      if (spec.kind === 'int' && !Number.isInteger(n)) bad();
      if (spec.min !== undefined && (n < spec.min || (spec.kind === 'number' && spec.minExclusive && n === spec.min))) bad();
      if (spec.max !== undefined && (n > spec.max || (spec.kind === 'number' && spec.maxExclusive && n === spec.max))) bad();
      return n;
    }
  }
}

/** Flattens a parsed config file ({margin: {m2: 0.4}} → margin.m2), rejecting unknown keys. */
function flattenFile(obj: unknown, source: string, into: Flat): void {
  if (obj === null || obj === undefined) return; // an empty file
  if (typeof obj !== 'object' || Array.isArray(obj)) throw new ConfigError(`${source}: a config file must hold a mapping of keys to values`);
  const walk = (o: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(o)) {
      const key = prefix + k;
      const isGroup = Object.keys(CONFIG_KEYS).some((known) => known.startsWith(`${key}.`));
      if (isGroup) {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) {
          throw new ConfigError(`config key "${key}" (from ${source}) must be a mapping with keys ${groupKeys(key)}, got ${JSON.stringify(v)}`, key);
        }
        walk(v as Record<string, unknown>, `${key}.`);
        continue;
      }
      into.set(key, { value: checkValue(key, v, source, false), source });
    }
  };
  walk(obj as Record<string, unknown>, '');
}

function groupKeys(group: string): string {
  return Object.keys(CONFIG_KEYS)
    .filter((k) => k.startsWith(`${group}.`))
    .map((k) => k.slice(group.length + 1))
    .join(', ');
}

/** Parses a JSON (.json) or YAML (anything else) config file into a plain object. */
export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  try {
    return extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file ${path} is not valid ${extname(path).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
}

export interface ResolveOptions {
  /** Config file (JSON or YAML). */
  file?: string;
  /** Already-parsed file contents (instead of `file`), e.g. for tests. */
  values?: unknown;
  /** Overrides keyed by dashed, camelCase or dotted names; strings are converted to the key's type. */
  overrides?: Record<string, Value>;
}

/** Defaults ← file ← overrides, validated. */
export function resolveConfig(o: ResolveOptions = {}): TrainConfig {
  const flat: Flat = new Map();
  if (o.file !== undefined) flattenFile(readConfigFile(o.file), o.file, flat);
  if (o.values !== undefined) flattenFile(o.values, 'config values', flat);
  for (const [given, value] of Object.entries(o.overrides ?? {})) {
    let name = given;
    let raw = value;
    // `--no-flip` (as `no-flip: true`) means flip = false
    if (name.startsWith('no-') && !CONFIG_KEYS[normaliseKey(name)] && CONFIG_KEYS[normaliseKey(name.slice(3))]?.kind === 'boolean') {
      if (raw !== true && raw !== 'true') throw new ConfigError(`--${name} takes no value, got ${JSON.stringify(raw)}`, normaliseKey(name.slice(3)));
      name = name.slice(3);
      raw = false;
    }
    const key = normaliseKey(name);
    const source = `command line (--${name})`;
    if (!CONFIG_KEYS[key] && Object.keys(CONFIG_KEYS).some((k) => k.startsWith(`${key}.`))) {
      const keys = groupKeys(key)
        .split(', ')
        .map((k) => `--${name}.${k}`);
      throw new ConfigError(`${source}: "${key}" is a group; set its keys one by one (${keys.join(', ')})`, key);
    }
    flat.set(key, { value: checkValue(key, raw, source, true), source });
  }
  // margin defaults follow the chosen margin type
  const marginType = (flat.get('margin.type')?.value ?? CONFIG_KEYS['margin.type']!.default) as MarginType;
  const preset = MARGIN_PRESETS[marginType];
  const cfg: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    let value = flat.get(key)?.value;
    if (value === undefined) value = key.startsWith('margin.m') ? preset[key.slice(7) as 'm1' | 'm2' | 'm3'] : spec.default;
    setPath(cfg, key, value);
  }
  const result = cfg as unknown as TrainConfig;
  crossCheck(result, (key) => flat.get(key)?.source ?? 'defaults');
  // loss heads and distillation (loss-checks.ts)
  checkLossAndDistillation(
    result,
    (key, msg) => {
      throw new ConfigError(`config key "${key}" (from ${flat.get(key)?.source ?? 'defaults'}): ${msg}`, key);
    },
    // "set": given (file or command line) with a value other than the default, so a printed config loads back
    (key) => flat.has(key) && flat.get(key)!.value !== CONFIG_KEYS[key]!.default,
  );
  return result;
}

/** Reads and validates a config file, with no overrides. */
export function loadConfig(path: string): TrainConfig {
  return resolveConfig({ file: path });
}

function setPath(obj: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let o = obj;
  for (const p of parts.slice(0, -1)) o = (o[p] ??= {}) as Record<string, unknown>;
  o[parts[parts.length - 1]!] = value;
}

/** Sizes that follow from the data settings. */
export interface TrainFacts {
  /** Classes C = training identities. */
  numClasses: number;
  trainImages: number;
  heldOutImages: number;
  globalBatch: number;
  stepsPerEpoch: number;
  /** Steps the run will take: min(steps, epochs × stepsPerEpoch), or the latter when steps = 0. */
  totalSteps: number;
  /** Warm-up in steps (from warmupSteps or warmupEpochs). */
  warmupSteps: number;
}

export function trainFacts(cfg: TrainConfig): TrainFacts {
  const spec = parseDataSpec(cfg.data);
  const synthetic = spec.kind === 'synthetic';
  // file data: classes and images are read from the data (property file, header record, folders, labels)
  const numClasses = spec.identities;
  const trainImages = synthetic ? numClasses * cfg.imagesPerIdentity : spec.images;
  const globalBatch = cfg.workers * cfg.batch;
  const stepsPerEpoch = Math.floor(trainImages / globalBatch);
  const all = cfg.epochs * stepsPerEpoch;
  return {
    numClasses,
    trainImages,
    heldOutImages: synthetic ? cfg.heldOutIdentities * cfg.imagesPerIdentity : 0,
    globalBatch,
    stepsPerEpoch,
    totalSteps: cfg.steps > 0 ? Math.min(cfg.steps, all) : all,
    warmupSteps: cfg.warmupSteps > 0 ? cfg.warmupSteps : Math.round(cfg.warmupEpochs * stepsPerEpoch),
  };
}

function crossCheck(cfg: TrainConfig, sourceOf: (key: string) => string): void {
  const fail = (key: string, msg: string): never => {
    throw new ConfigError(`config key "${key}" (from ${sourceOf(key)}): ${msg}`, key);
  };
  let synthetic = true;
  try {
    synthetic = parseDataSpec(cfg.data).kind === 'synthetic';
  } catch (e) {
    fail('data', (e as Error).message);
  }
  if (cfg.classifier === 'dcq') {
    const g = cfg.workers * cfg.batch;
    if (cfg.dcq.queueSize % g !== 0)
      fail('dcq.queueSize', `${cfg.dcq.queueSize} is not a multiple of the global batch workers × batch = ${g} (e.g. use ${Math.max(1, Math.round(cfg.dcq.queueSize / g)) * g})`);
  }
  // val sets: syntax and files, checked here so a typo fails before any process starts
  if (cfg.val.trim() !== '' && cfg.val.trim() !== 'none') {
    for (const entry of cfg.val.split(',')) {
      const m = /^\s*([A-Za-z0-9_]+)=(.+?)\s*$/.exec(entry);
      if (!m) fail('val', `entry ${JSON.stringify(entry)} is not NAME=PATH (NAME: letters, digits, _)`);
      for (const path of m![2]!.split('::')) if (!existsSync(path)) fail('val', `${m![1]}: no such file or folder ${JSON.stringify(path)}`);
    }
  }
  const f = trainFacts(cfg);
  if (cfg.workers > f.numClasses) fail('workers', `${cfg.workers} workers but only ${f.numClasses} classes; every worker must own at least one class`);
  if (f.globalBatch > f.trainImages) {
    fail(
      'batch',
      `the global batch workers × batch = ${cfg.workers} × ${cfg.batch} = ${f.globalBatch} exceeds the ${f.trainImages} training images (${synthetic ? `${f.numClasses} identities × ${cfg.imagesPerIdentity}` : `${f.numClasses} identities in ${cfg.data}`}); lower batch or workers`,
    );
  }
  const smallestShard = Math.floor(f.numClasses / cfg.workers);
  if (Math.trunc(cfg.sampleRate * smallestShard) < 1) {
    fail('sampleRate', `${cfg.sampleRate} × ${smallestShard} classes on the smallest shard samples no class at all; raise sampleRate`);
  }
  if (cfg.warmupSteps > 0 && cfg.warmupEpochs > 0) fail('warmupSteps', 'set warmupSteps or warmupEpochs, not both');
  if (f.warmupSteps > f.totalSteps) fail(cfg.warmupSteps > 0 ? 'warmupSteps' : 'warmupEpochs', `warm-up of ${f.warmupSteps} steps is longer than the run (${f.totalSteps} steps)`);
  if (cfg.marginWarmupSteps > 0 && cfg.marginWarmupEpochs > 0) fail('marginWarmupSteps', 'set marginWarmupSteps or marginWarmupEpochs, not both');
  const marginWarmup = marginWarmupSteps({ ...cfg, stepsPerEpoch: f.stepsPerEpoch });
  const marginWarmupKey = cfg.marginWarmupSteps > 0 ? 'marginWarmupSteps' : 'marginWarmupEpochs';
  if (marginWarmup > f.totalSteps) fail(marginWarmupKey, `margin warm-up of ${marginWarmup} steps is longer than the run (${f.totalSteps} steps)`);
  if (marginWarmup > 0 && cfg.loss !== 'margin') fail(marginWarmupKey, `the margin warm-up applies to loss "margin" only (got loss "${cfg.loss}", which sets its own margin)`);
  if (marginWarmup > 0 && cfg.classifier !== 'fc') fail(marginWarmupKey, `the margin warm-up applies to classifier "fc" only (dcq has its own margin, dcq.m)`);
  if (synthetic && cfg.heldOutIdentities > 0) {
    if (cfg.heldOutIdentities < 2) fail('heldOutIdentities', 'verification needs at least 2 held-out identities (or 0 to skip it)');
    if (cfg.imagesPerIdentity < 2) fail('imagesPerIdentity', 'verification needs at least 2 images per identity for same-identity pairs');
    if (cfg.verificationPairs < 10) fail('verificationPairs', `10-fold verification needs at least 10 pairs, got ${cfg.verificationPairs}`);
    const sameAvailable = (cfg.heldOutIdentities * cfg.imagesPerIdentity * (cfg.imagesPerIdentity - 1)) / 2;
    if (Math.ceil(cfg.verificationPairs / 2) > sameAvailable / 2) {
      fail(
        'verificationPairs',
        `${cfg.verificationPairs} pairs need ${Math.ceil(cfg.verificationPairs / 2)} distinct same-identity pairs; ${cfg.heldOutIdentities} held-out identities × ${cfg.imagesPerIdentity} images offer ${sameAvailable} (keep below half of that)`,
      );
    }
  }
  if (cfg.workerTimeoutMs <= cfg.heartbeatMs) fail('workerTimeoutMs', `must exceed heartbeatMs (${cfg.heartbeatMs}), got ${cfg.workerTimeoutMs}`);
  const neutral = { m1: 1, m2: 0, m3: 0 } as const;
  for (const m of ['m1', 'm2', 'm3'] as const) {
    if (!MARGIN_USES[cfg.margin.type].includes(m) && cfg.margin[m] !== neutral[m]) {
      const uses = MARGIN_USES[cfg.margin.type];
      fail(
        `margin.${m}`,
        `margin.type "${cfg.margin.type}" uses ${uses.length ? uses.join(', ') : 'no margin'}, so margin.${m} must stay ${neutral[m]} (got ${cfg.margin[m]}); use margin.type "combined" to combine margins`,
      );
    }
  }
}

/** Legal but probably unintended settings, one line each. */
export function configWarnings(cfg: TrainConfig): string[] {
  const out: string[] = [];
  const f = trainFacts(cfg);
  if (cfg.sampleRate < 1) {
    const numSample = Math.trunc(cfg.sampleRate * Math.floor(f.numClasses / cfg.workers));
    if (numSample < f.globalBatch) {
      out.push(`sampleRate ${cfg.sampleRate} samples ${numSample} classes per shard, fewer than the global batch ${f.globalBatch}: steps whose positives exceed it change the logits shape`);
    }
  }
  const dropped = f.trainImages - f.stepsPerEpoch * f.globalBatch;
  if (dropped > 0.1 * f.trainImages) {
    out.push(`each epoch drops ${dropped} of ${f.trainImages} images (the incomplete last global batch)`);
  }
  if (cfg.optimizer === 'adamw' && cfg.momentum !== 0.9) out.push('momentum is an SGD setting and is not used by adamw');
  if (cfg.maxRestarts > 0 && cfg.checkpointEvery === 0) out.push(`maxRestarts ${cfg.maxRestarts} without checkpointEvery: a restart starts the run over from step 1`);
  if (f.numClasses === 1) {
    out.push(
      `the training set (${cfg.data}) has a single identity: a softmax over one class is always 1, so the loss is 0 from the first step and nothing is learned; face recognition needs at least 2 identities (many more in practice)`,
    );
  } else if (f.trainImages < 2 * f.numClasses) {
    out.push(
      `the training set has ${f.trainImages} images for ${f.numClasses} identities (${(f.trainImages / f.numClasses).toFixed(2)} per identity on average): identities seen once or twice teach the classifier little; check the layout (one sub-folder per identity) or the labels`,
    );
  }
  return out;
}
