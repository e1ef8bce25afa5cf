/**
 * Pinning a worker to one accelerator. libtensorflow reads
 * CUDA_VISIBLE_DEVICES when it loads, so the worker applies the choice before
 * the backend import.
 *
 * Rules (choosePin, a pure function):
 *  1. `--device D`: D is an index into the devices this process may use, so
 *     under a parent's CUDA_VISIBLE_DEVICES=4,5,6,7 `--device 1` means GPU 5;
 *     without a parent list it is the GPU's own index (or UUID).
 *  2. else a local rank (SHARDFACE_LOCAL_RANK, LOCAL_RANK, SLURM_LOCALID,
 *     OMPI_COMM_WORLD_LOCAL_RANK) picks the local rank's entry of the parent's
 *     list, or GPU <local rank> when there is no list.
 *     A parent list of one entry under a scheduler's local rank is the
 *     scheduler's own per-task binding and stands.
 *  3. else the parent's choice stands (or nothing is pinned).
 * An index beyond the parent's list is an error, never a silent wrap-around:
 * two workers on one GPU, or one outside the scheduler's allocation, is the
 * mistake this module exists to prevent.
 */
import { spawnSync } from 'node:child_process';

export type PinSource = '--device' | 'local rank' | 'inherited' | 'hidden' | 'none';

export interface DevicePin {
  /** CUDA_VISIBLE_DEVICES for this process, or null to leave it unset. */
  cudaVisibleDevices: string | null;
  source: PinSource;
  /** Human-readable: how the choice was made. */
  why: string;
}

export type PinResult = ({ ok: true } & DevicePin) | { ok: false; message: string };

export interface PinInput {
  /** `--device`, if given. */
  device?: string;
  /** Local rank and the variable it came from. */
  localRank?: { value: number; variable: string };
  /** The parent's CUDA_VISIBLE_DEVICES, if set. */
  visible?: string;
}

/** The entries of a CUDA_VISIBLE_DEVICES value; null when it hides every GPU ('' or starting with -1). */
function visibleList(v: string): string[] | null {
  const list = v.split(',').map((s) => s.trim());
  if (list.length === 0 || list[0] === '' || list[0]!.startsWith('-')) return null;
  return list;
}

export function choosePin(i: PinInput): PinResult {
  const parent = i.visible === undefined ? undefined : visibleList(i.visible);
  if (i.device !== undefined && i.device !== '') {
    const d = i.device.trim();
    if (!/^\d+$/.test(d) && !/^(GPU|MIG)-[\w-]+$/i.test(d)) return { ok: false, message: `--device must be a GPU index or UUID (GPU-…/MIG-…), got ${JSON.stringify(i.device)}` };
    if (parent === undefined) return { ok: true, cudaVisibleDevices: d, source: '--device', why: `--device ${d}` };
    if (parent === null) return { ok: false, message: `--device ${d} given, but CUDA_VISIBLE_DEVICES=${JSON.stringify(i.visible)} hides every GPU from this process` };
    if (/^\d+$/.test(d)) {
      const idx = Number(d);
      if (idx >= parent.length)
        return { ok: false, message: `--device ${d} is beyond CUDA_VISIBLE_DEVICES=${i.visible} (${parent.length} device${parent.length === 1 ? '' : 's'}, indices 0..${parent.length - 1})` };
      return { ok: true, cudaVisibleDevices: parent[idx]!, source: '--device', why: `--device ${d} = entry ${idx} of CUDA_VISIBLE_DEVICES=${i.visible}` };
    }
    if (!parent.includes(d)) return { ok: false, message: `--device ${d} is not among CUDA_VISIBLE_DEVICES=${i.visible}` };
    return { ok: true, cudaVisibleDevices: d, source: '--device', why: `--device ${d}` };
  }
  if (i.localRank !== undefined) {
    const { value: r, variable } = i.localRank;
    if (parent === null) return { ok: true, cudaVisibleDevices: i.visible!, source: 'hidden', why: `CUDA_VISIBLE_DEVICES=${JSON.stringify(i.visible)} hides every GPU` };
    if (parent === undefined) return { ok: true, cudaVisibleDevices: String(r), source: 'local rank', why: `${variable}=${r}` };
    // A scheduler that binds one GPU per task (srun --gpus-per-task=1, a
    // container runtime) leaves each task its own single entry: it has pinned already.
    if (parent.length === 1 && variable !== OWN_LOCAL_RANK)
      return { ok: true, cudaVisibleDevices: parent[0]!, source: 'inherited', why: `CUDA_VISIBLE_DEVICES=${i.visible} from the scheduler, one device for this task (${variable}=${r})` };
    if (r >= parent.length)
      return {
        ok: false,
        message: `${variable}=${r} but CUDA_VISIBLE_DEVICES=${i.visible} lists ${parent.length} device${parent.length === 1 ? '' : 's'}: start at most ${parent.length} worker${parent.length === 1 ? '' : 's'} on this host, or give each an explicit --device`,
      };
    return { ok: true, cudaVisibleDevices: parent[r]!, source: 'local rank', why: `${variable}=${r} → entry ${r} of CUDA_VISIBLE_DEVICES=${i.visible}` };
  }
  if (parent === null) return { ok: true, cudaVisibleDevices: i.visible!, source: 'hidden', why: `CUDA_VISIBLE_DEVICES=${JSON.stringify(i.visible)} hides every GPU` };
  if (parent !== undefined) return { ok: true, cudaVisibleDevices: i.visible!, source: 'inherited', why: `CUDA_VISIBLE_DEVICES=${i.visible} from the parent, no local rank` };
  return { ok: true, cudaVisibleDevices: null, source: 'none', why: 'no --device, local rank or CUDA_VISIBLE_DEVICES' };
}

/**
 * Applies a pin to the environment before the backend loads. Indices are made
 * to mean what nvidia-smi shows (PCI bus order) unless the user chose an order.
 */
export function applyPin(pin: DevicePin, env: NodeJS.ProcessEnv = process.env): void {
  if (pin.cudaVisibleDevices === null) return;
  env.CUDA_VISIBLE_DEVICES = pin.cudaVisibleDevices;
  env.CUDA_DEVICE_ORDER ??= 'PCI_BUS_ID';
}

/** What shardface's own launcher (train, launch) sets for the workers it starts. */
export const OWN_LOCAL_RANK = 'SHARDFACE_LOCAL_RANK';

/** Local rank as launchers publish it (ours, torchrun-style, Slurm, Open MPI). */
export function localRankFromEnv(env: NodeJS.ProcessEnv = process.env): { value: number; variable: string } | undefined {
  for (const k of [OWN_LOCAL_RANK, 'LOCAL_RANK', 'SLURM_LOCALID', 'OMPI_COMM_WORLD_LOCAL_RANK']) {
    const v = env[k];
    if (v !== undefined && /^\d+$/.test(v)) return { value: Number(v), variable: k };
  }
  return undefined;
}

/** Global rank from a scheduler, when the user did not pass --rank. */
export function rankFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  for (const k of ['SHARDFACE_RANK', 'RANK', 'SLURM_PROCID', 'JOB_COMPLETION_INDEX', 'OMPI_COMM_WORLD_RANK']) {
    const v = env[k];
    if (v !== undefined && /^\d+$/.test(v)) return Number(v);
  }
  return undefined;
}

export type GpuLookup = { found: true; name: string; uuid: string; index: number } | { found: false; why: string };

/** Parses `nvidia-smi --query-gpu=index,name,uuid --format=csv,noheader` output. */
export function parseNvidiaSmi(out: string): { index: number; name: string; uuid: string }[] {
  const gpus: { index: number; name: string; uuid: string }[] = [];
  for (const line of out.split('\n')) {
    // index first, UUID last; the name between may itself hold commas
    const first = line.indexOf(',');
    const last = line.lastIndexOf(',');
    if (first < 0 || last <= first) continue;
    const index = line.slice(0, first).trim();
    if (!/^\d+$/.test(index)) continue;
    gpus.push({ index: Number(index), name: line.slice(first + 1, last).trim(), uuid: line.slice(last + 1).trim() });
  }
  return gpus;
}

/**
 * The GPU a pinned CUDA_VISIBLE_DEVICES entry names, as nvidia-smi reports it
 * (index in PCI bus order, as applyPin arranges, or a UUID).
 */
export function lookupGpu(entry: string, run: (args: string[]) => { status: number | null; stdout: string; error?: Error } = runNvidiaSmi): GpuLookup {
  const r = run(['--query-gpu=index,name,uuid', '--format=csv,noheader']);
  if (r.error || r.status !== 0) return { found: false, why: r.error ? `nvidia-smi not available (${r.error.message})` : `nvidia-smi failed (exit ${r.status})` };
  const gpus = parseNvidiaSmi(r.stdout);
  const hit = gpus.find((g) => (/^\d+$/.test(entry) ? g.index === Number(entry) : g.uuid === entry || g.uuid.startsWith(entry)));
  if (!hit) return { found: false, why: `nvidia-smi lists ${gpus.length} GPU${gpus.length === 1 ? '' : 's'} (${gpus.map((g) => g.index).join(', ') || 'none'}), not ${entry}` };
  return { found: true, ...hit };
}

function runNvidiaSmi(args: string[]): { status: number | null; stdout: string; error?: Error } {
  const r = spawnSync('nvidia-smi', args, { encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, stdout: r.stdout ?? '', ...(r.error ? { error: r.error } : {}) };
}

export interface DeviceReport {
  /** 'error': the pin names a GPU this host does not have; the worker must not run. */
  level: 'info' | 'warn' | 'error';
  /** The GPU's name, or null when the worker runs without one. */
  gpu: string | null;
  message: string;
}

/** What the worker really runs on, once its backend is loaded. */
export function describeDevice(backend: string, pin: DevicePin, lookup: (entry: string) => GpuLookup = lookupGpu): DeviceReport {
  if (backend !== 'tensorflow') return { level: 'info', gpu: null, message: `no GPU: the ${backend} backend runs on the CPU` };
  if (pin.cudaVisibleDevices === null || pin.source === 'hidden') return { level: 'info', gpu: null, message: `tensorflow backend, ${pin.why}; libtensorflow picks the device` };
  const entry = pin.cudaVisibleDevices.split(',')[0]!.trim();
  const g = lookup(entry);
  if (g.found) return { level: 'info', gpu: g.name, message: `GPU ${g.index}: ${g.name} (${g.uuid}); ${pin.why}` };
  if (g.why.startsWith('nvidia-smi lists')) return { level: 'error', gpu: null, message: `${pin.why} pins GPU ${entry}, but ${g.why}` };
  return { level: 'warn', gpu: null, message: `CUDA_VISIBLE_DEVICES=${pin.cudaVisibleDevices} (${pin.why}); GPU name unknown: ${g.why}` };
}
