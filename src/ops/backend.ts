/**
 * Choosing the compute backend. The only module that names backends; the rest
 * of shardface calls tfjs ops and never asks which backend runs them.
 *
 *  - `tensorflow`: @tensorflow/tfjs-node-gpu (CUDA libtensorflow), falling back
 *    to @tensorflow/tfjs-node (CPU libtensorflow) when only that is installed.
 *    The CUDA build must see a GPU, or the choice is an error (auto passes over
 *    it): tensorflow-device.ts.
 *  - `cpu-native`: TensorFlow.js's CPU backend with shardface's native kernels
 *    (src/ops/native) registered over the stock ones.
 *  - `cpu`: the stock pure-JavaScript CPU backend.
 *  - `auto`: tensorflow if installed (the CUDA build only with a GPU), else
 *    cpu-native if the addon loaded, else cpu.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tf } from './tf.js';
import { judgeTensorflowDevice, type TensorflowDeviceObservation } from './tensorflow-device.js';
import { ROW_WRITE_KERNEL, cpuWriteRows, tensorflowWriteRows } from './row-write.js';
import { FUSED_BN_GRAD_KERNEL, FUSED_BN_KERNEL, fusedBatchNormGradient, tensorflowFusedBatchNorm, tensorflowFusedBatchNormGrad } from './fused-batch-norm.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'cpu-native', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendInfo {
  /** What was asked for. */
  requested: BackendChoice;
  /** What runs: tfjs backend name plus kernel flavour. */
  backend: 'tensorflow' | 'cpu-native' | 'cpu';
  /** CUDA_VISIBLE_DEVICES seen by this process, or 'cpu'. */
  device: string;
  /** Threads used by native kernels (cpu-native only). */
  threads: number | null;
  /** Why this backend: one line for the start-up log. */
  reason: string;
  /** Something the user should fix although a backend was found (auto passed over a GPU build that sees no GPU). */
  warning?: string;
}

const require = createRequire(import.meta.url);

function tryRequire(name: string): { ok: true } | { ok: false; reason: string } {
  try {
    require(name);
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: `${name} not usable (${firstLine((e as Error).message)})` };
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** Native kernel registration is loaded lazily so a missing addon never breaks imports. */
async function tryNative(threads: number | undefined): Promise<{ ok: true; threads: number } | { ok: false; reason: string }> {
  try {
    // A variable specifier keeps tsc from requiring the module at compile time.
    const specifier = './native/register.js';
    const native = (await import(specifier)) as NativeRegistration;
    return native.registerNativeKernels({ threads });
  } catch (e) {
    return { ok: false, reason: `native kernels unavailable (${firstLine((e as Error).message)})` };
  }
}

/** What src/ops/native/register.ts exports. */
export interface NativeRegistration {
  registerNativeKernels(opts: { threads?: number }): { ok: true; threads: number } | { ok: false; reason: string };
}

let current: BackendInfo | null = null;

/**
 * shardface's kernels written over what each backend offers (row-write.ts, fused-batch-norm.ts),
 * registered for the backends they serve; cpu-native has native kernels of its own (src/ops/native).
 */
function registerPortableKernels(): void {
  const mine: [string, string, tf.KernelFunc][] = [
    [ROW_WRITE_KERNEL, 'tensorflow', tensorflowWriteRows],
    [ROW_WRITE_KERNEL, 'cpu', cpuWriteRows],
    [FUSED_BN_KERNEL, 'tensorflow', tensorflowFusedBatchNorm],
    [FUSED_BN_GRAD_KERNEL, 'tensorflow', tensorflowFusedBatchNormGrad],
  ];
  for (const [kernelName, backendName, kernelFunc] of mine) if (!tf.getKernel(kernelName, backendName)) tf.registerKernel({ kernelName, backendName, kernelFunc });
  tf.registerGradient(fusedBatchNormGradient);
}

/**
 * Initialises the backend once per process. Must run after CUDA_VISIBLE_DEVICES
 * is set (see worker/device.ts), because libtensorflow reads it on load.
 */
export async function initBackend(requested: BackendChoice = 'auto', opts: { threads?: number } = {}): Promise<BackendInfo> {
  if (current) {
    if (current.requested !== requested) throw new Error(`backend already initialised as ${current.backend}; cannot switch to ${requested}`);
    return current;
  }
  registerPortableKernels();
  const device = process.env.CUDA_VISIBLE_DEVICES ?? 'cpu';
  const reasons: string[] = [];

  let warning: string | undefined;
  if (requested === 'tensorflow' || requested === 'auto') {
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      const r = tryRequire(pkg);
      if (r.ok && (await tf.setBackend('tensorflow'))) {
        const verdict = judgeTensorflowDevice(observeTensorflow(pkg));
        if (verdict.ok) {
          current = { requested, backend: 'tensorflow', device: verdict.gpu ? device : 'cpu', threads: null, reason: verdict.reason };
          return current;
        }
        if (requested === 'tensorflow') throw new Error(`--backend tensorflow: ${verdict.message}`);
        // auto: not libtensorflow on the CPU, and not the CPU package on top of the GPU one (one libtensorflow per process)
        warning = verdict.message;
        reasons.push(verdict.message);
        break;
      }
      if (!r.ok) reasons.push(r.reason);
    }
    if (requested === 'tensorflow') throw new Error(`--backend tensorflow requested but ${reasons.join('; ')}. On a GPU node install it as the README describes.`);
  }

  await tf.setBackend('cpu');
  silenceCpuBanner();
  if (requested === 'cpu-native' || requested === 'auto') {
    const n = await tryNative(opts.threads);
    if (n.ok) {
      await tf.setBackend('cpu-native');
      silenceCpuBanner();
      current = { requested, backend: 'cpu-native', device: 'cpu', threads: n.threads, reason: [...reasons, 'native CPU kernels registered'].join('; '), ...(warning ? { warning } : {}) };
      return current;
    }
    if (requested === 'cpu-native') throw new Error(`--backend cpu-native requested but ${n.reason}`);
    reasons.push(n.reason);
  }
  current = {
    requested,
    backend: 'cpu',
    device: 'cpu',
    threads: null,
    reason: requested === 'cpu' ? 'stock CPU kernels requested' : [...reasons, 'using the slow stock CPU kernels'].join('; '),
    ...(warning ? { warning } : {}),
  };
  return current;
}

/** What tfjs-node's backend found when it listed TensorFlow's devices (tensorflow-device.ts), plus the driver's view for the error message. */
function observeTensorflow(pkg: string): TensorflowDeviceObservation {
  const b = tf.backend() as unknown as { isGPUPackage?: boolean; isUsingGpuDevice?: boolean; binding?: { isUsingGpuDevice?: () => boolean } };
  const usingGpu = typeof b.isUsingGpuDevice === 'boolean' ? b.isUsingGpuDevice : typeof b.binding?.isUsingGpuDevice === 'function' ? b.binding.isUsingGpuDevice() : null;
  const gpuPackage = typeof b.isGPUPackage === 'boolean' ? b.isGPUPackage : pkg.endsWith('-gpu');
  // the driver is asked only when it can explain a missing GPU
  const driver = gpuPackage && usingGpu !== true ? listDriverGpus() : { gpus: 0 };
  return { pkg, gpuPackage, usingGpu, cudaVisibleDevices: process.env.CUDA_VISIBLE_DEVICES, driver };
}

/** `nvidia-smi -L`, one "GPU i: …" line per device; independent of CUDA_VISIBLE_DEVICES. */
function listDriverGpus(): { gpus: number } | { error: string } {
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return { error: `nvidia-smi: ${r.error.message}` };
  if (r.status !== 0) return { error: `nvidia-smi exited with ${r.status}: ${firstLine((r.stderr || r.stdout || '').trim())}` };
  return { gpus: r.stdout.split('\n').filter((l) => /^GPU \d+:/.test(l)).length };
}

export function backendInfo(): BackendInfo | null {
  return current;
}

/** The stock CPU backend prints an advert for tfjs-node on first use; we log our own line instead. */
function silenceCpuBanner(): void {
  const b = tf.backend() as unknown as { firstUse?: boolean };
  if ('firstUse' in b) b.firstUse = false;
}
