/**
 * Choosing the transport of the bulk collectives (`collectiveTransport`):
 * shared memory when every worker shares its host with others, else the
 * ZeroMQ ring. Every rank must make the same choice, so the choice is agreed
 * over the ring: local rank 0 creates the segment, its name and pid travel to
 * the others in an all-gather, each peer maps it, and a second all-gather says
 * whether every rank succeeded. Only then is shared memory used (and the name
 * unlinked at once); any failure anywhere falls every rank back to TCP — or,
 * with `collectiveTransport: shm`, fails the job naming the rank and reason.
 */
import { randomBytes } from 'node:crypto';
import type { DataInbox, Transport } from '../protocol/sockets.js';
import { ringCollectives, type Collectives } from './collectives.js';
import { CollectiveError } from './errors.js';
import { Ring } from './ring.js';
import { ShmCollectives } from './shm-collectives.js';
import { newNonce, removeStaleSegments, segmentName, ShmSegment } from './shm-segment.js';

export const TRANSPORT_CHOICES = ['auto', 'shm', 'tcp'] as const;
export type TransportChoice = (typeof TRANSPORT_CHOICES)[number];

export interface HostLayout {
  /** Workers per host (L), equal on every host. */
  local: number;
  hosts: number;
  localRank: number;
  hostIndex: number;
}

/**
 * Where this rank sits among the hosts, or why shared memory cannot serve this
 * job: hierarchical collectives need every host to hold the same number of
 * consecutive ranks (the coordinator assigns ranks host by host).
 */
export function hostLayout(hosts: string[], rank: number): HostLayout | { why: string } {
  const world = hosts.length;
  if (world < 2) return { why: 'a single worker' };
  const order: string[] = [];
  for (let r = 0; r < world; r++) {
    const h = hosts[r]!;
    if (order[order.length - 1] !== h) {
      if (order.includes(h)) return { why: `the ranks of host ${h} are not consecutive` };
      order.push(h);
    }
  }
  const local = world / order.length;
  if (!Number.isInteger(local) || order.some((h) => hosts.filter((x) => x === h).length !== local))
    return { why: `hosts hold different numbers of workers (${order.map((h) => hosts.filter((x) => x === h).length).join(', ')})` };
  if (local < 2) return { why: 'no two workers share a host' };
  return { local, hosts: order.length, localRank: rank % local, hostIndex: Math.floor(rank / local) };
}

export interface OpenCollectivesOptions {
  ring: Ring;
  job: string;
  rank: number;
  world: number;
  /** Host of every rank, index = rank (welcome.hosts). */
  hosts: string[];
  choice: TransportChoice;
  /** Bytes of one slot: the largest array moved in one piece (larger ones go in pieces). */
  slotBytes: number;
  /** A same-host peer whose progress stalls this long fails the op (the worker timeout); −1: never. */
  timeoutMs: number;
  /** Bytes of one all-reduce piece (shm-collectives.ts); default 4 MiB. */
  pieceBytes?: number;
  /**
   * Jobs over several hosts: binds an inbox for the ring among equal local
   * ranks (the middle step of the hierarchical all-reduce); called only then.
   * Without it such jobs use the TCP ring throughout.
   */
  bindCrossInbox?: () => Promise<{ inbox: DataInbox; address: string; release: () => void }>;
  /** CURVE keys and frame limit for the cross-host ring, and every rank's inbox key (as for the job's ring). */
  transport?: Transport;
  peerKeys?: string[];
  /** Told once what was chosen and why; `removed` lists stale segments of dead runs this rank deleted. */
  onChoice?: (info: { transport: 'shm' | 'tcp'; reason: string; removed: string[] }) => void;
}

const WORDS = 6;

/** The collectives for bulk data, on the transport every rank agreed on. */
export async function openCollectives(o: OpenCollectivesOptions): Promise<Collectives> {
  const tcp = (reason: string, removed: string[] = []): Collectives => {
    o.onChoice?.({ transport: 'tcp', reason, removed });
    return ringCollectives(o.ring);
  };
  if (o.choice === 'tcp') return tcp('collectiveTransport is tcp');
  const layout = hostLayout(o.hosts, o.rank);
  if ('why' in layout) {
    if (o.choice === 'shm') throw new CollectiveError('usage', `collectiveTransport is shm, but shared memory cannot serve this job: ${layout.why}`);
    return tcp(`shared memory not applicable: ${layout.why}`);
  }
  if (layout.hosts > 1 && !o.bindCrossInbox) {
    if (o.choice === 'shm') throw new CollectiveError('usage', `collectiveTransport is shm, but the job spans ${layout.hosts} hosts and no inbox for the cross-host ring was given`);
    return tcp(`the job spans ${layout.hosts} hosts and no inbox for the cross-host ring was given`);
  }
  const { local, localRank } = layout;
  let segment: ShmSegment | null = null;
  let problem = '';
  let removed: string[] = [];
  const nonce = newNonce();
  const unlinkAtExit = () => segment?.unlink();
  // Round 1: local rank 0 creates the segment and tells its name (the nonce) and pid.
  const mine = new Int32Array(WORDS);
  if (localRank === 0) {
    removed = removeStaleSegments().map((s) => s.name);
    try {
      segment = ShmSegment.create(o.job, nonce, local, o.slotBytes);
      process.once('exit', unlinkAtExit);
      mine[0] = 1;
      mine[1] = process.pid;
      const b = Buffer.from(nonce, 'hex');
      for (let k = 0; k < 4; k++) mine[2 + k] = b.readInt32LE(4 * k);
    } catch (e) {
      problem = (e as Error).message;
    }
  }
  try {
    const all = await o.ring.allGather(mine);
    const leader = (o.rank - localRank) * WORDS;
    if (localRank !== 0) {
      if (all[leader] !== 1) problem = `local rank 0 (rank ${o.rank - localRank}) could not create the segment`;
      else {
        const b = Buffer.alloc(16);
        for (let k = 0; k < 4; k++) b.writeInt32LE(all[leader + 2 + k]!, 4 * k);
        try {
          segment = ShmSegment.open(segmentName(o.job, b.toString('hex')), all[leader + 1]!, local, localRank);
        } catch (e) {
          problem = (e as Error).message;
        }
      }
    }
    // Round 2: did every rank map it?
    const ok = await o.ring.allGather(Int32Array.of(segment ? 1 : 0));
    const failed = [...ok].flatMap((v, r) => (v === 1 ? [] : [r]));
    if (localRank === 0) segment?.unlink(); // everyone has mapped it (or given up): no name left behind
    process.off('exit', unlinkAtExit);
    if (failed.length > 0 || !segment) {
      const why = problem ? `rank ${o.rank}: ${problem}` : `shared memory failed on rank${failed.length > 1 ? 's' : ''} ${failed.join(', ')}`;
      if (o.choice === 'shm') throw new CollectiveError('usage', `collectiveTransport is shm, but ${why}`);
      return tcp(why, removed);
    }
  } catch (e) {
    segment?.unlink();
    process.off('exit', unlinkAtExit);
    throw e;
  }
  const cross = layout.hosts > 1 ? await crossRing(o, layout) : null;
  const hostsNote = layout.hosts > 1 ? `, hierarchical over ${layout.hosts} hosts` : '';
  o.onChoice?.({ transport: 'shm', reason: `${local} workers on this host share ${segment.slotBytes * local + 4096} bytes of shared memory${hostsNote}`, removed });
  return new ShmCollectives({
    segment,
    rank: o.rank,
    world: o.world,
    local,
    localRank,
    hosts: layout.hosts,
    cross: cross?.ring ?? null,
    ring: o.ring,
    timeoutMs: o.timeoutMs,
    pieceBytes: o.pieceBytes,
    onClose: cross?.close,
  });
}

/** Bytes of one rank's entry in the cross-ring exchange: its inbox address and link id, UTF-8. */
const CROSS_ENTRY_BYTES = 512;

/**
 * The ring among the ranks with this local rank on every host: each binds an
 * inbox, and address and a fresh random link id travel in one all-gather on the
 * job's ring (so they are as private as the ring itself).
 */
async function crossRing(o: OpenCollectivesOptions, layout: HostLayout): Promise<{ ring: Ring; close: () => Promise<void> }> {
  const bound = await o.bindCrossInbox!();
  try {
    const id = randomBytes(16).toString('hex');
    const entry = Buffer.from(`${bound.address}\n${id}`, 'utf8');
    if (entry.length > CROSS_ENTRY_BYTES) throw new CollectiveError('usage', `cross-host inbox address too long: ${bound.address}`);
    const mine = new Int32Array(CROSS_ENTRY_BYTES / 4);
    Buffer.from(mine.buffer).set(entry);
    const all = await o.ring.allGather(mine);
    const entryOf = (r: number) => {
      const bytes = Buffer.from(all.buffer, all.byteOffset + r * CROSS_ENTRY_BYTES, CROSS_ENTRY_BYTES);
      const end = bytes.indexOf(0);
      const [address = '', linkId = ''] = bytes
        .subarray(0, end < 0 ? CROSS_ENTRY_BYTES : end)
        .toString('utf8')
        .split('\n');
      return { address, linkId };
    };
    const members = Array.from({ length: layout.hosts }, (_, h) => h * layout.local + layout.localRank);
    const left = members[(layout.hostIndex - 1 + layout.hosts) % layout.hosts]!;
    const ring = await Ring.connect({
      job: o.job,
      rank: layout.hostIndex,
      world: layout.hosts,
      peers: members.map((r) => entryOf(r).address),
      inbox: bound.inbox,
      timeoutMs: -1,
      connectTimeoutMs: o.timeoutMs > 0 ? o.timeoutMs : undefined,
      transport: o.transport,
      peerKeys: o.peerKeys ? members.map((r) => o.peerKeys![r]!) : undefined,
      ids: { send: id, accept: entryOf(left).linkId },
    });
    return {
      ring,
      close: async () => {
        await ring.close();
        bound.inbox.close();
        bound.release();
      },
    };
  } catch (e) {
    bound.inbox.close();
    bound.release();
    throw e;
  }
}
