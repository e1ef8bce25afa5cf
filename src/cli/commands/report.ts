/** `shardface report RUN_DIR`: the run's curves as SVG and PNG files and an HTML page (RUN_DIR/report/ unless --out). */
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { ReportError, writeReport } from '../../run/report.js';

const OPTIONS: Record<string, OptionSpec> = {
  out: { kind: 'string', help: 'directory for the report (default RUN_DIR/report)' },
  help: { kind: 'boolean', default: false, help: 'show this help' },
};

export async function run(argv: string[]): Promise<number> {
  const { options: o, positional } = parseArgs(argv, OPTIONS, { allowPositional: true });
  if (o.help) {
    console.log(usage('report RUN_DIR', OPTIONS));
    return 0;
  }
  if (positional.length !== 1) throw new UsageError(`report takes one run directory, got ${positional.length}: shardface report RUN_DIR`);
  try {
    const files = await writeReport(positional[0]!, o.out !== undefined ? { outDir: o.out as string } : {});
    for (const f of [files.html, ...files.svgs, ...files.pngs]) console.log(f);
    return 0;
  } catch (e) {
    if (e instanceof ReportError) {
      console.error(`shardface report: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
