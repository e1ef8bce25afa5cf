/**
 * Choosing the compute backend. The only module that names backends; the rest
 * of shardface calls tfjs ops and never asks which backend runs them.
 *
 *  - `tensorflow`: @tensorflow/tfjs-node-gpu (CUDA libtensorflow), falling back
 *    to @tensorflow/tfjs-node (CPU libtensorflow) when only that is installed.
 *  - `cpu-native`: TensorFlow.js's CPU backend with shardface's native kernels
 *    (src/ops/native) registered over the stock ones.
 *  - `cpu`: the stock pure-JavaScript CPU backend.
 *  - `auto`: tensorflow if installed, else cpu-native if the addon loaded, else cpu.
 */
import { createRequire } from 'node:module';
import { tf } from './tf.js';

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
 * Initialises the backend once per process. Must run after CUDA_VISIBLE_DEVICES
 * is set (see worker/device.ts), because libtensorflow reads it on load.
 */
export async function initBackend(requested: BackendChoice = 'auto', opts: { threads?: number } = {}): Promise<BackendInfo> {
  if (current) {
    if (current.requested !== requested) throw new Error(`backend already initialised as ${current.backend}; cannot switch to ${requested}`);
    return current;
  }
  const device = process.env.CUDA_VISIBLE_DEVICES ?? 'cpu';
  const reasons: string[] = [];

  if (requested === 'tensorflow' || requested === 'auto') {
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      const r = tryRequire(pkg);
      if (r.ok && (await tf.setBackend('tensorflow'))) {
        current = { requested, backend: 'tensorflow', device, threads: null, reason: `${pkg} loaded` };
        return current;
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
      current = { requested, backend: 'cpu-native', device: 'cpu', threads: n.threads, reason: [...reasons, 'native CPU kernels registered'].join('; ') };
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
  };
  return current;
}

export function backendInfo(): BackendInfo | null {
  return current;
}

/** The stock CPU backend prints an advert for tfjs-node on first use; we log our own line instead. */
function silenceCpuBanner(): void {
  const b = tf.backend() as unknown as { firstUse?: boolean };
  if ('firstUse' in b) b.firstUse = false;
}
