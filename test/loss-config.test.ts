import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, CONFIG_KEYS, resolveConfig } from '../src/config/index.js';
import { startCli } from './helpers/processes.js';

function configError(overrides: Record<string, string | number | boolean>): ConfigError {
  try {
    resolveConfig({ overrides });
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('config: loss heads and distillation', () => {
  it('documents every new key, with the official defaults', () => {
    for (const k of [
      'loss',
      'magface.la',
      'magface.ua',
      'magface.lm',
      'magface.um',
      'magface.lambdaG',
      'magface.easyMargin',
      'curricular.t',
      'curricular.emaWeight',
      'teacher',
      'distill',
      'distillWeight',
      'initFrom',
    ])
      expect(CONFIG_KEYS[k]?.docs.length, k).toBeGreaterThan(20);
    const c = resolveConfig({ overrides: { loss: 'magface' } });
    expect(c.magface).toEqual({ la: 10, ua: 110, lm: 0.45, um: 0.8, lambdaG: 35, easyMargin: true }); // easy_margin: MagFace's official default
    expect(c.curricular).toEqual({ t: 0, emaWeight: 0.01 });
    expect(c).toMatchObject({ loss: 'magface', teacher: 'none', distill: 'angular', distillWeight: 1, initFrom: 'none' });
  });

  it('an infeasible MagFace λ_g (docs/methods.md#magface-regulariser-bound) is an error naming magface.lambdaG and the bound', () => {
    const e = configError({ loss: 'magface', 'magface.lambda-g': 20 });
    expect(e.key).toBe('magface.lambdaG');
    expect(e.message).toMatch(/magface\.lambdaG.*20 is below the MagFace feasibility bound .*22\.5867/);
    // a smaller scale lowers the bound: s = 16 needs only 5.65
    expect(() => resolveConfig({ overrides: { loss: 'magface', 'magface.lambda-g': 20, 'margin.s': 16 } })).not.toThrow();
    expect(configError({ loss: 'magface', 'magface.ua': 5 }).key).toBe('magface.ua');
  });

  it('settings that would be ignored are errors', () => {
    expect(configError({ 'magface.la': 5 }).key).toBe('magface.la'); // loss is margin
    expect(configError({ 'magface.easy-margin': 'false' }).key).toBe('magface.easyMargin');
    expect(configError({ loss: 'curricular', 'magface.la': 5 }).key).toBe('magface.la');
    expect(configError({ loss: 'magface', 'margin.m2': 0.4 }).key).toBe('margin.m2');
    expect(configError({ loss: 'magface', marginGrad: 'exact' }).key).toBe('marginGrad');
    expect(configError({ loss: 'curricular', 'margin.type': 'cosface' }).key).toBe('margin.type');
    expect(configError({ loss: 'curricular', classifier: 'dcq' }).key).toBe('loss');
    expect(configError({ distillWeight: 2 }).key).toBe('distillWeight');
    expect(configError({ distill: 'l2' }).key).toBe('distill');
  });

  it('a teacher or initFrom that is not a checkpoint is an error naming the key', () => {
    const missing = join(mkdtempSync(join(tmpdir(), 'shardface-nockpt-')), 'nothing');
    expect(configError({ teacher: missing }).message).toMatch(/teacher.*does not exist/);
    expect(configError({ initFrom: missing }).message).toMatch(/initFrom.*does not exist/);
  });

  it('shardface train exits 2 with the λ_g message before starting any process', async () => {
    const p = startCli(['train', '--loss', 'magface', '--magface.lambda-g', '20', '--run-dir', join(tmpdir(), 'never')]);
    const { code } = await p.exit;
    expect(code).toBe(2);
    expect(p.lines.join('\n')).toMatch(/magface\.lambdaG.*feasibility bound/);
  });
});
