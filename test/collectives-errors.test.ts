/**
 * A misbehaving peer makes the pending collective reject with a clear error
 * instead of hanging: malformed frames, another job, a wrong sequence number,
 * a stranger's rank, a short chunk, silence, unequal lengths; and one failure
 * travels round the ring to the other ranks.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { bindInbox, Ring, type RingOptions } from '../src/collectives/ring.js';
import { CollectiveError } from '../src/collectives/errors.js';
import { decode, encode } from '../src/protocol/codec.js';
import { dataLink, PLAIN_TRANSPORT, type DataInbox, type DataLink } from '../src/protocol/sockets.js';

const JOB = 'job-a';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** Rank 1 of a 2-rank ring played by the test: raw sockets, answers the connect round, then does as told. */
async function ringWithRogue(opts: Partial<RingOptions> = {}): Promise<{ ring: Ring; rogueInbox: DataInbox; rogueLink: DataLink }> {
  const mine = await bindInbox();
  const rogue = await bindInbox();
  // The rogue holds rank 1's routing id (the default ids: rank 0's inbox accepts only it).
  const rogueLink = dataLink(PLAIN_TRANSPORT, undefined, { linger: 0, routingId: `${JOB}/ring/1` });
  rogueLink.connect(mine.address);
  cleanups.push(() => {
    rogueLink.close();
    rogue.inbox.close();
    mine.inbox.close();
    mine.release();
    rogue.release();
  });
  const connecting = Ring.connect({ job: JOB, rank: 0, world: 2, peers: [mine.address, rogue.address], inbox: mine.inbox, timeoutMs: 5000, ...opts });
  await rogueLink.send(encode('ring', { job: JOB, step: 0, rank: 1 }, { op: 'connect', seq: 0, chunk: 0, slot: 1 }));
  const hello = decode((await rogue.inbox.receive()).slice(1), { job: JOB });
  expect(hello.ok).toBe(true);
  const ring = await connecting;
  cleanups.push(() => ring.close());
  return { ring, rogueInbox: rogue.inbox, rogueLink };
}

const ring1 = (body: { op: string; seq: number; chunk: number; slot: number }, data?: Float32Array | Int32Array, env: { job?: string; rank?: number } = {}) =>
  encode('ring', { job: env.job ?? JOB, step: 0, rank: env.rank ?? 1 }, body, data ? [{ name: 'data', data }] : []);

async function expectFailure(p: Promise<unknown>, code: string, pattern: RegExp): Promise<CollectiveError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CollectiveError);
  expect((err as CollectiveError).code).toBe(code);
  expect((err as CollectiveError).message).toMatch(pattern);
  return err as CollectiveError;
}

describe('a misbehaving left neighbour fails the op with a clear error', () => {
  it('malformed frame', async () => {
    const { ring, rogueLink } = await ringWithRogue();
    const op = ring.allReduce(new Float32Array(10));
    await rogueLink.send([Buffer.from('definitely not msgpack \xc1')]);
    await expectFailure(op, 'protocol', /allreduce #1 on rank 0: bad message from an unknown sender: undecodable-header/);
  });

  it('a message of another job', async () => {
    const { ring, rogueLink } = await ringWithRogue();
    const op = ring.allReduce(new Float32Array(10));
    await rogueLink.send(ring1({ op: 'allreduce', seq: 1, chunk: 0, slot: 10 }, new Float32Array(5), { job: 'job-b' }));
    await expectFailure(op, 'protocol', /wrong-job: message for job "job-b", this is job "job-a"/);
  });

  it('a wrong sequence number (collectives called in another order)', async () => {
    const { ring, rogueLink } = await ringWithRogue();
    const op = ring.allReduce(new Float32Array(10));
    await rogueLink.send(ring1({ op: 'allreduce', seq: 2, chunk: 0, slot: 10 }, new Float32Array(5)));
    await expectFailure(op, 'protocol', /rank 1 sent allreduce #2 where allreduce #1 was due/);
  });

  it('a wrong op', async () => {
    const { ring, rogueLink } = await ringWithRogue();
    const op = ring.allReduce(new Float32Array(10));
    await rogueLink.send(ring1({ op: 'allgather', seq: 1, chunk: 0, slot: 10 }, new Float32Array(10)));
    await expectFailure(op, 'protocol', /rank 1 sent 'allgather' where 'allreduce' was due/);
  });

  it('a message from a rank that is not the left neighbour', async () => {
    const { ring, rogueLink } = await ringWithRogue();
    const op = ring.allReduce(new Float32Array(10));
    await rogueLink.send(ring1({ op: 'allreduce', seq: 1, chunk: 0, slot: 10 }, new Float32Array(5), { rank: 0 }));
    await expectFailure(op, 'protocol', /message from rank 0, but only the left neighbour rank 1 sends to this inbox/);
  });

  it('a chunk of the wrong size or type, and chunks out of order', async () => {
    {
      const { ring, rogueLink } = await ringWithRogue();
      const op = ring.allReduce(new Float32Array(10));
      await rogueLink.send(ring1({ op: 'allreduce', seq: 1, chunk: 0, slot: 10 }, new Float32Array(3)));
      await expectFailure(op, 'protocol', /chunk 0 from rank 1 has 3 elements, 5 expected/);
    }
    {
      const { ring, rogueLink } = await ringWithRogue();
      const op = ring.allReduce(new Float32Array(10));
      await rogueLink.send(ring1({ op: 'allreduce', seq: 1, chunk: 0, slot: 10 }, new Int32Array(5)));
      await expectFailure(op, 'protocol', /chunk 0 from rank 1 is int32, this rank's array is float32/);
    }
    {
      const { ring, rogueLink } = await ringWithRogue({ chunkBytes: 8 });
      const op = ring.allReduce(new Float32Array(10));
      await rogueLink.send(ring1({ op: 'allreduce', seq: 1, chunk: 1, slot: 10 }, new Float32Array(2)));
      await expectFailure(op, 'protocol', /chunk 1 from rank 1 where chunk 0 was due/);
    }
  });

  it('silence: the op times out naming the silent neighbour', async () => {
    const { ring } = await ringWithRogue({ timeoutMs: 300 });
    const t0 = Date.now();
    await expectFailure(ring.barrier(), 'timeout', /barrier #1 on rank 0: nothing from left neighbour rank 1 \(tcp:\/\/127\.0\.0\.1:\d+\) for 300 ms/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('after a failure the ring is broken: later ops fail at once, and the right neighbour is told', async () => {
    const { ring, rogueLink, rogueInbox } = await ringWithRogue();
    const op = ring.allGather(new Int32Array(4));
    await rogueLink.send([Buffer.from([1, 2, 3])]);
    await expectFailure(op, 'protocol', /bad message/);
    await expectFailure(ring.barrier(), 'broken', /barrier #2 on rank 0: the ring is broken by an earlier failure \(allgather #1/);
    // The rogue (rank 0's right neighbour) got rank 0's data, then an error message saying why.
    for (;;) {
      const res = decode((await rogueInbox.receive()).slice(1), { job: JOB });
      expect(res.ok).toBe(true);
      if (res.ok && res.msg.header.type === 'error') {
        expect(res.msg.header.body.message).toMatch(/allgather #1 on rank 0: bad message/);
        break;
      }
    }
  });
});

describe('real rings in one process', () => {
  async function rings(world: number, timeoutMs = 5000): Promise<Ring[]> {
    const bound = await Promise.all(Array.from({ length: world }, () => bindInbox()));
    const peers = bound.map((b) => b.address);
    const rs = await Promise.all(bound.map((b, rank) => Ring.connect({ job: JOB, rank, world, peers, inbox: b.inbox, timeoutMs })));
    cleanups.push(async () => {
      await Promise.all(rs.map((r) => r.close()));
      bound.forEach((b) => b.inbox.close());
    });
    return rs;
  }

  it('allGather of unequal lengths names the ranks and their lengths', async () => {
    const [r0, r1] = await rings(2);
    const results = await Promise.allSettled([r0!.allGather(new Float32Array(10)), r1!.allGather(new Float32Array(12))]);
    const messages = results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'resolved'));
    expect(messages[0]).toMatch(/allgather #1: rank 1 passed 12 elements but rank 0 passed 10; all ranks must pass arrays of equal length/);
    expect(messages[1]).toMatch(/allgather #1: rank 0 passed 10 elements but rank 1 passed 12/);
  });

  it('one rank failing makes the others fail fast with the reason, not time out', async () => {
    const rs = await rings(3, 10_000);
    const t0 = Date.now();
    // rank 2 passes a different length: rank 0 (its right neighbour) detects it; the abort travels 0 → 1 → 2.
    const results = await Promise.allSettled(rs.map((r, rank) => r.allReduce(new Float32Array(rank === 2 ? 9 : 8))));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    const errs = results.map((r) => (r as PromiseRejectedResult).reason as CollectiveError);
    expect(errs[0]!.code).toBe('mismatch');
    expect(errs[0]!.message).toMatch(/rank 2 passed 9 elements but rank 0 passed 8/);
    expect(errs.some((e) => e.code === 'aborted' && /rank \d aborted: .*rank 2 passed 9 elements/.test(e.message))).toBe(true);
  });

  it("usage errors reject without breaking the ring: int32 'mean', root out of range", async () => {
    const [r0, r1] = await rings(2);
    await expectFailure(r0!.allReduce(new Int32Array(4), 'mean'), 'usage', /'mean' is defined for float32 arrays only/);
    await expectFailure(r1!.allReduce(new Int32Array(4), 'mean'), 'usage', /'mean'/);
    await expectFailure(r0!.broadcast(new Float32Array(4), 2), 'usage', /root 2 out of range for world 2/);
    await expectFailure(r1!.broadcast(new Float32Array(4), 2), 'usage', /root 2 out of range/);
    const a = new Int32Array([1, 2]);
    const b = new Int32Array([10, 20]);
    await Promise.all([r0!.allReduce(a), r1!.allReduce(b)]);
    expect([...a]).toEqual([11, 22]);
    expect([...b]).toEqual([11, 22]);
  });

  it('close(): later ops fail with code closed', async () => {
    const [r0] = await rings(2);
    await r0!.close();
    await expectFailure(r0!.barrier(), 'closed', /the ring is closed/);
  });
});
