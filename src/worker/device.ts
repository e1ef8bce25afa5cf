/**
 * Pinning a worker to one accelerator. libtensorflow reads
 * CUDA_VISIBLE_DEVICES when it loads, so this runs before the backend import.
 */
export interface DevicePin {
  /** What CUDA_VISIBLE_DEVICES was set to, or 'cpu' when nothing was pinned. */
  device: string;
  source: '--device' | 'local rank' | 'inherited' | 'none';
}

export function pinDevice(device: string | undefined, localRank: number | undefined, env: NodeJS.ProcessEnv = process.env): DevicePin {
  if (device !== undefined && device !== '') {
    env.CUDA_VISIBLE_DEVICES = device;
    return { device, source: '--device' };
  }
  if (env.CUDA_VISIBLE_DEVICES !== undefined && env.CUDA_VISIBLE_DEVICES !== '') {
    // A scheduler (Slurm, Kubernetes device plugin) already chose; with several
    // visible devices, take the local rank's one.
    const visible = env.CUDA_VISIBLE_DEVICES.split(',');
    if (visible.length > 1 && localRank !== undefined) {
      env.CUDA_VISIBLE_DEVICES = visible[localRank % visible.length]!;
      return { device: env.CUDA_VISIBLE_DEVICES, source: 'local rank' };
    }
    return { device: env.CUDA_VISIBLE_DEVICES, source: 'inherited' };
  }
  return { device: 'cpu', source: 'none' };
}

/** Local rank as launchers publish it (ours, torchrun-style, Slurm, Open MPI). */
export function localRankFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  for (const k of ['SHARDFACE_LOCAL_RANK', 'LOCAL_RANK', 'SLURM_LOCALID', 'OMPI_COMM_WORLD_LOCAL_RANK']) {
    const v = env[k];
    if (v !== undefined && /^\d+$/.test(v)) return Number(v);
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
