/** Reading the files under deploy/: which are shell scripts, Dockerfile instructions, .dockerignore. */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, relative } from 'node:path';

/** Every file below `dir`, as paths relative to `root` (forward slashes). */
export function filesUnder(root: string, dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(root, p).split('\\').join('/'));
    }
  };
  walk(join(root, dir));
  return out;
}

/** A shell script by its name or its #! line. */
export function isShellScript(path: string, text: string): boolean {
  return /\.(sh|bash|sbatch)$/.test(path) || /^#!\s*\S*\/(env\s+)?(ba|da|k)?sh\b/.test(text);
}

export interface Instruction {
  line: number;
  /** Upper-cased keyword: FROM, RUN, COPY, … */
  keyword: string;
  /** The rest of the instruction, continuation lines joined. */
  args: string;
}

/** Dockerfile instructions: comments and blank lines dropped, `\` continuations joined. */
export function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending: { line: number; text: string } | null = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (pending === null && (line === '' || line.startsWith('#'))) return;
    if (pending !== null && line.startsWith('#')) return; // comments inside a continued instruction
    const part = line.endsWith('\\') ? line.slice(0, -1) : line;
    pending = pending === null ? { line: i + 1, text: part } : { line: pending.line, text: `${pending.text} ${part}` };
    if (!line.endsWith('\\')) {
      const m = /^(\S+)\s*(.*)$/.exec(pending.text.trim())!;
      out.push({ line: pending.line, keyword: m[1]!.toUpperCase(), args: m[2]! });
      pending = null;
    }
  });
  return out;
}

export interface Stage {
  /** The image or earlier stage it starts from. */
  from: string;
  name: string | null;
  instructions: Instruction[];
}

export function dockerStages(instructions: Instruction[]): Stage[] {
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`line ${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ from: m[1]!, name: m[2] ?? null, instructions: [] });
    } else if (stages.length > 0) stages[stages.length - 1]!.instructions.push(ins);
  }
  return stages;
}

export interface Copy {
  line: number;
  from: string | null;
  sources: string[];
  dest: string;
}

/** COPY/ADD instructions of a stage, shell or JSON form. */
export function copies(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
    .map((i) => {
      let rest = i.args;
      let from: string | null = null;
      for (let m = /^--([a-z-]+)=(\S+)\s+/.exec(rest); m; m = /^--([a-z-]+)=(\S+)\s+/.exec(rest)) {
        if (m[1] === 'from') from = m[2]!;
        rest = rest.slice(m[0].length);
      }
      const words = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/);
      return { line: i.line, from, sources: words.slice(0, -1), dest: words[words.length - 1]! };
    });
}

/** The JSON (exec) form of ENTRYPOINT or CMD in a stage; null when absent. */
export function execForm(stage: Stage, keyword: 'ENTRYPOINT' | 'CMD'): string[] | null {
  const ins = stage.instructions.filter((i) => i.keyword === keyword).pop();
  if (!ins) return null;
  if (!ins.args.startsWith('[')) throw new Error(`line ${ins.line}: ${keyword} must use the exec (JSON) form, so that signals reach the process`);
  return JSON.parse(ins.args) as string[];
}

/** Where a COPY puts `source` inside the image, given the stage's WORKDIR. */
export function copyTarget(c: Copy, source: string, workdir: string): string {
  const dest = posix.isAbsolute(c.dest) ? c.dest : posix.join(workdir, c.dest);
  return c.dest.endsWith('/') || c.sources.length > 1 ? posix.join(dest, posix.basename(source)) : dest;
}

/**
 * .dockerignore patterns (the plain form this repository uses: paths and
 * `*` globs, no `!` exceptions); `ignored` tells whether a path is left out of
 * the build context.
 */
export function dockerIgnore(text: string): { patterns: string[]; ignored(path: string): boolean } {
  const patterns = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const p of patterns) if (p.startsWith('!')) throw new Error(`.dockerignore: exceptions (${p}) are not handled here`);
  const res = patterns.map(
    (p) =>
      new RegExp(
        `^${p
          .replace(/^\/+|\/+$/g, '')
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*/g, '[^/]*')}(/.*)?$`,
      ),
  );
  return { patterns, ignored: (path) => res.some((r) => r.test(path.replace(/^\.\/+/, '').replace(/\/+$/, ''))) };
}

export function readText(root: string, path: string): string {
  return readFileSync(join(root, path), 'utf8');
}
