/**
 * Collects one step's per-row softmax statistics from every shard, checks that
 * all workers agree on the batch, and reduces them to the global
 * log-sum-exp per row and the loss (the arithmetic lives in ops).
 */
import type { MessageOf, ProtocolErrorCode } from '../protocol/index.js';
import { reduceSoftmaxStats, type ShardStats } from '../ops/softmax-reduce.js';

export type AddResult = { ok: true } | { ok: false; code: ProtocolErrorCode; message: string; fatal: boolean };

export class SoftmaxReduction {
  private readonly parts = new Map<number, ShardStats>();
  private readonly extraLoss = new Map<number, Float32Array>();
  private batch: { rank: number; batch: number; rows: number } | null = null;

  constructor(private readonly world: number) {}

  get complete(): boolean {
    return this.parts.size === this.world;
  }

  add(rank: number, msg: MessageOf<'softmax-stats'>): AddResult {
    const { rows, batch } = msg.header.body;
    if (this.parts.has(rank)) return { ok: false, code: 'bad-field', message: `rank ${rank} sent softmax-stats twice in one step`, fatal: false };
    if (rows !== batch * this.world)
      return { ok: false, code: 'batch-mismatch', message: `rank ${rank}: ${rows} gathered rows but batch ${batch} × ${this.world} workers = ${batch * this.world}`, fatal: true };
    if (this.batch && this.batch.batch !== batch)
      return {
        ok: false,
        code: 'batch-mismatch',
        message: `workers disagree on the per-worker batch size: rank ${this.batch.rank} has ${this.batch.batch}, rank ${rank} has ${batch}; every worker must use the same batch each step`,
        fatal: true,
      };
    const t = msg.tensors;
    for (const name of ['rowMax', 'sumExp', 'target', 'owned'] as const) {
      const a = t[name];
      if (!a) return { ok: false, code: 'bad-field', message: `softmax-stats from rank ${rank} lacks tensor ${name}`, fatal: true };
      if (a.length !== rows) return { ok: false, code: 'shape-mismatch', message: `softmax-stats from rank ${rank}: ${name} has ${a.length} rows, expected ${rows}`, fatal: true };
    }
    if (!(t.rowMax instanceof Float32Array) || !(t.sumExp instanceof Float32Array) || !(t.target instanceof Float32Array) || !(t.owned instanceof Uint8Array))
      return { ok: false, code: 'bad-field', message: `softmax-stats from rank ${rank}: rowMax/sumExp/target must be float32 and owned uint8`, fatal: true };
    // optional: a per-row loss term outside the softmax (MagFace's λ_g·g(a_i)), summed over shards
    const extra = t.rowLossExtra;
    if (extra !== undefined && (!(extra instanceof Float32Array) || extra.length !== rows))
      return { ok: false, code: 'shape-mismatch', message: `softmax-stats from rank ${rank}: rowLossExtra must be float32 with ${rows} rows`, fatal: true };
    this.batch ??= { rank, batch, rows };
    this.parts.set(rank, { rowMax: t.rowMax, sumExp: t.sumExp, target: t.target, owned: t.owned });
    if (extra) this.extraLoss.set(rank, extra);
    return { ok: true };
  }

  reduce(): { logSumExp: Float32Array; loss: number } {
    const ordered = [...this.parts.entries()].sort((a, b) => a[0] - b[0]).map(([, p]) => p);
    // NaN statistics (a diverged model): a NaN loss for every worker, whose numerical guard skips the step
    if (ordered.some(hasNaN)) return { logSumExp: new Float32Array(this.batch?.rows ?? 0).fill(Number.NaN), loss: Number.NaN };
    const r = reduceSoftmaxStats(ordered);
    let extra = 0;
    for (const [, e] of [...this.extraLoss.entries()].sort((a, b) => a[0] - b[0])) for (let i = 0; i < e.length; i++) extra += e[i]!;
    return { logSumExp: r.logSumExp, loss: r.loss + (r.logSumExp.length > 0 ? extra / r.logSumExp.length : 0) };
  }
}

/** NaN anywhere in a shard's statistics, or an infinite sum of exponentials. */
function hasNaN(p: ShardStats): boolean {
  const bad = (a: Float32Array, inf: boolean) => a.some((v) => Number.isNaN(v) || (inf && v === Infinity));
  return bad(p.rowMax, false) || bad(p.target, false) || bad(p.sumExp, true);
}
