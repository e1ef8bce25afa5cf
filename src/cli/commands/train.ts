/**
 * `shardface train`: resolve and check the configuration (before any process
 * starts), then run the job through the run library (src/run/).
 */
import { UsageError } from '../args.js';
import { resolveConfig, formatConfig, ConfigError, configHelp, parseConfigArgv } from '../../config/index.js';
import { planTraining, type TrainPlan } from '../../run/plan.js';
import { trainWithPlan } from '../../run/training.js';
import { LaunchError } from '../../launcher/local-workers.js';

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseConfigArgv(argv, { passThrough: { help: 'flag' } });
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  if (args.other.help) {
    console.log(`usage: shardface train [--config FILE] [--print-config] [--KEY VALUE ...]\n\nConfiguration keys (file or command line):\n${configHelp()}`);
    return 0;
  }
  let plan: TrainPlan;
  try {
    plan = planTraining(resolveConfig({ file: args.file, overrides: args.overrides }));
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
