/** ZeroMQ TCP endpoints as the control and data planes write them. */
export interface TcpEndpoint {
  host: string;
  port: number;
}

/** `tcp://host:port` or `tcp://[v6]:port` → its parts; null for anything else. */
export function parseTcpEndpoint(address: string): TcpEndpoint | null {
  const m = /^tcp:\/\/(?:\[([^\]]+)\]|([^:/[\]]+)):(\d+)$/.exec(address.trim());
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2])!, port };
}
