/**
 * `shardface data`: look at and convert training data.
 *   data info PATH [--json] [--quick]       identities, images, image size; checks every
 *                                           RecordIO record; exit 1 when it finds problems
 *   data convert --from folder DIR --to rec OUT [--shuffle] [--seed S]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { scanDataPath, type DataLayout } from '../../data/data-files.js';
import { probeImage } from '../../data/decode.js';
import { RecordIODataset } from '../../data/file-datasets.js';
import { checkRecordIO } from '../../data/recordio-check.js';
import { convertToRecordIO } from '../../data/convert.js';

const INFO: Record<string, OptionSpec> = {
  json: { kind: 'boolean', default: false, help: 'print one JSON object' },
  quick: { kind: 'boolean', default: false, help: 'RecordIO: skip the check of every record (index and first image only)' },
};
/** Problems listed in full (JSON) or in part (text); the count is always exact. */
const MAX_LISTED_PROBLEMS = 1000;
const CONVERT: Record<string, OptionSpec> = {
  from: { kind: 'string', help: 'source kind and path: folder DIR (or list FILE)' },
  to: { kind: 'string', help: 'target kind and path: rec OUT (writes OUT/train.rec, train.idx, property)' },
  shuffle: { kind: 'boolean', default: false, help: 'shuffle identities and the images within each' },
  seed: { kind: 'int', default: 1, help: 'seed of --shuffle' },
  json: { kind: 'boolean', default: false, help: 'print the result as JSON' },
};

const HELP = `usage: shardface data <info|convert> ...\n\n${usage('data info PATH', INFO)}\n\n${usage('data convert --from folder DIR --to rec OUT', CONVERT)}`;

export async function run(argv: string[]): Promise<number> {
  const [what, ...rest] = argv;
  if (!what || what === '--help' || what === 'help') {
    console.log(HELP);
    return what ? 0 : 2;
  }
  if (what === 'info') return info(rest);
  if (what === 'convert') return convert(rest);
  throw new UsageError(`unknown data command ${JSON.stringify(what)}\n\n${HELP}`);
}

async function info(argv: string[]): Promise<number> {
  const { options: o, positional } = parseArgs(argv, { ...INFO, help: { kind: 'boolean' } }, { allowPositional: true });
  if (o.help) {
    console.log(usage('data info PATH', INFO));
    return 0;
  }
  if (positional.length !== 1) throw new UsageError(`data info takes one PATH (a .rec, its folder, an image folder or a list file), got ${positional.length}`);
  const path = positional[0]!;
  let layout: DataLayout | null;
  try {
    layout = scanDataPath(path);
  } catch (e) {
    console.error(`shardface data info: ${path}: ${(e as Error).message}`);
    return 1;
  }
  if (!layout) {
    console.error(`shardface data info: ${path} does not exist`);
    return 1;
  }
  const facts = await describe(layout, o.quick as boolean);
  if (o.json) console.log(JSON.stringify({ ...facts, problems: facts.problems.slice(0, MAX_LISTED_PROBLEMS) }));
  else {
    console.log(`${facts.path}`);
    console.log(`  kind        ${facts.kind}${facts.layout ? ` (${facts.layout} layout)` : ''}`);
    console.log(`  identities  ${facts.identities}`);
    console.log(`  images      ${facts.images}`);
    console.log(`  image size  ${facts.width && facts.height ? `${facts.width}×${facts.height}${facts.format ? ` ${facts.format}` : ''} (${facts.sizeFrom})` : `unknown (${facts.sizeFrom})`}`);
    if (facts.records !== null) console.log(`  records     ${facts.records} in the index, ${facts.readableRecords} readable (${facts.readableImages} of ${facts.images} images)`);
    else if (facts.kind === 'recordio') console.log('  records     not checked (--quick)');
    if (facts.problems.length) {
      console.log(`  problems    ${facts.problemCount}:`);
      for (const p of facts.problems.slice(0, 10)) console.log(`    ${p}`);
      if (facts.problemCount > 10) console.log(`    … ${facts.problemCount - 10} more (--json lists up to ${MAX_LISTED_PROBLEMS})`);
    }
  }
  // a check: 0 = no problem found, 1 = problems (listed above), 2 = usage
  return facts.problemCount > 0 ? 1 : 0;
}

interface Facts {
  path: string;
  kind: DataLayout['kind'];
  layout: string | null;
  identities: number;
  images: number;
  width: number | null;
  height: number | null;
  format: string | null;
  sizeFrom: string;
  /** RecordIO, checked: entries in the index, intact records, intact image records; null when not checked. */
  records: number | null;
  readableRecords: number | null;
  readableImages: number | null;
  problems: string[];
  problemCount: number;
}

async function describe(layout: DataLayout, quick: boolean): Promise<Facts> {
  const facts = await describeLayout(layout, quick);
  facts.problemCount = facts.problems.length;
  return facts;
}

async function describeLayout(layout: DataLayout, quick: boolean): Promise<Facts> {
  const base = {
    kind: layout.kind,
    identities: layout.numClasses,
    images: layout.kind === 'recordio' ? layout.keys.length : layout.files.length,
    records: null,
    readableRecords: null,
    readableImages: null,
    problemCount: 0,
  };
  if (layout.kind === 'recordio') {
    const facts: Facts = { path: layout.rec, ...base, layout: layout.layout, width: null, height: null, format: null, sizeFrom: 'property file', problems: layout.problems };
    if (!quick) {
      // the whole-file check finds every record the scan could not read, and the rest
      const check = checkRecordIO(layout);
      Object.assign(facts, { records: check.records, readableRecords: check.readableRecords, readableImages: check.readableImages, problems: check.problems });
    }
    if (layout.imageShape) [facts.height, facts.width] = layout.imageShape;
    const ds = new RecordIODataset(layout, 1);
    try {
      const first = await ds.record(0);
      const im = await probeImage(first.image);
      facts.format = im.format;
      if (!layout.imageShape) {
        [facts.width, facts.height, facts.sizeFrom] = [im.width, im.height, 'first image'];
      }
    } catch (e) {
      facts.problems = [...facts.problems, `first image: ${(e as Error).message}`];
      if (!layout.imageShape) facts.sizeFrom = 'first image unreadable';
    } finally {
      await ds.close();
    }
    return facts;
  }
  const facts: Facts = { path: layout.path, ...base, layout: null, width: null, height: null, format: null, sizeFrom: 'first image', problems: [] };
  try {
    const im = await probeImage(await readFile(layout.files[0]!));
    [facts.width, facts.height, facts.format] = [im.width, im.height, im.format];
  } catch (e) {
    facts.problems.push(`${layout.files[0]}: ${(e as Error).message}`);
    facts.sizeFrom = 'first image unreadable';
  }
  return facts;
}

async function convert(argv: string[]): Promise<number> {
  if (argv.includes('--help')) {
    console.log(usage('data convert --from folder DIR --to rec OUT', CONVERT));
    return 0;
  }
  const { from, to, rest } = splitKindPath(argv);
  const { from: _f, to: _t, ...flags } = CONVERT;
  const { options: o } = parseArgs(rest, flags);
  if (!['folder', 'list'].includes(from.kind)) throw new UsageError(`--from must be "folder DIR" or "list FILE", got ${JSON.stringify(from.kind)}`);
  if (to.kind !== 'rec') throw new UsageError(`--to must be "rec OUT", got ${JSON.stringify(to.kind)}`);
  const t0 = Date.now();
  const r = await convertToRecordIO({
    from: from.path,
    to: to.path,
    shuffle: o.shuffle as boolean,
    seed: o.seed as number,
    onProgress: o.json ? undefined : (done, total) => process.stderr.write(`\r${done}/${total} images`),
  });
  const seconds = (Date.now() - t0) / 1000;
  if (o.json) console.log(JSON.stringify({ ...r, seconds }));
  else {
    if (r.images >= 1000) process.stderr.write('\n');
    console.log(`wrote ${r.rec} (${r.images} images, ${r.identities} identities, ${r.width}×${r.height}) with ${r.idx} and ${r.property} in ${seconds.toFixed(1)} s`);
    if (r.otherSizes) console.log(`note: ${r.otherSizes} images differ in size from the first (${r.width}×${r.height}); the property file records the first`);
    if (r.reencoded) console.log(`note: ${r.reencoded} PGM/PPM images were re-encoded as PNG`);
  }
  return 0;
}

/** `--from KIND PATH --to KIND PATH` (also `--from=KIND` followed by PATH). */
function splitKindPath(argv: string[]): { from: { kind: string; path: string }; to: { kind: string; path: string }; rest: string[] } {
  const found: Record<string, { kind: string; path: string }> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--(from|to)(?:=(.*))?$/.exec(a);
    if (!m) {
      rest.push(a);
      continue;
    }
    const kind = m[2] ?? argv[++i];
    const path = argv[++i];
    if (!kind || !path || path.startsWith('--')) throw new UsageError(`--${m[1]} needs a kind and a path, e.g. --${m[1]} ${m[1] === 'from' ? 'folder DIR' : 'rec OUT'}`);
    found[m[1]!] = { kind, path };
  }
  if (!found.from) throw new UsageError('--from folder DIR is needed');
  if (!found.to) throw new UsageError('--to rec OUT is needed');
  return { from: found.from, to: found.to, rest };
}
