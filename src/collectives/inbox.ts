/** Binding a rank's data-plane inbox on a port the OS picks. */
import { dataInbox, type DataInbox } from '../protocol/sockets.js';

/**
 * Binds a fresh inbox (PULL) on `tcp://host:*` and returns it with the address to
 * announce to the other ranks: `tcp://<advertise ?? host>:<port the OS chose>`.
 * Bind on '0.0.0.0' and advertise the host name when peers are on other machines.
 */
export async function bindInbox(host = '127.0.0.1', advertise?: string): Promise<{ inbox: DataInbox; address: string }> {
  const inbox = dataInbox();
  try {
    await inbox.bind(`tcp://${host}:*`);
  } catch (e) {
    inbox.close();
    throw e;
  }
  const endpoint = inbox.lastEndpoint ?? '';
  const port = /:(\d+)$/.exec(endpoint)?.[1];
  if (!port) {
    inbox.close();
    throw new Error(`bindInbox: bound tcp://${host}:* but ZeroMQ reported endpoint ${JSON.stringify(endpoint)}`);
  }
  const name = advertise ?? host;
  return { inbox, address: `tcp://${name.includes(':') ? `[${name}]` : name}:${port}` };
}
