/**
 * Does the `tensorflow` backend really run on a GPU? A pure judgement over
 * what backend.ts observed, so every case is testable without one.
 *
 * libtensorflow never fails to load for want of a GPU: when its CUDA
 * libraries (CUDA 11.2, cuDNN 8.1 for the 2.9.1 build tfjs-node-gpu 4.22
 * downloads) or the driver are missing, or CUDA_VISIBLE_DEVICES hides every
 * device, it lists only the host CPU and tfjs-node places every op there, with
 * nothing but a TF_CPP warning that tfjs-node hides by default. A job that
 * asked for the GPU would then train on libtensorflow's CPU kernels, slower
 * than cpu-native, without saying so. tfjs-node records what its binding
 * found when it listed the TFE context's devices: `isUsingGpuDevice` on the
 * backend object (true when the list held a device of type "GPU"), and
 * `isGPUPackage` (the package is the CUDA build). That is the observation this
 * judgement rests on; nvidia-smi and CUDA_VISIBLE_DEVICES only say why.
 */

export interface TensorflowDeviceObservation {
  /** The package that loaded. */
  pkg: string;
  /** tfjs-node's `isGPUPackage`: the CUDA build of libtensorflow. */
  gpuPackage: boolean;
  /** tfjs-node's `isUsingGpuDevice`: TensorFlow listed a GPU device; null when the backend does not say. */
  usingGpu: boolean | null;
  /** CUDA_VISIBLE_DEVICES as this process saw it (after pinning). */
  cudaVisibleDevices: string | undefined;
  /** What `nvidia-smi -L` reported: the GPUs the driver lists, or why it could not run. */
  driver: { gpus: number } | { error: string };
}

export type TensorflowDeviceVerdict = { ok: true; gpu: boolean; reason: string } | { ok: false; message: string };

/** True when CUDA_VISIBLE_DEVICES is set and hides every device ('' or starting with -1, as CUDA reads it). */
function hidesEveryGpu(v: string | undefined): boolean {
  if (v === undefined) return false;
  const first = v.split(',')[0]!.trim();
  return first === '' || first.startsWith('-');
}

/** Every entry an index at or beyond the driver's count (UUIDs are not judged here). */
function namesNoListedGpu(v: string | undefined, gpus: number): boolean {
  if (v === undefined) return false;
  const entries = v.split(',').map((s) => s.trim());
  return entries.every((e) => /^\d+$/.test(e) && Number(e) >= gpus);
}

export function judgeTensorflowDevice(o: TensorflowDeviceObservation): TensorflowDeviceVerdict {
  if (!o.gpuPackage) return { ok: true, gpu: false, reason: `${o.pkg} loaded (libtensorflow's CPU build)` };
  if (o.usingGpu === true) return { ok: true, gpu: true, reason: `${o.pkg} loaded, TensorFlow sees a GPU` };
  const head = `${o.pkg} loaded but TensorFlow sees no GPU`;
  const tail = '; use --backend cpu-native to train on the CPU';
  if (o.usingGpu === null) return { ok: false, message: `${head.replace('sees no GPU', 'does not say whether it sees a GPU')} (its backend has no isUsingGpuDevice)${tail}` };
  const visible = o.cudaVisibleDevices === undefined ? 'CUDA_VISIBLE_DEVICES unset' : `CUDA_VISIBLE_DEVICES=${JSON.stringify(o.cudaVisibleDevices)}`;
  let why: string;
  if (hidesEveryGpu(o.cudaVisibleDevices)) why = `${visible} hides every GPU from this process`;
  else if ('error' in o.driver) why = `no NVIDIA driver answers (${o.driver.error}); ${visible}`;
  else if (o.driver.gpus === 0) why = `nvidia-smi lists no GPU; ${visible}`;
  else if (namesNoListedGpu(o.cudaVisibleDevices, o.driver.gpus))
    why = `${visible} names no GPU the driver lists (${o.driver.gpus} GPU${o.driver.gpus === 1 ? '' : 's'}, indices 0..${o.driver.gpus - 1})`;
  else
    why =
      `the driver lists ${o.driver.gpus} GPU${o.driver.gpus === 1 ? '' : 's'} (${visible}), so libtensorflow could not load its CUDA libraries ` +
      '(CUDA 11.2 and cuDNN 8.1 on the library path; run with TF_CPP_MIN_LOG_LEVEL=0 to see which one is missing)';
  return { ok: false, message: `${head}: ${why}${tail}` };
}
