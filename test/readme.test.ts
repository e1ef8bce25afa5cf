import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { configReference } from '../src/config/format.js';

describe('README', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  it('documents every configuration key exactly as the schema defines it (npm run docs:config)', () => {
    expect(readme).toContain(configReference());
  });
  it('names the two commands of a fresh machine', () => {
    expect(readme).toContain('npm ci && npm run demo');
    expect(readme).toContain('npm test');
  });
});
