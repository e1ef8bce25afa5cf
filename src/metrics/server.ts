/**
 * A tiny HTTP server for monitoring: a fixed table of GET routes, nothing
 * else (405 for other methods, 404 for other paths). It serves what the
 * coordinator knows; it never changes the job.
 */
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';

export interface Route {
  contentType: string;
  body: () => string | Promise<string>;
}

export class MonitorServerError extends Error {
  override name = 'MonitorServerError';
}

export interface MonitorServer {
  /** Base URL to print, ending in '/'; a wildcard host is shown as this machine's name. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function serveRoutes(host: string, port: number, routes: Record<string, Route>): Promise<MonitorServer> {
  if (host.trim() === '') throw new MonitorServerError('metricsHost is empty: give an address to listen on (127.0.0.1 = this machine only, 0.0.0.0 = every interface)');
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const route = routes[path];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${path}; try / (status page), /metrics (Prometheus) or /api/status (JSON)\n`);
      return;
    }
    Promise.resolve()
      .then(route.body)
      .then(
        (body) => {
          res.writeHead(200, { 'content-type': route.contentType, 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : body);
        },
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
      );
  });
  // Keep-alive sockets must not hold the process open once the run is over.
  server.keepAliveTimeout = 2000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new MonitorServerError(
          `cannot serve metrics on ${host}:${port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message}${e.code && e.code !== 'EADDRINUSE' ? ` (${e.code})` : ''}; choose another metricsPort (0 = any free port, -1 = off)`,
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const bound = (server.address() as { port: number }).port;
  const shown = host === '0.0.0.0' || host === '::' ? hostname() : host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${bound}/`,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
