/**
 * CurricularFace's preliminary exchange on the coordinator (docs/methods.md#curricularface-forward step 5):
 * collects one step's target cosines from every shard (each row from the shard
 * that owns its label), and advances the job-wide stage indicator
 *
 *   t ← emaWeight·mean_i c_{i,y_i} + (1 − emaWeight)·t
 *
 * over the GLOBAL batch, before any shard modulates a logit. The coordinator
 * keeps t as a generic job-wide state (src/ops/job-state.ts), in one place, so
 * every worker gets the same value; it is saved with checkpoints (manifest
 * `lossState`) and can be restored with `curricular.t`.
 */
import type { MessageOf } from '../protocol/index.js';
import { reduceTargetCosines } from '../ops/softmax-reduce.js';
import { CURRICULAR_T, curricularJobState, type JobState, type JobStateReducer } from '../ops/job-state.js';
import type { AddResult } from './softmax-reduction.js';

/**
 * The stage indicator t alone, advanced batch by batch: a stateful view of
 * curricularJobState for callers that follow t outside a job (the
 * coordinator itself runs the reducer generically, src/ops/job-state.ts).
 */
export class CurricularStage {
  private readonly reducer: JobStateReducer;
  private state: JobState;

  constructor(t: number, emaWeight: number) {
    this.reducer = curricularJobState({ t, emaWeight });
    this.state = this.reducer.initial;
  }

  /** The current t (after the last completed update). */
  get t(): number {
    return this.state[CURRICULAR_T]!;
  }

  /** Moves t by one batch whose mean un-margined target cosine is `meanTargetCos`; returns the new t. */
  advance(meanTargetCos: number): number {
    this.state = this.reducer.update(this.state, { meanTargetCos });
    return this.t;
  }
}

export class TargetReduction {
  private readonly parts = new Map<number, { targetCos: Float32Array; owned: Uint8Array }>();
  private rows: { rank: number; rows: number } | null = null;

  constructor(private readonly world: number) {}

  get complete(): boolean {
    return this.parts.size === this.world;
  }

  add(rank: number, msg: MessageOf<'target-stats'>): AddResult {
    const { rows, batch } = msg.header.body;
    if (this.parts.has(rank)) return { ok: false, code: 'bad-field', message: `rank ${rank} sent target-stats twice in one step`, fatal: false };
    if (rows !== batch * this.world)
      return { ok: false, code: 'batch-mismatch', message: `rank ${rank}: ${rows} gathered rows but batch ${batch} × ${this.world} workers = ${batch * this.world}`, fatal: true };
    if (this.rows && this.rows.rows !== rows)
      return { ok: false, code: 'batch-mismatch', message: `workers disagree on the gathered rows: rank ${this.rows.rank} has ${this.rows.rows}, rank ${rank} has ${rows}`, fatal: true };
    const { targetCos, owned } = msg.tensors;
    if (!(targetCos instanceof Float32Array) || !(owned instanceof Uint8Array))
      return { ok: false, code: 'bad-field', message: `target-stats from rank ${rank} needs tensors targetCos (float32) and owned (uint8)`, fatal: true };
    if (targetCos.length !== rows || owned.length !== rows)
      return { ok: false, code: 'shape-mismatch', message: `target-stats from rank ${rank}: targetCos/owned have ${targetCos.length}/${owned.length} rows, expected ${rows}`, fatal: true };
    this.rows ??= { rank, rows };
    this.parts.set(rank, { targetCos, owned });
    return { ok: true };
  }

  /** Every row's target cosine (rank order of the parts does not matter: each row has one owner) and their mean. */
  reduce(): { targetCos: Float32Array; mean: number } {
    return reduceTargetCosines([...this.parts.entries()].sort((a, b) => a[0] - b[0]).map(([, p]) => p));
  }
}
