/**
 * `shardface train`: resolve and check the configuration (before any process
 * starts), then run the job through the run library (src/run/).
 */
import { UsageError } from '../args.js';
import { resolveConfig, formatConfig, ConfigError, configHelp, parseConfigArgv } from '../../config/index.js';
import { planTraining, type TrainPlan } from '../../run/plan.js';
import { trainWithPlan } from '../../run/training.js';
import { planResume } from '../../run/resume.js';
import { LaunchError } from '../../launcher/local-workers.js';

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseConfigArgv(argv, { passThrough: { help: 'flag', resume: 'value' } });
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  if (args.other.help) {
    console.log(
      `usage: shardface train [--config FILE] [--print-config] [--KEY VALUE ...]\n       shardface train --resume RUN_DIR [--steps N] [--KEY VALUE ...]   continue a run from its newest verified checkpoint\n\nSIGTERM/SIGINT: the step finishes, a final checkpoint is written, exit 143/130 (a second signal stops at once).\n\nConfiguration keys (file or command line):\n${configHelp()}`,
    );
    return 0;
  }
  let plan: TrainPlan;
  try {
    const resume = args.other.resume;
    if (resume !== undefined && args.file !== undefined) throw new ConfigError("--resume takes the run's saved config.json; leave --config out");
    if (resume === true || resume === '') throw new ConfigError('--resume needs a run directory');
    plan = resume !== undefined ? planResume(String(resume), args.overrides) : planTraining(resolveConfig({ file: args.file, overrides: args.overrides }));
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`shardface train: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const cfg = plan.config;
  if (args.printConfig) {
    console.log(formatConfig({ ...cfg, runDir: plan.runDir }));
    return 0;
  }
  try {
    return await trainWithPlan(plan);
  } catch (e) {
    if (e instanceof LaunchError) throw new UsageError(e.message);
    throw e;
  }
}
