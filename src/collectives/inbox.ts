/** Binding a rank's data-plane inbox on a port the OS picks. */
import { bindServer, dataInbox, PLAIN_TRANSPORT, type DataInbox, type Transport } from '../protocol/sockets.js';
import type { ZapPolicy } from '../protocol/zap.js';

export interface BoundInbox {
  inbox: DataInbox;
  address: string;
  /** Call after closing the inbox (releases its CURVE policy). */
  release: () => void;
}

/**
 * Binds a fresh inbox on `tcp://host:*` and returns it with the address to
 * announce to the other ranks: `tcp://<advertise ?? host>:<port the OS chose>`.
 * Bind on '0.0.0.0' and advertise the host name when peers are on other machines.
 */
export async function bindInbox(host = '127.0.0.1', advertise?: string, transport: Transport = PLAIN_TRANSPORT, hooks: Omit<ZapPolicy, 'authorized'> = {}): Promise<BoundInbox> {
  const inbox = dataInbox(transport);
  let release: () => void;
  try {
    release = await bindServer(inbox, `tcp://${host}:*`, transport, hooks);
  } catch (e) {
    inbox.close();
    throw e;
  }
  const endpoint = inbox.lastEndpoint ?? '';
  const port = /:(\d+)$/.exec(endpoint)?.[1];
  if (!port) {
    inbox.close();
    release();
    throw new Error(`bindInbox: bound tcp://${host}:* but ZeroMQ reported endpoint ${JSON.stringify(endpoint)}`);
  }
  const name = advertise ?? host;
  return { inbox, address: `tcp://${name.includes(':') ? `[${name}]` : name}:${port}`, release };
}
