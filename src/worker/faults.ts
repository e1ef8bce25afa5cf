/**
 * Fault injection for tests and drills, from the environment variable
 * SHARDFACE_FAULT: a comma-separated list of KIND:rank=R:step=S, where KIND is
 *   nan   this rank's backbone gradients become NaN at that step (the numerical guard must skip it)
 *   kill  this worker process exits abruptly (SIGKILL) at the start of that step
 *   stall this rank waits `ms=M` milliseconds (default 2000) at the start of that step, as a slow step would
 *         (signals and stops arriving mid-step)
 * e.g. SHARDFACE_FAULT=nan:rank=1:step=12,kill:rank=0:step=30,stall:rank=1:step=6:ms=1500. Unset or empty = no faults.
 */
const FAULT_KINDS = ['nan', 'kill', 'stall'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Fault {
  kind: FaultKind;
  rank: number;
  step: number;
  /** stall only: how long (ms). */
  ms?: number;
}

/** Parses SHARDFACE_FAULT; throws naming the entry and what is wrong with it. */
export function parseFaults(value: string | undefined): Fault[] {
  if (value === undefined || value.trim() === '') return [];
  return value.split(',').map((entry) => {
    const bad = (why: string) => new Error(`SHARDFACE_FAULT entry ${JSON.stringify(entry)}: ${why} (expected KIND:rank=R:step=S with KIND ${FAULT_KINDS.join(' or ')}, e.g. nan:rank=1:step=12)`);
    const [kind, ...fields] = entry.trim().split(':');
    if (!(FAULT_KINDS as readonly string[]).includes(kind ?? '')) throw bad(`unknown kind ${JSON.stringify(kind)}`);
    const got: Partial<Record<'rank' | 'step' | 'ms', number>> = {};
    for (const f of fields) {
      const m = /^(rank|step|ms)=(\d+)$/.exec(f);
      if (!m) throw bad(`${JSON.stringify(f)} is not rank=N or step=N (or ms=N for stall) with N a non-negative integer`);
      const key = m[1] as 'rank' | 'step' | 'ms';
      if (got[key] !== undefined) throw bad(`${key} given twice`);
      got[key] = Number(m[2]);
    }
    if (got.rank === undefined || got.step === undefined) throw bad(`needs both rank= and step=`);
    if (got.step < 1) throw bad('step must be ≥ 1');
    if (got.ms !== undefined && kind !== 'stall') throw bad('ms= belongs to stall only');
    return { kind: kind as FaultKind, rank: got.rank, step: got.step, ...(kind === 'stall' ? { ms: got.ms ?? 2000 } : {}) };
  });
}

/** How long this rank stalls at the start of this step (0: no stall fault). */
export function stallAt(faults: readonly Fault[], rank: number, step: number): number {
  return faults.find((f) => f.kind === 'stall' && f.rank === rank && f.step === step)?.ms ?? 0;
}

/** Whether a fault of `kind` is planned for this rank at this step. */
export function faultAt(faults: readonly Fault[], kind: FaultKind, rank: number, step: number): boolean {
  return faults.some((f) => f.kind === kind && f.rank === rank && f.step === step);
}
