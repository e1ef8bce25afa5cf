/**
 * Which training method a config asks for, and where it lives. Free of
 * TensorFlow.js (the method modules load on demand), so the coordinator can
 * ask a method for its job-wide state without loading a backend.
 */
import type { TrainConfig } from '../../config/schema.js';
import { curricularJobState, type JobStateReducer } from '../../ops/job-state.js';
import type { MethodContext, TrainingMethod } from './method.js';

export const METHOD_NAMES = ['fc', 'dcq', 'occlusion'] as const;
export type MethodName = (typeof METHOD_NAMES)[number];

type MethodConfig = Pick<TrainConfig, 'classifier' | 'occlusion' | 'loss' | 'curricular'>;

interface MethodEntry {
  load(): Promise<new (m: MethodContext) => TrainingMethod>;
  /** The job-wide state the coordinator keeps for this method under `cfg`, if any. */
  jobState(cfg: MethodConfig): JobStateReducer | undefined;
}

/** The sharded classifier's heads: CurricularFace keeps t job-wide. */
const classifierJobState = (cfg: MethodConfig) => (cfg.loss === 'curricular' ? curricularJobState(cfg.curricular) : undefined);

const METHODS: Record<MethodName, MethodEntry> = {
  fc: { load: async () => (await import('./fc.js')).FcMethod, jobState: classifierJobState },
  dcq: { load: async () => (await import('./dcq.js')).DcqMethod, jobState: () => undefined },
  occlusion: { load: async () => (await import('./occlusion.js')).OcclusionMethod, jobState: classifierJobState },
};

/** The method entry for a name; throws naming the known methods for any other. */
export function methodEntry(name: string): MethodEntry {
  if (!(METHOD_NAMES as readonly string[]).includes(name)) throw new Error(`unknown training method ${JSON.stringify(name)}; known methods: ${METHOD_NAMES.join(', ')}`);
  return METHODS[name as MethodName];
}

/** The method a config selects: classifier dcq, occlusion adversarial (over fc), else fc. */
export function methodName(cfg: Pick<TrainConfig, 'classifier' | 'occlusion'>): MethodName {
  if (cfg.occlusion === 'adversarial') {
    if (cfg.classifier !== 'fc') throw new Error('occlusion adversarial needs the sharded classifier (classifier fc), not DCQ');
    return 'occlusion';
  }
  return cfg.classifier === 'dcq' ? 'dcq' : 'fc';
}

/** The job-wide state reducer of the config's method (CurricularFace's t), for the coordinator. */
export function methodJobState(cfg: MethodConfig): JobStateReducer | undefined {
  return methodEntry(methodName(cfg)).jobState(cfg);
}

/** Builds the config's method, wrapped in distillation when a teacher is set. */
export async function createTrainingMethod(m: MethodContext): Promise<TrainingMethod> {
  const Method = await methodEntry(methodName(m.cfg)).load();
  const method = new Method(m);
  if (m.cfg.teacher === 'none') return method;
  const { Teacher } = await import('../distillation.js');
  const { DistillationMethod } = await import('./distillation.js');
  try {
    const teacher = await Teacher.load(m.cfg.teacher, m.cfg.distill, m.cfg.distillWeight);
    return new DistillationMethod(method, teacher, m.cfg.batch * m.worker.world);
  } catch (e) {
    method.dispose();
    throw e;
  }
}
