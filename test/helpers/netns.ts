/**
 * Throw-away Linux network namespaces joined by veth pairs to a bridge in a
 * "switch" namespace of their own: a small cluster of hosts on 198.18.0.0/24
 * (the benchmarking range, never routed), reachable only from inside.
 * Needs root and iproute2; `netnsUnavailable()` says why not.
 */
import { execFileSync, spawnSync } from 'node:child_process';

export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `\`ip netns\` unavailable (${r.error?.message ?? r.stderr.trim()}); install iproute2`;
  return null;
}

export interface Host {
  /** Namespace name; run a command in it with `ip netns exec NAME …`. */
  ns: string;
  ip: string;
  /** The switch-side end of this host's link (cut it to isolate the host). */
  port: string;
}

export interface Cluster {
  hosts: Host[];
  /** Takes a host's link down: packets to and from it are dropped from now on. */
  cut(host: Host): void;
  /** Deletes every namespace (and with them their links); safe to call twice. */
  destroy(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** `n` hosts 198.18.0.1 … 198.18.0.n, in namespaces whose names start with a unique prefix. */
export function createCluster(n: number): Cluster {
  const prefix = `sf${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const sw = `${prefix}-sw`;
  const created: string[] = [];
  const destroy = () => {
    while (created.length) spawnSync('ip', ['netns', 'del', created.pop()!]);
  };
  try {
    ip('netns', 'add', sw);
    created.push(sw);
    ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', sw, 'link', 'set', 'br0', 'up');
    const hosts: Host[] = [];
    for (let i = 1; i <= n; i++) {
      const ns = `${prefix}-h${i}`;
      ip('netns', 'add', ns);
      created.push(ns);
      const port = `p${i}`;
      ip('-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip('-n', sw, 'link', 'set', port, 'master', 'br0');
      ip('-n', sw, 'link', 'set', port, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `198.18.0.${i}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      hosts.push({ ns, ip: `198.18.0.${i}`, port });
    }
    return { hosts, cut: (h) => ip('-n', sw, 'link', 'set', h.port, 'down'), destroy };
  } catch (e) {
    destroy();
    throw e;
  }
}
