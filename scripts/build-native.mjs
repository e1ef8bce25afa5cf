// Builds the native CPU kernels (src/ops/native) during `npm ci`.
// A failed build must not fail the install: shardface then runs on the stock
// TensorFlow.js CPU kernels and says so at start-up.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'src', 'ops', 'native');
const statusFile = join(root, 'build', 'native-status.json');
mkdirSync(dirname(statusFile), { recursive: true });

if (process.env.SHARDFACE_SKIP_NATIVE === '1') {
  writeFileSync(statusFile, JSON.stringify({ built: false, reason: 'SHARDFACE_SKIP_NATIVE=1' }));
  console.warn('[shardface] native kernels skipped (SHARDFACE_SKIP_NATIVE=1)');
  process.exit(0);
}
if (!existsSync(join(dir, 'binding.gyp'))) {
  writeFileSync(statusFile, JSON.stringify({ built: false, reason: 'no binding.gyp' }));
  process.exit(0);
}
const r = spawnSync('node-gyp', ['rebuild', '--release'], { cwd: dir, stdio: 'inherit', shell: true });
if (r.status === 0) {
  writeFileSync(statusFile, JSON.stringify({ built: true }));
} else {
  const reason = `node-gyp exited ${r.status ?? r.signal}; is a C++ compiler and libopenblas-dev installed?`;
  writeFileSync(statusFile, JSON.stringify({ built: false, reason }));
  console.warn(`[shardface] WARNING: native CPU kernels not built (${reason}). Training will use the slow stock kernels.`);
}
