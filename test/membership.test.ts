import { describe, expect, it } from 'vitest';
import { Membership, hostOf } from '../src/coordinator/membership.js';
import { parseTcpEndpoint } from '../src/protocol/endpoint.js';
import { chooseAdvertised, localAddressToward } from '../src/worker/advertise.js';

const hello = (ip: string, pid: number) => ({ host: 'same-name', pid, token: '', dataAddress: `tcp://${ip}:${40000 + pid}`, device: 'cpu', backend: 'cpu', curveKey: '' });

function join(m: Membership, ip: string, pid: number, requested = -1) {
  const r = m.join(new Uint8Array([pid]), `k${pid}`, requested, hello(ip, pid), 0);
  expect(r.ok).toBe(true);
}

describe('rank assignment', () => {
  it('gives the workers of one host consecutive ranks, hosts in order of first arrival', () => {
    const m = new Membership(6);
    // arrivals interleave hosts A, B, C
    [
      ['10.0.0.2', 1],
      ['10.0.0.3', 2],
      ['10.0.0.2', 3],
      ['10.0.0.4', 4],
      ['10.0.0.3', 5],
      ['10.0.0.2', 6],
    ].forEach(([ip, pid]) => join(m, ip as string, pid as number));
    const ranked = m.assignRanks();
    expect(ranked.map((x) => [x.rank, hostOf(x), x.pid])).toEqual([
      [0, '10.0.0.2', 1],
      [1, '10.0.0.2', 3],
      [2, '10.0.0.2', 6],
      [3, '10.0.0.3', 2],
      [4, '10.0.0.3', 5],
      [5, '10.0.0.4', 4],
    ]);
  });

  it('keeps explicit ranks (SLURM_PROCID, JOB_COMPLETION_INDEX) even when they split a host', () => {
    const m = new Membership(4);
    join(m, '10.0.0.2', 1);
    join(m, '10.0.0.3', 2, 0);
    join(m, '10.0.0.2', 3);
    join(m, '10.0.0.3', 4, 3);
    const ranked = m.assignRanks();
    expect(ranked.map((x) => [x.rank, x.pid])).toEqual([
      [0, 2],
      [1, 1],
      [2, 3],
      [3, 4],
    ]);
  });

  it('groups by the advertised address, not the host name (containers share names)', () => {
    expect(hostOf({ dataAddress: 'tcp://198.18.0.2:5000', host: 'node' })).toBe('198.18.0.2');
    expect(hostOf({ dataAddress: 'tcp://[fd00::2]:5000', host: 'node' })).toBe('fd00::2');
    expect(hostOf({ dataAddress: 'garbage', host: 'node' })).toBe('node');
  });
});

describe('advertised data-plane address', () => {
  it('parses tcp endpoints and rejects others', () => {
    expect(parseTcpEndpoint('tcp://198.18.0.1:29500')).toEqual({ host: '198.18.0.1', port: 29500 });
    expect(parseTcpEndpoint('tcp://[::1]:7')).toEqual({ host: '::1', port: 7 });
    expect(parseTcpEndpoint('tcp://head-node:29500')).toEqual({ host: 'head-node', port: 29500 });
    for (const bad of ['198.18.0.1:29500', 'tcp://x', 'tcp://x:0', 'tcp://x:70000', 'ipc:///tmp/s', 'tcp://a:b:1']) expect(parseTcpEndpoint(bad), bad).toBeNull();
  });

  it('stays on loopback for a loopback coordinator, by address or by name', async () => {
    expect(await chooseAdvertised('tcp://127.0.0.1:29500')).toEqual({ host: '127.0.0.1', bind: '127.0.0.1', how: 'loopback' });
    expect((await chooseAdvertised('tcp://localhost:29500')).how).toBe('loopback');
  });

  it('--advertise wins', async () => {
    expect(await chooseAdvertised('tcp://127.0.0.1:29500', 'node7.cluster')).toEqual({ host: 'node7.cluster', bind: '0.0.0.0', how: '--advertise' });
  });

  it('learns the source address of the route toward a remote coordinator', async () => {
    // 127.0.0.2 is routed through lo like any loopback address; the kernel picks 127.0.0.1 as source
    expect(await localAddressToward('127.0.0.2')).toMatch(/^127\./);
  });

  it('reports a coordinator it cannot parse or resolve', async () => {
    await expect(chooseAdvertised('head-node:29500')).rejects.toThrow(/tcp:\/\/HOST:PORT/);
    await expect(chooseAdvertised('tcp://no-such-host.invalid:29500')).rejects.toThrow(/cannot resolve the coordinator's host "no-such-host.invalid"/);
  });
});
