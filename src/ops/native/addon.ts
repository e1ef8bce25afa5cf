/**
 * Loading the C++ addon (src/ops/native/*.cc, built by `npm run build:native`).
 * The path is found from shardface's package root, so this module works both
 * compiled (dist/src/ops/native) and from source (vitest, tsx).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Conv geometry, in this order: n,h,w,c, kh,kw, oh,ow,cout, sh,sw, padTop,padLeft, groups. */
export type ConvGeometry = [number, number, number, number, number, number, number, number, number, number, number, number, number, number];

/** What shardface_native.node exports (see addon.cc). */
export interface NativeAddon {
  setThreads(n: number): number;
  info(): { threads: number; blasConfig: string; blasCore: string; avx2: boolean };
  /** Keep freed memory for reuse instead of returning it to the OS (threads.cc); false where unsupported. */
  reuseFreedMemory(on: boolean): boolean;
  batchMatMul(a: Float32Array, b: Float32Array, out: Float32Array, batch: number, batchA: number, batchB: number, m: number, n: number, k: number, transA: boolean, transB: boolean): void;
  epilogue(y: Float32Array, rows: number, cols: number, bias: Float32Array | null, biasMode: number, activation: number, alpha: number, prelu: Float32Array | null, preluMode: number): void;
  conv2d(x: Float32Array, w: Float32Array, y: Float32Array, g: ConvGeometry): void;
  conv2dBackpropInput(dy: Float32Array, w: Float32Array, dx: Float32Array, g: ConvGeometry): void;
  conv2dBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, g: ConvGeometry): void;
  depthwise(x: Float32Array, w: Float32Array, y: Float32Array, g: ConvGeometry): void;
  depthwiseBackpropInput(dy: Float32Array, w: Float32Array, dx: Float32Array, g: ConvGeometry): void;
  depthwiseBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, g: ConvGeometry): void;
  /** Grouped conv with ≤ 4 channels per group each way, direct (depthwise.cc); same arguments as conv2d and its backprops. */
  groupedSmall(x: Float32Array, w: Float32Array, y: Float32Array, g: ConvGeometry): void;
  groupedSmallBackpropInput(dy: Float32Array, w: Float32Array, dx: Float32Array, g: ConvGeometry): void;
  groupedSmallBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, g: ConvGeometry): void;
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, p: number, q: number, r: number, side: number): void;
  relu(x: Float32Array, y: Float32Array): void;
  reduceSum(x: Float32Array, out: Float32Array, p: number, q: number, r: number, scale: number): void;
  rowNorms(x: Float32Array, rows: number, d: number, out: Float32Array): void;
  shardForward(
    emb: Float32Array,
    w: Float32Array,
    wNorm: Float32Array | null,
    labels: Int32Array,
    n: number,
    k: number,
    d: number,
    margin: MarginArgs,
    chunk: number,
    rowMax: Float32Array,
    sumExp: Float32Array,
    target: Float32Array,
  ): void;
  shardBackward(
    emb: Float32Array,
    w: Float32Array,
    wNorm: Float32Array | null,
    labels: Int32Array,
    logSumExp: Float32Array,
    n: number,
    k: number,
    d: number,
    margin: MarginArgs,
    rowsTotal: number,
    chunk: number,
    gradEmb: Float32Array,
    gradW: Float32Array,
  ): void;
  rowSgdUpdate(w: Float32Array, v: Float32Array, g: Float32Array, index: Int32Array, count: number, rows: number, d: number, lr: number, momentum: number, weightDecay: number): void;
  rowAdamWUpdate(w: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, index: Int32Array, count: number, rows: number, d: number, consts: AdamWConsts): void;
  gatherRows(x: Float32Array, count: number, d: number, index: Int32Array, rows: number, out: Float32Array): void;
  /** BatchNorm (batch statistics) over x [rows, c], then PReLU when alpha is given (norm-act.cc). */
  bnForward(
    x: Float32Array,
    rows: number,
    c: number,
    gamma: Float32Array,
    beta: Float32Array,
    alpha: Float32Array | null,
    eps: number,
    y: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
  ): void;
  bnBackward(
    x: Float32Array,
    dy: Float32Array,
    rows: number,
    c: number,
    gamma: Float32Array,
    beta: Float32Array,
    alpha: Float32Array | null,
    mean: Float32Array,
    variance: Float32Array,
    eps: number,
    dmean: Float32Array | null,
    dvariance: Float32Array | null,
    dx: Float32Array,
    dgamma: Float32Array,
    dbeta: Float32Array,
    dalpha: Float32Array | null,
  ): void;
  preluForward(x: Float32Array, rows: number, c: number, alpha: Float32Array, y: Float32Array): void;
  preluBackward(x: Float32Array, dy: Float32Array, rows: number, c: number, alpha: Float32Array, dx: Float32Array, dalpha: Float32Array): void;
  /** Shared memory for the same-host collectives (shm.cc): a new owner-only segment of `bytes`, pages reserved; throws with `code` EEXIST, ENOSPC, … */
  shmCreate(name: string, bytes: number): ArrayBuffer;
  /** Maps an existing segment this user owns privately; throws with `code` ENOENT, EACCES, … */
  shmOpen(name: string): ArrayBuffer;
  /** Removes the name (mappings stay valid); false when there was none. */
  shmUnlink(name: string): boolean;
  /** Waits until a[index] >= target or timeoutMs pass (futex, process-shared); returns a[index]. */
  shmWait(a: Int32Array, index: number, target: number, timeoutMs: number): number;
  /** a[index] = value (release) and wakes its waiters. */
  shmStore(a: Int32Array, index: number, value: number): void;
  /**
   * out = inputs[0] ∘ inputs[1] ∘ … in that order (op 0 sum, then / divisor; op 1 max), and the
   * same into `also` when given; out and also may alias an input. `stream`: write out with
   * non-temporal stores.
   */
  shmReduce<T extends Float32Array | Int32Array>(out: T, inputs: T[], op: 0 | 1, divisor: number, also?: T | null, stream?: boolean): void;
  /** dst.set(src) for equal byte lengths (overlapping ones as memmove); `stream`: non-temporal stores. */
  shmCopy(dst: Float32Array | Int32Array, src: Float32Array | Int32Array, stream: boolean): void;
}

/** [s, m1, m2, m3, variant code (0 straight-through, 1 exact, 2 legacy, 3 legacy-easy)]. */
export type MarginArgs = [number, number, number, number, number];
/** [decay = 1 − lr·wd, β1, 1 − β1, β2, 1 − β2, sqrt(bc2), eps, stepSize = lr/bc1], each used as float32. */
export type AdamWConsts = [number, number, number, number, number, number, number, number];

const ADDON_RELATIVE_PATH = join('src', 'ops', 'native', 'build', 'Release', 'shardface_native.node');

/** The nearest directory above this module holding shardface's package.json. */
function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'shardface') return dir;
      } catch {
        // unreadable package.json: keep walking up
      }
    }
    if (dirname(dir) === dir) throw new Error(`no shardface package.json above ${from}`);
  }
}

/**
 * OpenBLAS 0.3.21 picks its kernels from the CPU's family/model and falls back to
 * SSE3 ("Prescott", 2-4× slower) on CPUs it does not know, such as virtualised
 * Xeons. It reads OPENBLAS_CORETYPE when the library loads, so choose from the
 * CPU's feature flags before the addon (and with it OpenBLAS) is loaded.
 */
function chooseBlasCore(): void {
  if (process.env.OPENBLAS_CORETYPE || process.arch !== 'x64' || process.platform !== 'linux') return;
  let flags: Set<string>;
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('flags'));
    flags = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return;
  }
  const has = (...names: string[]): boolean => names.every((n) => flags.has(n));
  if (has('avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512cd')) process.env.OPENBLAS_CORETYPE = 'SkylakeX';
  else if (has('avx2', 'fma')) process.env.OPENBLAS_CORETYPE = 'Haswell';
}

/**
 * OpenMP threads (the addon's and OpenBLAS's, one libgomp pool) spin after each
 * parallel region by default. Between the many short regions of a step (and the
 * JavaScript in between) the spinning thread takes a core from the thread doing
 * the work: on a 2-core machine with other processes running, the classifier
 * step at sample rate 0.1 ran 2.5–4× slower than with sleeping threads, and no
 * measured case ran slower passive. libgomp reads this when it loads, so set it
 * before the addon (and with it libgomp) is loaded; an explicit setting wins.
 */
function chooseOmpWaitPolicy(): void {
  if (process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined) process.env.OMP_WAIT_POLICY = 'passive';
}

let loaded: NativeAddon | null = null;

/** Loads the addon once; throws with the path tried when it is missing or broken. */
export function loadAddon(): NativeAddon {
  if (loaded) return loaded;
  const path = join(packageRoot(), ADDON_RELATIVE_PATH);
  if (!existsSync(path)) throw new Error(`${path} not built (run npm run build:native)`);
  chooseBlasCore();
  chooseOmpWaitPolicy();
  loaded = createRequire(import.meta.url)(path) as NativeAddon;
  return loaded;
}
