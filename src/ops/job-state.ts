/**
 * Job-wide state that a training method keeps across steps and that must be
 * ONE value for the whole job (CurricularFace's stage indicator t is the
 * first): a pure reducer the coordinator runs generically, once per step,
 * from quantities it reduces over the global batch anyway. It broadcasts the
 * state to every worker as `extras` and saves it in checkpoint manifests
 * (`lossState`). Nothing here needs TensorFlow.js: the coordinator imports it.
 */
import { curricularNextT } from './softmax-reduce.js';

/** What the coordinator reduces over the global batch in a step, for a reducer to read. */
export interface StepQuantities {
  /** Mean over all gathered rows of the un-margined target cosine (the target-cosine exchange). */
  meanTargetCos: number;
}

/** Which exchange supplies a reducer's input; the coordinator accepts that exchange only when a reducer needs it. */
export type JobStateInput = 'target-cosines';

export type JobState = Readonly<Record<string, number>>;

export interface JobStateReducer {
  /** For messages: whose state this is. */
  readonly owner: string;
  readonly input: JobStateInput;
  /** The state before the first step (or as restored from a checkpoint). */
  readonly initial: JobState;
  /** The state after one step; pure. */
  update(state: JobState, q: StepQuantities): JobState;
}

/** The manifest / `extras` key of CurricularFace's t. */
export const CURRICULAR_T = 'curricularT';

/**
 * CurricularFace's t ← emaWeight·mean c_{i,y_i} + (1 − emaWeight)·t, updated
 * BEFORE the step's logits use it. Throws naming the config key on a bad value.
 */
export function curricularJobState(s: { t: number; emaWeight: number }): JobStateReducer {
  if (!Number.isFinite(s.t)) throw new Error(`curricular.t: must be a finite number, got ${s.t}`);
  if (!(s.emaWeight >= 0 && s.emaWeight <= 1)) throw new Error(`curricular.emaWeight: must be in [0, 1], got ${s.emaWeight}`);
  return {
    owner: 'CurricularFace',
    input: 'target-cosines',
    initial: { [CURRICULAR_T]: s.t },
    update: (state, q) => ({ [CURRICULAR_T]: curricularNextT(state[CURRICULAR_T]!, q.meanTargetCos, s.emaWeight) }),
  };
}
