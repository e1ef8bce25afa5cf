/**
 * The ZAP handler (ZeroMQ RFC 27) of this process: libzmq asks it, over
 * inproc://zeromq.zap.01 in the same context, whether a peer that completed
 * the CURVE handshake with one of our server sockets may connect. Each server
 * socket gets its own ZAP domain and policy (the set of accepted client
 * keys); anything else — another mechanism, an unknown key, an unknown
 * domain — is refused with status 400, so the peer never gets to send a frame.
 *
 * The handler must be bound before any CURVE server socket binds: without a
 * handler libzmq would let every well-formed CURVE client in.
 */
import { Router } from 'zeromq';
import { z85Encode } from './z85.js';

const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

export interface ZapPolicy {
  /** Accepted client public keys (Z85) → name. */
  authorized: Map<string, string>;
  /** Told about each refused peer (address, why); callers rate-limit their logs. */
  onRefused?: (address: string, reason: string) => void;
  /** Told about each accepted peer (address, key name). */
  onAccepted?: (address: string, name: string) => void;
}

let handler: { socket: Router; ready: Promise<void> } | null = null;
const policies = new Map<string, ZapPolicy>();
let nextDomain = 0;

async function serve(socket: Router): Promise<void> {
  try {
    for await (const [id, delimiter, version, requestId, domain, address, , mechanism, ...credentials] of socket) {
      const policy = policies.get(String(domain ?? ''));
      const peer = String(address ?? '');
      let status: [string, string] = ['200', 'OK'];
      let name = '';
      if (String(version) !== '1.0') status = ['400', 'unsupported ZAP version'];
      else if (!policy) status = ['400', 'unknown domain'];
      else if (String(mechanism) !== 'CURVE' || credentials.length !== 1 || credentials[0]!.length !== 32) status = ['400', `mechanism ${String(mechanism)} not accepted`];
      else {
        const key = z85Encode(credentials[0]!);
        const known = policy.authorized.get(key);
        if (known === undefined) status = ['400', 'client key not in authorized_keys'];
        else name = known;
      }
      if (status[0] === '200') policy!.onAccepted?.(peer, name);
      else policy?.onRefused?.(peer, status[1]);
      await socket.send([id!, delimiter!, '1.0', requestId!, status[0], status[1], name, '']);
    }
  } catch {
    // closed
  }
}

/**
 * Registers `policy` under a fresh ZAP domain (starting this process's
 * handler on first use) and returns the domain to set on the server socket,
 * and a function that removes the policy.
 */
export async function zapDomain(policy: ZapPolicy): Promise<{ domain: string; release: () => void }> {
  if (!handler) {
    const socket = new Router({ linger: 0 });
    const ready = socket.bind(ZAP_ENDPOINT);
    handler = { socket, ready };
    void ready.then(() => serve(socket));
  }
  await handler.ready;
  const domain = `shardface-${process.pid}-${nextDomain++}`;
  policies.set(domain, policy);
  return {
    domain,
    release: () => {
      policies.delete(domain);
      // The handler's pending receive would keep the process alive: close it with the last server socket.
      if (policies.size === 0 && handler) {
        handler.socket.close();
        handler = null;
      }
    },
  };
}
