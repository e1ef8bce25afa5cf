// Run by the image builds after `npm run prepare`: fails the build when a
// piece the image promises is missing, instead of shipping an image that
// silently falls back to slow kernels. The install scripts involved only warn
// when they fail (the native kernels' build script by design; tfjs-node-gpu's
// logs a failed binding build and exits 0), so check what they left behind.
//   node deploy/docker/check-install.cjs native   the C++ CPU kernels load
//   node deploy/docker/check-install.cjs gpu      and libtensorflow (CUDA) and its binding are there
'use strict';
const { existsSync, readdirSync, readFileSync } = require('node:fs');
const { dirname, join } = require('node:path');

const root = join(__dirname, '..', '..');
const mode = process.argv[2];
const problems = [];

function checkNative() {
  const addon = join(root, 'src', 'ops', 'native', 'build', 'Release', 'shardface_native.node');
  try {
    const info = require(addon).info();
    console.log(`shardface image: native kernels load (BLAS ${info.blasConfig})`);
  } catch (e) {
    const statusFile = join(root, 'build', 'native-status.json');
    const status = existsSync(statusFile) ? JSON.parse(readFileSync(statusFile, 'utf8')) : {};
    problems.push(`native CPU kernels do not load (${e.message})${status.reason ? `; build: ${status.reason}` : ''}`);
  }
}

function checkGpu() {
  let pkg;
  try {
    pkg = dirname(require.resolve('@tensorflow/tfjs-node-gpu/package.json', { paths: [root] }));
  } catch {
    problems.push('@tensorflow/tfjs-node-gpu is not installed');
    return;
  }
  const constants = require(join(pkg, 'scripts', 'deps-constants.js'));
  const addonDir = join(pkg, constants.modulePath);
  if (!existsSync(constants.depsLibTensorFlowPath)) problems.push(`libtensorflow is missing (${constants.depsLibTensorFlowPath}); its download needs network access during the build`);
  if (!existsSync(addonDir) || !readdirSync(addonDir).some((f) => f.endsWith('.node'))) problems.push(`the tfjs-node-gpu binding is missing from ${addonDir}`);
}

if (mode === 'native' || mode === 'gpu') checkNative();
if (mode === 'gpu') checkGpu();
if (mode !== 'native' && mode !== 'gpu') problems.push(`usage: node deploy/docker/check-install.cjs native|gpu (got ${JSON.stringify(mode)})`);
for (const p of problems) console.error(`shardface image: ${p}`);
process.exitCode = problems.length > 0 ? 1 : 0;
