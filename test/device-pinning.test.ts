import { describe, expect, it } from 'vitest';
import { choosePin, describeDevice, lookupGpu, parseNvidiaSmi, applyPin, localRankFromEnv, type DevicePin } from '../src/worker/device.js';
import { startCli, startCoordinator } from './helpers/processes.js';

const lr = (value: number, variable = 'LOCAL_RANK') => ({ value, variable });

describe('choosePin', () => {
  it('a local rank alone pins that GPU', () => {
    expect(choosePin({ localRank: lr(3) })).toMatchObject({ ok: true, cudaVisibleDevices: '3', source: 'local rank', why: 'LOCAL_RANK=3' });
    expect(choosePin({ localRank: lr(0, 'SLURM_LOCALID') })).toMatchObject({ ok: true, cudaVisibleDevices: '0', why: 'SLURM_LOCALID=0' });
  });

  it("maps local rank i to the i-th entry of the parent's CUDA_VISIBLE_DEVICES", () => {
    for (let i = 0; i < 4; i++) expect(choosePin({ localRank: lr(i), visible: '4,5,6,7' })).toMatchObject({ ok: true, cudaVisibleDevices: String(4 + i), source: 'local rank' });
    expect(choosePin({ localRank: lr(1), visible: 'GPU-aaa, GPU-bbb' })).toMatchObject({ ok: true, cudaVisibleDevices: 'GPU-bbb' });
  });

  it("keeps a scheduler's one-GPU-per-task binding (a single entry under SLURM_LOCALID)", () => {
    expect(choosePin({ localRank: lr(3, 'SLURM_LOCALID'), visible: '3' })).toMatchObject({ ok: true, cudaVisibleDevices: '3', source: 'inherited' });
    // shardface's own launcher started several workers under that one entry: that is a mistake
    const own = choosePin({ localRank: lr(1, 'SHARDFACE_LOCAL_RANK'), visible: '3' });
    expect(!own.ok && own.message).toMatch(/^SHARDFACE_LOCAL_RANK=1 but CUDA_VISIBLE_DEVICES=3 lists 1 device/);
  });

  it('a local rank beyond the list is an error, not a wrap-around', () => {
    const r = choosePin({ localRank: lr(4), visible: '4,5,6,7' });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toBe('LOCAL_RANK=4 but CUDA_VISIBLE_DEVICES=4,5,6,7 lists 4 devices: start at most 4 workers on this host, or give each an explicit --device');
  });

  it('--device indexes the devices this process may use', () => {
    expect(choosePin({ device: '2', localRank: lr(0) })).toMatchObject({ ok: true, cudaVisibleDevices: '2', source: '--device' });
    expect(choosePin({ device: '1', visible: '4,5,6,7', localRank: lr(3) })).toMatchObject({ ok: true, cudaVisibleDevices: '5', source: '--device' });
    expect(choosePin({ device: 'GPU-bbb', visible: 'GPU-aaa,GPU-bbb' })).toMatchObject({ ok: true, cudaVisibleDevices: 'GPU-bbb' });
    const beyond = choosePin({ device: '4', visible: '4,5,6,7' });
    expect(!beyond.ok && beyond.message).toMatch(/--device 4 is beyond CUDA_VISIBLE_DEVICES=4,5,6,7 \(4 devices, indices 0\.\.3\)/);
    const foreign = choosePin({ device: 'GPU-ccc', visible: 'GPU-aaa,GPU-bbb' });
    expect(!foreign.ok && foreign.message).toMatch(/not among CUDA_VISIBLE_DEVICES/);
    const bad = choosePin({ device: 'cuda:0' });
    expect(!bad.ok && bad.message).toMatch(/--device must be a GPU index or UUID/);
    const hidden = choosePin({ device: '0', visible: '' });
    expect(!hidden.ok && hidden.message).toMatch(/hides every GPU/);
  });

  it("keeps the parent's choice without a local rank, and leaves hidden GPUs hidden", () => {
    expect(choosePin({ visible: '2,3' })).toMatchObject({ ok: true, cudaVisibleDevices: '2,3', source: 'inherited' });
    expect(choosePin({ visible: '-1', localRank: lr(1) })).toMatchObject({ ok: true, cudaVisibleDevices: '-1', source: 'hidden' });
    expect(choosePin({})).toMatchObject({ ok: true, cudaVisibleDevices: null, source: 'none' });
  });

  it('applyPin sets CUDA_VISIBLE_DEVICES and PCI bus order (unless chosen), or nothing', () => {
    const env: NodeJS.ProcessEnv = {};
    applyPin({ cudaVisibleDevices: '5', source: 'local rank', why: '' }, env);
    expect(env).toEqual({ CUDA_VISIBLE_DEVICES: '5', CUDA_DEVICE_ORDER: 'PCI_BUS_ID' });
    const mine: NodeJS.ProcessEnv = { CUDA_DEVICE_ORDER: 'FASTEST_FIRST' };
    applyPin({ cudaVisibleDevices: '1', source: '--device', why: '' }, mine);
    expect(mine.CUDA_DEVICE_ORDER).toBe('FASTEST_FIRST');
    const none: NodeJS.ProcessEnv = {};
    applyPin({ cudaVisibleDevices: null, source: 'none', why: '' }, none);
    expect(none).toEqual({});
  });

  it('reads the local rank from the launchers’ variables, ours first', () => {
    expect(localRankFromEnv({ SLURM_LOCALID: '2' })).toEqual({ value: 2, variable: 'SLURM_LOCALID' });
    expect(localRankFromEnv({ LOCAL_RANK: '1', SLURM_LOCALID: '2', SHARDFACE_LOCAL_RANK: '0' })).toEqual({ value: 0, variable: 'SHARDFACE_LOCAL_RANK' });
    expect(localRankFromEnv({ LOCAL_RANK: 'x' })).toBeUndefined();
  });
});

describe('the GPU a worker really got', () => {
  const SMI = '0, NVIDIA H200, GPU-11111111-aaaa\n1, NVIDIA H200, GPU-22222222-bbbb\n';
  const smi =
    (out: string, status = 0) =>
    () => ({ status, stdout: out });
  const pin = (cudaVisibleDevices: string | null, source: DevicePin['source'] = 'local rank'): DevicePin => ({ cudaVisibleDevices, source, why: 'LOCAL_RANK=1' });

  it('parses nvidia-smi query output (names may hold commas)', () => {
    expect(parseNvidiaSmi(SMI + '2, Tesla V100-SXM2-16GB, Rev, B, GPU-3\n\n')).toEqual([
      { index: 0, name: 'NVIDIA H200', uuid: 'GPU-11111111-aaaa' },
      { index: 1, name: 'NVIDIA H200', uuid: 'GPU-22222222-bbbb' },
      { index: 2, name: 'Tesla V100-SXM2-16GB, Rev, B', uuid: 'GPU-3' },
    ]);
  });

  it('finds the pinned entry by index or UUID', () => {
    expect(lookupGpu('1', smi(SMI))).toEqual({ found: true, index: 1, name: 'NVIDIA H200', uuid: 'GPU-22222222-bbbb' });
    expect(lookupGpu('GPU-11111111', smi(SMI))).toMatchObject({ found: true, index: 0 });
    expect(lookupGpu('3', smi(SMI))).toEqual({ found: false, why: 'nvidia-smi lists 2 GPUs (0, 1), not 3' });
    expect(lookupGpu('0', () => ({ status: null, stdout: '', error: new Error('spawnSync nvidia-smi ENOENT') }))).toMatchObject({
      found: false,
      why: expect.stringMatching(/^nvidia-smi not available/),
    });
  });

  it('on the tensorflow backend names the GPU, and refuses a pin to a GPU the host lacks', () => {
    expect(describeDevice('tensorflow', pin('1'), (e) => lookupGpu(e, smi(SMI)))).toEqual({ level: 'info', gpu: 'NVIDIA H200', message: 'GPU 1: NVIDIA H200 (GPU-22222222-bbbb); LOCAL_RANK=1' });
    expect(describeDevice('tensorflow', pin('7'), (e) => lookupGpu(e, smi(SMI)))).toMatchObject({ level: 'error', message: 'LOCAL_RANK=1 pins GPU 7, but nvidia-smi lists 2 GPUs (0, 1), not 7' });
    expect(describeDevice('tensorflow', pin('1'), () => ({ found: false, why: 'nvidia-smi not available (ENOENT)' }))).toMatchObject({ level: 'warn', gpu: null });
  });

  it('on a CPU backend says there is none, whatever was pinned', () => {
    expect(
      describeDevice('cpu-native', pin('1'), () => {
        throw new Error('not consulted');
      }),
    ).toEqual({ level: 'info', gpu: null, message: 'no GPU: the cpu-native backend runs on the CPU' });
  });
});

describe('pinning in real worker processes', () => {
  it("launch: local rank i gets entry i of the parent's CUDA_VISIBLE_DEVICES, and logs the device it runs on", async () => {
    const p = startCli(['launch', '--workers', '2', '--kind', 'empty', '--steps', '1'], { CUDA_VISIBLE_DEVICES: '4,5' });
    const exit = await p.exit;
    expect(exit.code, p.lines.slice(-10).join('\n')).toBe(0);
    const workers = p.json().filter((l) => l.role === 'worker');
    const registering = workers.filter((l) => l.msg === 'registering');
    const byPid = new Map(registering.map((l) => [l.pid, l.device]));
    expect([...byPid.values()].sort()).toEqual(['4', '5']);
    const device = workers.filter((l) => String(l.msg).startsWith('device: '));
    expect(device).toHaveLength(2);
    for (const d of device) {
      expect(d).toMatchObject({ gpu: null, deviceSource: 'local rank', msg: 'device: no GPU: the cpu-native backend runs on the CPU' });
      expect(d.cudaVisibleDevices).toBe(byPid.get(d.pid));
    }
  });

  it('launch refuses more workers than the parent lists devices, before starting any', async () => {
    const r = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const p = startCli(['launch', '--workers', '2', '--kind', 'empty', '--steps', '1'], { CUDA_VISIBLE_DEVICES: '4' });
      void p.exit.then((e) => resolve({ code: e.code, text: p.lines.join('\n') }));
    });
    expect(r.code).toBe(2);
    expect(r.text).toContain('cannot start 2 workers on this host: SHARDFACE_LOCAL_RANK=1 but CUDA_VISIBLE_DEVICES=4 lists 1 device');
    expect(r.text).not.toMatch(/"role":"worker"/);
  });

  it('a worker under Slurm pins from SLURM_LOCALID alone, and refuses one beyond the list', async () => {
    const { coord, address: addr } = await startCoordinator(['--workers', '1', '--kind', 'empty', '--steps', '1']);
    const w = startCli(['worker', '--coordinator', addr], { SLURM_LOCALID: '1', CUDA_VISIBLE_DEVICES: '6,7' });
    const [c, x] = await Promise.all([coord.exit, w.exit]);
    expect(c.code).toBe(0);
    expect(x.code).toBe(0);
    expect(w.json().find((l) => l.msg === 'registering')).toMatchObject({ device: '7', deviceSource: 'local rank' });

    const beyond = startCli(['worker', '--coordinator', addr], { SLURM_LOCALID: '2', CUDA_VISIBLE_DEVICES: '6,7' });
    expect((await beyond.exit).code).toBe(1);
    expect(beyond.json().find((l) => l.level === 50)?.msg).toBe(
      'SLURM_LOCALID=2 but CUDA_VISIBLE_DEVICES=6,7 lists 2 devices: start at most 2 workers on this host, or give each an explicit --device',
    );
  });
});
