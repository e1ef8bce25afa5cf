/**
 * Fault injection for tests and drills, from the environment variable
 * SHARDFACE_FAULT: a comma-separated list of KIND:rank=R:step=S, where KIND is
 *   nan   this rank's backbone gradients become NaN at that step (the numerical guard must skip it)
 *   kill  this worker process exits abruptly (SIGKILL) at the start of that step
 *   stall this rank waits `ms=M` milliseconds (default 2000) at the start of that step, as a slow step would
 *         (signals and stops arriving mid-step)
 * e.g. SHARDFACE_FAULT=nan:rank=1:step=12,kill:rank=0:step=30,stall:rank=1:step=6:ms=1500. Unset or empty = no faults.
 *
 * A fault fires in one round of the job only: with `maxRestarts` the job goes
 * on after a failure from its newest checkpoint, redoing steps, and every
 * process (the replacement included) sees the same environment. An optional
 * `restart=N` (default 0, the first round) names the round: the coordinator
 * tells each worker how many restarts came before (welcome config `restarts`),
 * so `kill:rank=1:step=30` kills once, and `kill:rank=1:step=30:restart=1`
 * kills again after the first restart.
 */
const FAULT_KINDS = ['nan', 'kill', 'stall'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Fault {
  kind: FaultKind;
  rank: number;
  step: number;
  /** stall only: how long (ms). */
  ms?: number;
  /** The round it fires in: the number of restarts before it. */
  restart: number;
}

/** Parses SHARDFACE_FAULT; throws naming the entry and what is wrong with it. */
export function parseFaults(value: string | undefined): Fault[] {
  if (value === undefined || value.trim() === '') return [];
  return value.split(',').map((entry) => {
    const bad = (why: string) =>
      new Error(`SHARDFACE_FAULT entry ${JSON.stringify(entry)}: ${why} (expected KIND:rank=R:step=S[:restart=N] with KIND ${FAULT_KINDS.join(' or ')}, e.g. nan:rank=1:step=12)`);
    const [kind, ...fields] = entry.trim().split(':');
    if (!(FAULT_KINDS as readonly string[]).includes(kind ?? '')) throw bad(`unknown kind ${JSON.stringify(kind)}`);
    const got: Partial<Record<'rank' | 'step' | 'ms' | 'restart', number>> = {};
    for (const f of fields) {
      const m = /^(rank|step|ms|restart)=(\d+)$/.exec(f);
      if (!m) throw bad(`${JSON.stringify(f)} is not rank=N, step=N, restart=N (or ms=N for stall) with N a non-negative integer`);
      const key = m[1] as 'rank' | 'step' | 'ms' | 'restart';
      if (got[key] !== undefined) throw bad(`${key} given twice`);
      got[key] = Number(m[2]);
    }
    if (got.rank === undefined || got.step === undefined) throw bad(`needs both rank= and step=`);
    if (got.step < 1) throw bad('step must be ≥ 1');
    if (got.ms !== undefined && kind !== 'stall') throw bad('ms= belongs to stall only');
    return { kind: kind as FaultKind, rank: got.rank, step: got.step, restart: got.restart ?? 0, ...(kind === 'stall' ? { ms: got.ms ?? 2000 } : {}) };
  });
}

/** How long this rank stalls at the start of this step, in the round after `restarts` restarts (0: no stall fault). */
export function stallAt(faults: readonly Fault[], rank: number, step: number, restarts = 0): number {
  return faults.find((f) => f.kind === 'stall' && f.rank === rank && f.step === step && f.restart === restarts)?.ms ?? 0;
}

/** Whether a fault of `kind` is planned for this rank at this step, in the round after `restarts` restarts. */
export function faultAt(faults: readonly Fault[], kind: FaultKind, rank: number, step: number, restarts = 0): boolean {
  return faults.some((f) => f.kind === kind && f.rank === rank && f.step === step && f.restart === restarts);
}
