/**
 * Which address a worker announces for its data plane. Peers must be able to
 * reach it from wherever they run, so the default is the address of this
 * host's interface that routes toward the coordinator: on a cluster that is the
 * network all the job's hosts share, whatever the host name resolves to.
 */
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { parseTcpEndpoint } from '../protocol/endpoint.js';

function isLoopback(ip: string): boolean {
  return /^127\./.test(ip) || ip === '::1' || ip.toLowerCase() === 'localhost';
}

export interface Advertised {
  /** What goes into the data address peers connect to. */
  host: string;
  /** What the inbox binds: every interface, or loopback only for single-machine jobs. */
  bind: string;
  how: '--advertise' | 'route to coordinator' | 'loopback';
}

/**
 * The local address the kernel would use to send to `ip`: connecting a UDP
 * socket only selects a route and a source address, it sends nothing.
 */
export async function localAddressToward(ip: string): Promise<string> {
  const family = isIP(ip);
  if (family === 0) throw new Error(`not an IP address: ${ip}`);
  const socket = createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      // Any port: nothing is sent.
      socket.connect(9, ip, () => resolve());
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}

/** Decides the advertised data-plane host for a worker whose coordinator is `coordinator`. */
export async function chooseAdvertised(coordinator: string, override?: string): Promise<Advertised> {
  const ep = parseTcpEndpoint(coordinator);
  if (!ep) throw new Error(`--coordinator must look like tcp://HOST:PORT, got ${JSON.stringify(coordinator)}`);
  if (override !== undefined && override !== '') {
    return { host: override, bind: isLoopback(override) ? '127.0.0.1' : '0.0.0.0', how: '--advertise' };
  }
  let ip = ep.host;
  if (isIP(ip) === 0) {
    try {
      ip = (await lookup(ep.host)).address;
    } catch (e) {
      throw new Error(`cannot resolve the coordinator's host ${JSON.stringify(ep.host)}: ${(e as Error).message}`);
    }
  }
  if (isLoopback(ip)) return { host: '127.0.0.1', bind: '127.0.0.1', how: 'loopback' };
  let local: string;
  try {
    local = await localAddressToward(ip);
  } catch (e) {
    throw new Error(`no route from this host to the coordinator ${ip} (${(e as Error).message}); pass --advertise ADDRESS`);
  }
  if (isIP(local) === 6) throw new Error(`the route to the coordinator ${ip} leaves through IPv6 address ${local}; the data plane binds IPv4 only: pass --advertise with this host's IPv4 address`);
  return { host: local, bind: '0.0.0.0', how: 'route to coordinator' };
}
