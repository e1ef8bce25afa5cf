// Rewrites the configuration table in README.md from src/config/schema.ts (via dist/).
import { readFileSync, writeFileSync } from 'node:fs';
import { configReference } from '../dist/src/config/format.js';

const path = new URL('../README.md', import.meta.url);
const readme = readFileSync(path, 'utf8');
const start = '<!-- config-reference:start -->';
const end = '<!-- config-reference:end -->';
const i = readme.indexOf(start);
const j = readme.indexOf(end);
if (i < 0 || j < i) throw new Error('README.md lacks the config-reference markers');
writeFileSync(path, readme.slice(0, i + start.length) + '\n' + configReference() + '\n' + readme.slice(j));
console.log('README.md configuration table updated');
