/**
 * Every pointer into docs/ — from source comments, tests, scripts, the README and
 * the docs themselves — names a page that exists and a heading anchor on it
 * (GitHub's slug rule), so renaming a heading cannot silently break a reference.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

/** GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped, spaces to '-'. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/ /g, '-');
}

function anchorsOf(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fence = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fence = !fence;
    if (fence) continue;
    const m = /^#{1,6}\s+(.*)$/.exec(line);
    if (!m) continue;
    const a = slug(m[1]!);
    const k = seen.get(a) ?? 0;
    out.add(k ? `${a}-${k}` : a);
    seen.set(a, k + 1);
  }
  return out;
}

function files(dir: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (['node_modules', 'build', 'dist', '.git'].includes(name)) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) files(p, out);
    else if (/\.(ts|cc|h|mjs|js|sh|sbatch|ya?ml|md)$|Dockerfile/.test(name)) out.push(p);
  }
  return out;
}

const docsDir = join(root, 'docs');
const pages = new Map(
  readdirSync(docsDir)
    .filter((f) => f.endsWith('.md'))
    .map((f) => [normalize(join(docsDir, f)), anchorsOf(readFileSync(join(docsDir, f), 'utf8'))]),
);

/** Problems with one pointer `target` written in file `from` (a path relative to it, optionally #anchor), or null. */
function check(from: string, target: string): string | null {
  const [path, anchor] = target.split('#') as [string, string | undefined];
  const file = normalize(path ? join(dirname(from), path) : from);
  if (!existsSync(file)) return `no such file ${relative(root, file)}`;
  if (anchor === undefined || !file.endsWith('.md')) return null;
  const anchors = pages.get(file) ?? anchorsOf(readFileSync(file, 'utf8'));
  return anchors.has(anchor) ? null : `no heading #${anchor} in ${relative(root, file)}`;
}

describe('docs/', () => {
  it('the slug rule matches GitHub on the kinds of headings the docs use', () => {
    expect(slug('ROC and TAR at FAR')).toBe('roc-and-tar-at-far');
    expect(slug('Occlusion-robust adversarial masking')).toBe('occlusion-robust-adversarial-masking');
    expect(slug('MagFace regulariser bound')).toBe('magface-regulariser-bound');
    expect(slug('Departures from the references')).toBe('departures-from-the-references');
  });

  it('has the three pages and an index', () => {
    for (const p of ['README.md', 'architecture.md', 'methods.md', 'protocol.md']) expect(pages.has(normalize(join(docsDir, p))), p).toBe(true);
  });

  it('every markdown link between the docs and the README resolves, anchor included', () => {
    const problems: string[] = [];
    for (const md of [...pages.keys(), join(root, 'README.md')]) {
      const text = readFileSync(md, 'utf8');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const link = m[1]!;
        if (/^[a-z]+:/.test(link)) continue;
        const err = check(md, link);
        if (err) problems.push(`${relative(root, md)}: (${link}) ${err}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('every docs/PAGE.md#anchor cited in the source tree exists', () => {
    const problems: string[] = [];
    for (const f of ['src', 'bench', 'test', 'scripts', 'deploy'].flatMap((d) => files(join(root, d)))) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(/\bdocs\/([a-z-]+\.md)(#[a-z0-9_-]+)?/g)) {
        if (f.endsWith('docs-links.test.ts')) continue;
        const err = check(join(root, 'x'), `docs/${m[1]}${m[2] ?? ''}`);
        if (err) problems.push(`${relative(root, f)}: docs/${m[1]}${m[2] ?? ''}: ${err}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('a pointer to a missing anchor is reported (the check can fail)', () => {
    expect(check(join(root, 'x'), 'docs/methods.md#no-such-heading')).toMatch(/no heading #no-such-heading/);
    expect(check(join(root, 'x'), 'docs/nothing.md')).toMatch(/no such file/);
    expect(check(join(root, 'x'), 'docs/methods.md#magface')).toBeNull();
  });
});
