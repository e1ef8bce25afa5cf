/**
 * Who is in the job: registration, rank assignment and liveness. Pure state;
 * the coordinator process does the I/O around it.
 */
import type { Bodies } from '../protocol/index.js';
import { parseTcpEndpoint } from '../protocol/endpoint.js';

export interface Member {
  /** ZeroMQ routing id of the worker's control socket. */
  id: Uint8Array;
  key: string;
  /** Assigned rank, or null until every worker has registered. */
  rank: number | null;
  requestedRank: number | null;
  host: string;
  pid: number;
  dataAddress: string;
  device: string;
  backend: string;
  /** The worker's CURVE public key ('' without CURVE). */
  curveKey: string;
  /** Secret handed out in welcome; binds the worker's heartbeat connection to its rank. */
  session: string;
  lastSeen: number;
  lastStep: number;
  ready: boolean;
  gone: boolean;
}

/**
 * What monitoring (metrics, the status page, which has no authentication) may
 * see of a member: a copy without the socket's routing id and without the
 * credentials (the heartbeat session secret, the CURVE key).
 */
export type MemberView = Omit<Member, 'id' | 'key' | 'session' | 'curveKey'>;

export function memberView(m: Member): MemberView {
  const { id: _id, key: _key, session: _session, curveKey: _curveKey, ...view } = m;
  return { ...view };
}

export type JoinResult = { ok: true; member: Member } | { ok: false; code: 'rank-taken' | 'rank-out-of-range' | 'bad-field'; message: string };

export class Membership {
  private readonly byKey = new Map<string, Member>();

  constructor(readonly world: number) {}

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Member | undefined {
    return this.byKey.get(key);
  }

  members(): Member[] {
    return [...this.byKey.values()];
  }

  join(id: Uint8Array, key: string, requestedRank: number, hello: Bodies['hello'], now: number): JoinResult {
    if (this.byKey.has(key)) return { ok: false, code: 'bad-field', message: `worker ${hello.host}:${hello.pid} registered twice` };
    if (this.byKey.size >= this.world) return { ok: false, code: 'rank-out-of-range', message: `job already has its ${this.world} workers; ${hello.host}:${hello.pid} is one too many` };
    const requested = requestedRank >= 0 ? requestedRank : null;
    if (requested !== null) {
      if (requested >= this.world) return { ok: false, code: 'rank-out-of-range', message: `requested rank ${requested} out of range for world size ${this.world}` };
      const holder = this.members().find((m) => m.requestedRank === requested);
      if (holder) return { ok: false, code: 'rank-taken', message: `rank ${requested} already taken by ${holder.host}:${holder.pid}` };
    }
    const member: Member = {
      id,
      key,
      rank: null,
      requestedRank: requested,
      host: hello.host,
      pid: hello.pid,
      dataAddress: hello.dataAddress,
      device: hello.device,
      backend: hello.backend,
      curveKey: hello.curveKey,
      session: '',
      lastSeen: now,
      lastStep: 0,
      ready: false,
      gone: false,
    };
    this.byKey.set(key, member);
    return { ok: true, member };
  }

  /**
   * Once all have joined: explicit ranks stay; the rest fill the free ranks
   * host by host (hosts in order of their first worker's arrival, workers of a
   * host in arrival order), so the workers of one host hold consecutive ranks
   * and ring neighbours are mostly on the same machine.
   */
  assignRanks(): Member[] {
    const taken = new Set(this.members().flatMap((m) => (m.requestedRank !== null ? [m.requestedRank] : [])));
    const byHost = new Map<string, Member[]>();
    for (const m of this.members()) {
      if (m.requestedRank !== null) {
        m.rank = m.requestedRank;
        continue;
      }
      const host = hostOf(m);
      byHost.set(host, [...(byHost.get(host) ?? []), m]);
    }
    let next = 0;
    for (const group of byHost.values())
      for (const m of group) {
        while (taken.has(next)) next++;
        m.rank = next;
        taken.add(next);
      }
    return this.ranked();
  }

  /** Members ordered by rank (after assignment). */
  ranked(): Member[] {
    return this.members()
      .filter((m) => m.rank !== null)
      .sort((a, b) => a.rank! - b.rank!);
  }

  /** Members silent for longer than `timeoutMs`. */
  silent(now: number, timeoutMs: number): Member[] {
    return this.members().filter((m) => !m.gone && now - m.lastSeen > timeoutMs);
  }
}

/**
 * The machine a worker runs on, as its peers see it: the host part of the data
 * address it advertised (the name in `hello.host` may repeat across machines,
 * e.g. containers, and differ for one machine's interfaces).
 */
export function hostOf(m: Pick<Member, 'dataAddress' | 'host'>): string {
  return parseTcpEndpoint(m.dataAddress)?.host ?? m.host;
}
