/** Small text files that must never be seen half-written (summary.json, config.json). */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';

/** Writes `text` to `path` through a temp file, fsync and rename: a reader sees the old content or the new, never an empty or partial file. Throws a one-line Error naming the file and the cause. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    const bytes = Buffer.from(text, 'utf8');
    for (let p = 0; p < bytes.length;) p += writeSync(fd, bytes, p, bytes.length - p);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw new Error(ioFailure('write', path, e));
  }
}

/** One line for an I/O failure: what was being done to which file, and the cause in plain words (a full disk says so). */
export function ioFailure(verb: 'write' | 'read', path: string, e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const plain: Record<string, string> = {
    ENOSPC: 'no space left on device',
    EDQUOT: 'disk quota exceeded',
    EACCES: 'permission denied',
    EROFS: 'read-only file system',
    ENOENT: 'no such file or directory',
  };
  const why = (err.code && plain[err.code]) ?? err.message ?? String(e);
  return `cannot ${verb} ${path}: ${why}${err.code && plain[err.code] ? ` (${err.code})` : ''}`;
}
