import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, ConfigError, configHelp, configReference, configWarnings, formatConfig, loadConfig, parseConfigArgv, resolveConfig, trainFacts } from '../src/config/index.js';

const dir = mkdtempSync(join(tmpdir(), 'sf-config-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const errorOf = (f: () => unknown): ConfigError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
};

describe('defaults', () => {
  it('follow arcface_torch (docs/methods.md#training-defaults) and the brief', () => {
    const c = resolveConfig();
    expect(c).toMatchObject({
      workers: 2,
      backbone: 'tiny',
      embeddingSize: 512,
      imageSize: 112,
      data: 'synthetic:500',
      lr: 0.1,
      momentum: 0.9,
      weightDecay: 5e-4,
      optimizer: 'sgd',
      clipGradNorm: 5,
      sampleRate: 1,
      bucketMb: 16,
      heartbeatMs: 2000,
      workerTimeoutMs: 30000,
      marginGrad: 'straight-through',
    });
    expect(c.margin).toEqual({ type: 'arcface', s: 64, m1: 1, m2: 0.5, m3: 0 });
  });

  it('document every key', () => {
    for (const [key, spec] of Object.entries(CONFIG_KEYS)) expect(spec.docs.length, key).toBeGreaterThan(10);
    const ref = configReference();
    for (const key of Object.keys(CONFIG_KEYS)) expect(ref).toContain(`\`${key}\``);
    expect(ref).toContain('`--sample-rate`');
    const help = configHelp();
    for (const key of Object.keys(CONFIG_KEYS)) expect(help).toContain(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} `);
  });
});

describe('files and overrides', () => {
  it('loads JSON and YAML, nested margin, then applies overrides by dashed, camel or dotted name', () => {
    const json = file('a.json', JSON.stringify({ workers: 3, margin: { type: 'cosface' }, data: 'synthetic:30' }));
    const yaml = file('a.yaml', 'workers: 3\nmargin:\n  type: cosface\ndata: synthetic:30\n');
    expect(loadConfig(yaml)).toEqual(loadConfig(json));
    const c = resolveConfig({ file: yaml, overrides: { 'sample-rate': '0.5', 'margin.m3': '0.35', lr: 0.05, 'log-format': 'pretty', flip: 'false' } });
    expect(c.sampleRate).toBe(0.5);
    expect(c.margin).toEqual({ type: 'cosface', s: 64, m1: 1, m2: 0, m3: 0.35 });
    expect(c.lr).toBe(0.05);
    expect(c.logFormat).toBe('pretty');
    expect(c.flip).toBe(false);
    expect(c.workers).toBe(3);
    // `--no-flip` as a parser without boolean knowledge passes it: { 'no-flip': 'true' }
    expect(resolveConfig({ overrides: { 'no-flip': 'true' } }).flip).toBe(false);
    expect(resolveConfig({ overrides: { flip: 'true' } }).flip).toBe(true);
    expect(() => resolveConfig({ overrides: { 'no-flip': 'false' } })).toThrow(/takes no value/);
  });

  it('loads configs/demo.json, which fits its data', () => {
    const c = loadConfig('configs/demo.json');
    const f = trainFacts(c);
    expect(c.workers).toBe(2);
    expect(c.backbone).toBe('tiny');
    expect(f.globalBatch).toBeLessThanOrEqual(f.trainImages);
    expect(f.totalSteps).toBeGreaterThan(100);
  });

  it('margin m-values default per margin.type', () => {
    expect(resolveConfig({ overrides: { 'margin.type': 'combined' } }).margin).toEqual({ type: 'combined', s: 64, m1: 1, m2: 0.3, m3: 0.2 });
    expect(resolveConfig({ overrides: { 'margin.type': 'softmax' } }).margin).toMatchObject({ m1: 1, m2: 0, m3: 0 });
  });
});

describe('validation names the key and the expected type', () => {
  it('unknown keys, with a suggestion', () => {
    let e = errorOf(() => resolveConfig({ overrides: { 'sample-rat': '0.1' } }));
    expect(e.key).toBe('sampleRat');
    expect(e.message).toMatch(/unknown config key "sampleRat".*did you mean "sampleRate"/);
    e = errorOf(() => resolveConfig({ file: file('u.yaml', 'workres: 2\n') }));
    expect(e.message).toMatch(/unknown config key "workres" in .*u\.yaml.*did you mean "workers"/);
    e = errorOf(() => resolveConfig({ values: { margin: { m4: 1 } } }));
    expect(e.key).toBe('margin.m4');
  });

  it('wrong types', () => {
    let e = errorOf(() => resolveConfig({ values: { lr: '0.1' } }));
    expect(e.key).toBe('lr');
    expect(e.message).toMatch(/"lr" \(from config values\) must be a number in \(0, 100\], got "0\.1"/);
    e = errorOf(() => resolveConfig({ overrides: { workers: 'two' } }));
    expect(e.message).toMatch(/"workers" \(from command line \(--workers\)\) must be an integer in \[1, 1024\]/);
    e = errorOf(() => resolveConfig({ overrides: { batch: '1.5' } }));
    expect(e.key).toBe('batch');
    e = errorOf(() => resolveConfig({ overrides: { optimizer: 'adam' } }));
    expect(e.message).toMatch(/one of "sgd", "adamw"/);
    e = errorOf(() => resolveConfig({ values: { flip: 'yes' } }));
    expect(e.message).toMatch(/true or false/);
    e = errorOf(() => resolveConfig({ values: { margin: 0.5 } }));
    expect(e.message).toMatch(/"margin".*mapping with keys type, s, m1, m2, m3/);
    e = errorOf(() => resolveConfig({ overrides: { margin: 'arcface' } }));
    expect(e.message).toMatch(/group/);
  });

  it('out-of-range values', () => {
    for (const [k, v, re] of [
      ['sampleRate', '0', /\(0, 1\]/],
      ['sampleRate', '1.5', /\(0, 1\]/],
      ['workers', '0', /\[1, 1024\]/],
      ['batch', '0', /batch/],
      ['momentum', '1', /\[0, 1\)/],
      ['seed', '-1', /seed/],
    ] as const) {
      const e = errorOf(() => resolveConfig({ overrides: { [k]: v } }));
      expect(e.key).toBe(k);
      expect(e.message).toMatch(re);
    }
  });

  it('cross-field checks', () => {
    let e = errorOf(() => resolveConfig({ overrides: { data: 'synthetic:10', imagesPerIdentity: 5, batch: 32, workers: 2 } }));
    expect(e.key).toBe('batch');
    expect(e.message).toMatch(/global batch workers × batch = 2 × 32 = 64 exceeds the 50 training images/);
    e = errorOf(() => resolveConfig({ overrides: { data: 'synthetic:3', workers: 4, batch: 1 } }));
    expect(e.key).toBe('workers');
    e = errorOf(() => resolveConfig({ overrides: { data: 'folder:/x' } }));
    expect(e.key).toBe('data');
    e = errorOf(() => resolveConfig({ overrides: { data: 'synthetic:100', sampleRate: '0.01' } }));
    expect(e.key).toBe('sampleRate');
    e = errorOf(() => resolveConfig({ overrides: { warmupSteps: 10, warmupEpochs: 1 } }));
    expect(e.key).toBe('warmupSteps');
    e = errorOf(() => resolveConfig({ overrides: { heartbeatMs: 5000, workerTimeoutMs: 4000 } }));
    expect(e.key).toBe('workerTimeoutMs');
    e = errorOf(() => resolveConfig({ overrides: { 'margin.m3': 0.2 } }));
    expect(e.key).toBe('margin.m3');
    expect(e.message).toMatch(/arcface" uses m2.*combined/);
    e = errorOf(() => resolveConfig({ overrides: { heldOutIdentities: 5, imagesPerIdentity: 4, verificationPairs: 100 } }));
    expect(e.key).toBe('verificationPairs');
    e = errorOf(() => resolveConfig({ overrides: { heldOutIdentities: 5, verificationPairs: 4 } }));
    expect(e.key).toBe('verificationPairs');
    // heldOutIdentities 0 switches verification off
    expect(resolveConfig({ overrides: { heldOutIdentities: 0, verificationPairs: 0 } }).heldOutIdentities).toBe(0);
  });

  it('warns about legal but costly settings', () => {
    const w = configWarnings(resolveConfig({ overrides: { data: 'synthetic:1000', sampleRate: 0.1, batch: 128 } }));
    expect(w.join('\n')).toMatch(/fewer than the global batch 256/);
  });

  it('warns when the training set has a single identity, or fewer than 2 images per identity on average', () => {
    const one = configWarnings(resolveConfig({ overrides: { data: 'synthetic:1', workers: 1, batch: 2, imagesPerIdentity: 4, heldOutIdentities: 0 } }));
    expect(one.join('\n')).toMatch(/single identity: a softmax over one class is always 1, so the loss is 0/);
    const sparse = configWarnings(resolveConfig({ overrides: { data: 'synthetic:64', workers: 1, batch: 8, imagesPerIdentity: 1, heldOutIdentities: 0 } }));
    expect(sparse.join('\n')).toMatch(/64 images for 64 identities \(1\.00 per identity on average\)/);
    const fine = configWarnings(resolveConfig({ overrides: { data: 'synthetic:64', workers: 2, batch: 8, imagesPerIdentity: 2, heldOutIdentities: 0 } }));
    expect(fine.join('\n')).not.toMatch(/identity/);
  });
});

describe('printing and the command line', () => {
  it('formatConfig prints YAML (with docs) that loads back to the same config', () => {
    const c = resolveConfig({ overrides: { 'margin.type': 'cosface', workers: 4, runDir: 'runs/x y' } });
    const text = formatConfig(c);
    expect(text).toContain('# Number of worker processes');
    expect(text).toMatch(/margin:\n {2}# .*\n {2}type: "cosface"/);
    expect(resolveConfig({ file: file('p.yaml', text) })).toEqual(c);
    expect(parseYaml(formatConfig(c, { docs: false }))).toMatchObject({ workers: 4, margin: { m3: 0.4 } });
  });

  it('parseConfigArgv reads --config, --print-config, overrides and boolean flags', () => {
    const a = parseConfigArgv(['--config', 'configs/demo.json', '--print-config', '--sample-rate', '0.5', '--margin.m2=0.4', '--no-flip', '--workers=3']);
    expect(a.file).toBe('configs/demo.json');
    expect(a.printConfig).toBe(true);
    expect(a.overrides).toEqual({ 'sample-rate': '0.5', 'margin.m2': '0.4', flip: false, workers: '3' });
    const c = resolveConfig({ file: a.file, overrides: a.overrides });
    expect([c.sampleRate, c.margin.m2, c.flip, c.workers]).toEqual([0.5, 0.4, false, 3]);
    expect(parseConfigArgv(['--flip']).overrides).toEqual({ flip: true });
    expect(parseConfigArgv(['--flip', 'false', '--lr', '0.2']).overrides).toEqual({ flip: 'false', lr: '0.2' });
    expect(parseConfigArgv(['--coordinator', 'tcp://x:1', '--verbose'], { passThrough: { coordinator: 'value', verbose: 'flag' } }).other).toEqual({
      coordinator: 'tcp://x:1',
      verbose: true,
    });
    expect(() => parseConfigArgv(['--bach', '3'])).toThrow(/unknown config key "bach".*did you mean "batch"/);
    expect(() => parseConfigArgv(['--lr'])).toThrow(/needs a value/);
    expect(() => parseConfigArgv(['stray'])).toThrow(/unexpected argument/);
  });

  it('reports unreadable or malformed files', () => {
    expect(() => loadConfig(join(dir, 'missing.yaml'))).toThrow(/cannot read config file/);
    expect(() => loadConfig(file('bad.json', '{ workers: 2'))).toThrow(/not valid JSON/);
    expect(() => loadConfig(file('list.yaml', '- 1\n- 2\n'))).toThrow(/mapping/);
    expect(loadConfig(file('empty.yaml', ''))).toEqual(resolveConfig());
  });
});

describe('ConfigError', () => {
  it('is an Error with the message first and an optional key', () => {
    const e = new ConfigError('batch too large', 'batch');
    expect(e).toBeInstanceOf(Error);
    expect([e.message, e.key, e.name]).toEqual(['batch too large', 'batch', 'ConfigError']);
    expect(new ConfigError('whole file').key).toBeNull();
  });
});
