/** `shardface model-info`: the table, the JSON line, help and usage errors. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { run } from '../src/cli/commands/model-info.js';
import { UsageError } from '../src/cli/args.js';

function capture(): { lines: string[]; restore: () => void } {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => {
    lines.push(a.map(String).join(' '));
  });
  return { lines, restore: () => spy.mockRestore() };
}

describe('shardface model-info', () => {
  afterEach(() => vi.restoreAllMocks());

  it('--json prints one line with params and MACs', async () => {
    const out = capture();
    expect(await run(['--backbone', 'iresnet100', '--json'])).toBe(0);
    out.restore();
    expect(out.lines.length).toBe(1);
    const info = JSON.parse(out.lines[0]!);
    expect(info).toMatchObject({ name: 'iresnet100', inputSize: 112, embeddingSize: 512 });
    expect(Math.abs(info.params / 65.2e6 - 1)).toBeLessThan(0.02);
    expect(Math.abs(info.macs / 12.09e9 - 1)).toBeLessThan(0.02);
    expect(info.layers).toBeUndefined();
  });

  it('prints a readable table by default, per layer with --layers', async () => {
    const out = capture();
    expect(await run(['--backbone', 'vargfacenet'])).toBe(0);
    expect(await run(['--backbone', 'tiny', '--image-size', '48', '--layers'])).toBe(0);
    out.restore();
    const text = out.lines.join('\n');
    expect(text).toMatch(/params\s+5\.20M/);
    expect(text).toMatch(/MACs \/ image\s+512\.59M/);
    expect(text).toMatch(/input\s+48×48×3/);
    expect(text).toMatch(/stage4\.down\.conv\s+conv2d\s+\[3,3,128\]/);
  });

  it('--no-se switches vargfacenet SE off', async () => {
    const out = capture();
    expect(await run(['--backbone', 'vargfacenet', '--no-se', '--json'])).toBe(0);
    out.restore();
    expect(Math.abs(JSON.parse(out.lines[0]!).params / 4.96e6 - 1)).toBeLessThan(0.005);
  });

  it('--help prints usage', async () => {
    const out = capture();
    expect(await run(['--help'])).toBe(0);
    out.restore();
    expect(out.lines.join('\n')).toMatch(/usage: shardface model-info/);
  });

  it('bad arguments are usage errors', async () => {
    await expect(run([])).rejects.toBeInstanceOf(UsageError);
    await expect(run(['--backbone', 'resnet9000'])).rejects.toThrow(/unknown backbone/);
    await expect(run(['--backbone', 'mobilefacenet', '--image-size', '64'])).rejects.toThrow(/input size 64/);
    await expect(run(['--backbone', 'iresnet50', '--no-se'])).rejects.toThrow(/vargfacenet only/);
  });
});
