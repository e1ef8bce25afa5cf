/**
 * The tensorflow backend refuses a CUDA build of libtensorflow that sees no
 * GPU (src/ops/tensorflow-device.ts). The judgement is tested case by case;
 * the wiring through initBackend and a real training job is tested with a
 * stand-in for @tensorflow/tfjs-node-gpu (which cannot be installed on these
 * CPU machines) found through NODE_PATH: a package of that name that registers
 * a `tensorflow` backend reporting, as tfjs-node's backend does, that it is the
 * GPU package and that TensorFlow listed no GPU device.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { judgeTensorflowDevice, type TensorflowDeviceObservation } from '../src/ops/tensorflow-device.js';
import { startCli } from './helpers/processes.js';
import { TINY_TRAIN_ARGS } from './helpers/train-args.js';

const GPU_PKG = '@tensorflow/tfjs-node-gpu';
const seen = (o: Partial<TensorflowDeviceObservation>): TensorflowDeviceObservation => ({
  pkg: GPU_PKG,
  gpuPackage: true,
  usingGpu: false,
  cudaVisibleDevices: '0',
  driver: { gpus: 8 },
  ...o,
});
const message = (o: Partial<TensorflowDeviceObservation>) => {
  const v = judgeTensorflowDevice(seen(o));
  return v.ok ? `ok: ${v.reason}` : v.message;
};

describe('judgeTensorflowDevice', () => {
  it('accepts the GPU package when TensorFlow lists a GPU, and the CPU package as what it is', () => {
    expect(judgeTensorflowDevice(seen({ usingGpu: true }))).toEqual({ ok: true, gpu: true, reason: `${GPU_PKG} loaded, TensorFlow sees a GPU` });
    expect(judgeTensorflowDevice(seen({ pkg: '@tensorflow/tfjs-node', gpuPackage: false }))).toEqual({ ok: true, gpu: false, reason: "@tensorflow/tfjs-node loaded (libtensorflow's CPU build)" });
  });

  it('refuses the GPU package without a GPU and says why', () => {
    const tail = '; use --backend cpu-native to train on the CPU';
    expect(message({ cudaVisibleDevices: '' })).toBe(`${GPU_PKG} loaded but TensorFlow sees no GPU: CUDA_VISIBLE_DEVICES="" hides every GPU from this process${tail}`);
    expect(message({ cudaVisibleDevices: '-1' })).toMatch(/CUDA_VISIBLE_DEVICES="-1" hides every GPU/);
    expect(message({ cudaVisibleDevices: undefined, driver: { error: 'nvidia-smi: spawnSync nvidia-smi ENOENT' } })).toBe(
      `${GPU_PKG} loaded but TensorFlow sees no GPU: no NVIDIA driver answers (nvidia-smi: spawnSync nvidia-smi ENOENT); CUDA_VISIBLE_DEVICES unset${tail}`,
    );
    expect(message({ driver: { gpus: 0 } })).toMatch(/: nvidia-smi lists no GPU; CUDA_VISIBLE_DEVICES="0"/);
    expect(message({ cudaVisibleDevices: '4,5', driver: { gpus: 2 } })).toMatch(/CUDA_VISIBLE_DEVICES="4,5" names no GPU the driver lists \(2 GPUs, indices 0\.\.1\)/);
    // the driver sees GPUs, the pin is fine: libtensorflow's CUDA libraries are what is missing
    expect(message({ cudaVisibleDevices: '1,5', driver: { gpus: 8 } })).toBe(
      `${GPU_PKG} loaded but TensorFlow sees no GPU: the driver lists 8 GPUs (CUDA_VISIBLE_DEVICES="1,5"), so libtensorflow could not load its CUDA libraries ` +
        `(CUDA 11.2 and cuDNN 8.1 on the library path; run with TF_CPP_MIN_LOG_LEVEL=0 to see which one is missing)${tail}`,
    );
    expect(message({ cudaVisibleDevices: 'GPU-aaaa', driver: { gpus: 1 } })).toMatch(/the driver lists 1 GPU \(/);
    expect(message({ usingGpu: null })).toMatch(/does not say whether it sees a GPU \(its backend has no isUsingGpuDevice\)/);
  });
});

/** A folder for NODE_PATH holding a stand-in @tensorflow/tfjs-node-gpu whose backend reports `usingGpu`. */
function fakeGpuPackage(usingGpu: boolean): string {
  const root = mkdtempSync(join(tmpdir(), 'shardface-fake-tfjs-node-gpu-'));
  const pkg = join(root, '@tensorflow', 'tfjs-node-gpu');
  mkdirSync(pkg, { recursive: true });
  const req = createRequire(join(resolve('.'), 'package.json'));
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: GPU_PKG, version: '0.0.0-test', main: 'index.js' }));
  writeFileSync(
    join(pkg, 'index.js'),
    [
      // the same tfjs-core instance shardface uses, as the real package shares it
      `const tf = require(${JSON.stringify(req.resolve('@tensorflow/tfjs'))});`,
      `const { MathBackendCPU } = require(${JSON.stringify(req.resolve('@tensorflow/tfjs-backend-cpu'))});`,
      // what tfjs-node's NodeJSKernelBackend records after listing TensorFlow's devices
      `tf.registerBackend('tensorflow', () => Object.assign(new MathBackendCPU(), { isGPUPackage: true, isUsingGpuDevice: ${usingGpu} }), 3);`,
      `tf.setBackend('tensorflow');`,
    ].join('\n'),
  );
  return root;
}

describe('the tensorflow backend on a machine where TensorFlow sees no GPU', () => {
  it('initBackend: tensorflow is an error, auto passes over it to the CPU kernels with a warning', () => {
    const nodePath = fakeGpuPackage(false);
    const probe = (choice: string) =>
      spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import('./dist/src/ops/backend.js').then((m) => m.initBackend(${JSON.stringify(choice)})).then((i) => console.log(JSON.stringify(i)), (e) => { console.log('ERR ' + e.message); })`,
        ],
        { encoding: 'utf8', env: { ...process.env, NODE_PATH: nodePath, CUDA_VISIBLE_DEVICES: '0' } },
      );
    const strict = probe('tensorflow');
    expect(strict.stdout.trim()).toMatch(/^ERR --backend tensorflow: @tensorflow\/tfjs-node-gpu loaded but TensorFlow sees no GPU: .*; use --backend cpu-native to train on the CPU$/);
    const auto = JSON.parse(probe('auto').stdout.trim()) as { backend: string; warning?: string };
    expect(auto.backend).not.toBe('tensorflow');
    expect(auto.warning).toMatch(/^@tensorflow\/tfjs-node-gpu loaded but TensorFlow sees no GPU/);
    // the same stand-in reporting a GPU is taken
    const withGpu = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import('./dist/src/ops/backend.js').then((m) => m.initBackend('tensorflow')).then((i) => console.log(JSON.stringify(i)))`],
      {
        encoding: 'utf8',
        env: { ...process.env, NODE_PATH: fakeGpuPackage(true), CUDA_VISIBLE_DEVICES: '0' },
      },
    );
    expect(JSON.parse(withGpu.stdout.trim())).toMatchObject({ backend: 'tensorflow', device: '0', reason: `${GPU_PKG} loaded, TensorFlow sees a GPU` });
  });

  it('train --backend tensorflow stops with that error (exit 1), and without the package names what is missing', async () => {
    const runs = [
      { env: { NODE_PATH: fakeGpuPackage(false) }, error: /--backend tensorflow: @tensorflow\/tfjs-node-gpu loaded but TensorFlow sees no GPU: / },
      { env: {}, error: /--backend tensorflow requested but @tensorflow\/tfjs-node-gpu not usable \(Cannot find module '@tensorflow\/tfjs-node-gpu'\)/ },
    ];
    for (const r of runs) {
      const runDir = mkdtempSync(join(tmpdir(), 'shardface-tf-nogpu-'));
      const p = startCli(['train', ...TINY_TRAIN_ARGS, '--workers', '1', '--steps', '2', '--backend', 'tensorflow', '--run-dir', runDir], r.env);
      const { code } = await p.exit;
      expect(code, p.lines.join('\n')).toBe(1);
      const failed = p.json().find((j) => j.msg === 'training failed');
      expect(String(failed?.error)).toMatch(r.error);
    }
  });
});
