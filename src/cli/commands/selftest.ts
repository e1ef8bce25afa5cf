/**
 * `shardface selftest`: the sharded classifier, run by a real coordinator and
 * N worker processes, against the same case computed in one process with the
 * whole classifier (an independent code path: full logits and autograd).
 */
import { readFileSync } from 'node:fs';
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { LOG_OPTIONS, loggerFrom } from '../common.js';
import { newJobId } from '../../run/lifecycle.js';
import { launchLocal } from '../../launcher/launch.js';
import { generateCase, parseSelftestCase, type SelftestCase } from '../selftest-case.js';
import { referenceLossAndGrads } from '../../ops/reference-classifier.js';
import { referenceHeadLossAndGrads } from '../../ops/reference-heads.js';
import { curricularJobState } from '../../ops/job-state.js';
import type { MarginGrad } from '../../ops/margin.js';
import { tf } from '../../ops/tf.js';
import { initBackend } from '../../ops/backend.js';

const OPTIONS: Record<string, OptionSpec> = {
  workers: { kind: 'int', default: 2, help: 'number of worker processes' },
  case: { kind: 'string', help: 'JSON case file {embeddings, labels, weight, margin}; default: a generated case' },
  dump: { kind: 'boolean', default: false, help: 'include grad_embeddings and grad_weight in the output' },
  'sample-rate': { kind: 'number', default: 1, help: 'Partial FC sample rate (the reference then uses the same sampled classes)' },
  'margin-grad': { kind: 'string', default: 'straight-through', help: 'straight-through (arcface_torch) or exact (analytic)' },
  classes: { kind: 'int', default: 37, help: 'generated case: number of classes' },
  dim: { kind: 'int', default: 16, help: 'generated case: embedding size' },
  rows: { kind: 'int', default: 4, help: 'generated case: rows per worker' },
  margin: { kind: 'string', default: 'arcface', help: 'generated case: arcface|cosface|combined|magface|curricular (the last two with their default settings, t = 0)' },
  seed: { kind: 'int', default: 1, help: 'generated case and sampling seed' },
  'chunk-rows': { kind: 'int', default: 256, help: 'logit rows computed at once' },
  backend: { kind: 'string', default: 'auto', help: 'backend for workers and the reference' },
  tolerance: { kind: 'number', default: 1e-5, help: 'relative tolerance (to the largest magnitude)' },
  ...LOG_OPTIONS,
};

export async function run(argv: string[]): Promise<number> {
  const { options: o } = parseArgs(argv, OPTIONS);
  if (o.help) {
    console.log(usage('selftest', OPTIONS));
    return 0;
  }
  const workers = o.workers as number;
  if (workers < 1) throw new UsageError('--workers must be >= 1');
  const marginGrad = o['margin-grad'] as string;
  if (marginGrad !== 'straight-through' && marginGrad !== 'exact') throw new UsageError('--margin-grad must be straight-through or exact');
  const sampleRate = o['sample-rate'] as number;
  if (!(sampleRate > 0 && sampleRate <= 1)) throw new UsageError('--sample-rate must be in (0, 1]');

  let tcase: SelftestCase;
  if (o.case) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(o.case as string, 'utf8'));
    } catch (e) {
      throw new UsageError(`--case ${o.case}: ${(e as Error).message}`);
    }
    try {
      tcase = parseSelftestCase(json, workers);
    } catch (e) {
      throw new UsageError(`--case ${o.case}: ${(e as Error).message}`);
    }
  } else {
    const type = o.margin as string;
    if (!['arcface', 'cosface', 'combined', 'magface', 'curricular'].includes(type))
      throw new UsageError(`--margin must be arcface, cosface, combined, magface or curricular, got ${JSON.stringify(type)}`);
    const head = type === 'magface' || type === 'curricular' ? type : undefined;
    tcase = generateCase({
      workers,
      classes: o.classes as number,
      dim: o.dim as number,
      rowsPerWorker: o.rows as number,
      seed: o.seed as number,
      ...(head ? { head } : { margin: { type: type as 'arcface' } }),
    });
  }
  const classes = tcase.weight.length;
  const dim = tcase.weight[0]!.length;
  const rows = tcase.embeddings.length;

  const logger = loggerFrom({ ...o, 'log-format': o['log-format'] }, 'launcher');
  logger.log.level = 'warn';
  const results = new Map<number, { loss: number; classStart: number; active: number[]; gradWeight: number[]; gradEmbeddings: number[]; lossState: Record<string, number> }>();
  const head = tcase.head;
  const { done } = await launchLocal({
    coordinator: {
      workers,
      job: newJobId(),
      token: '',
      heartbeatMs: 2000,
      workerTimeoutMs: 60_000,
      joinTimeoutMs: 120_000,
      spec: {
        kind: 'selftest',
        steps: 1,
        numClasses: classes,
        seed: o.seed as number,
        config: { ...tcase, marginGrad, sampleRate, chunkRows: o['chunk-rows'] as number },
      },
      // CurricularFace: the incoming t is the coordinator's job-wide state
      ...(head?.kind === 'curricular' ? { jobState: curricularJobState({ t: head.t, emaWeight: head.emaWeight }) } : {}),
      logger,
      onEvent: (rank, name, fields) => {
        if (name === 'selftest-result') results.set(rank, fields as never);
      },
    },
    workerArgs: ['--backend', o.backend as string, '--log-format', 'json'],
    out: (line, from, stream) => {
      if (/"level":(50|60)/.test(line) || stream === 'stderr') process.stderr.write(`[worker ${from.index}] ${line}\n`);
    },
  });
  const r = await done;
  if (!r.ok || results.size !== workers) {
    console.error(`shardface selftest: job failed: ${r.reason}`);
    return 1;
  }

  // Assemble the sharded result.
  const gradEmb = new Float64Array(rows * dim);
  const gradW = new Float64Array(classes * dim);
  const active = new Set<number>();
  const batch = rows / workers;
  for (const [rank, res] of results) {
    gradEmb.set(res.gradEmbeddings, rank * batch * dim);
    res.active.forEach((cls, k) => {
      active.add(cls);
      for (let d = 0; d < dim; d++) gradW[cls * dim + d] = res.gradWeight[k * dim + d]!;
    });
  }
  const loss = results.get(0)!.loss;

  // The single-process computation over the same classes.
  await initBackend(o.backend as never);
  const activeSorted = [...active].sort((a, b) => a - b);
  const position = new Map(activeSorted.map((c, i) => [c, i]));
  const ref = tf.tidy(() => {
    const e = tf.tensor2d(tcase.embeddings);
    const w = tf.tensor2d(activeSorted.map((c) => tcase.weight[c]!));
    const y = Int32Array.from(tcase.labels.map((l) => position.get(l)!));
    return head ? referenceHeadLossAndGrads(e, w, y, head) : referenceLossAndGrads(e, w, y, tcase.margin, marginGrad as MarginGrad);
  });
  const refEmb = (await ref.gradEmb.data()) as Float32Array;
  const refWActive = (await ref.gradWeight.data()) as Float32Array;
  const refW = new Float64Array(classes * dim);
  activeSorted.forEach((c, i) => refW.set(refWActive.subarray(i * dim, (i + 1) * dim), c * dim));
  ref.gradEmb.dispose();
  ref.gradWeight.dispose();

  const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
    return m;
  };
  const maxAbs = (a: ArrayLike<number>) => {
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
    return m;
  };
  const dEmb = maxAbsDiff(gradEmb, refEmb);
  const dW = maxAbsDiff(gradW, refW);
  const tol = o.tolerance as number;
  // CurricularFace: t after this step, one value on every worker, equal to the single-process one
  const tSharded = head?.kind === 'curricular' ? [...results.values()].map((r) => r.lossState.curricularT) : [];
  const tRef = 't' in ref ? (ref.t as number) : undefined;
  const tIdentical = tSharded.every((t) => t === tSharded[0]);
  const tOk = tRef === undefined || (tIdentical && Math.abs(tSharded[0]! - tRef) <= tol * Math.max(1, Math.abs(tRef)));
  const ok = tOk && Math.abs(loss - ref.loss) <= tol * Math.max(1, Math.abs(ref.loss)) && dEmb <= tol * Math.max(maxAbs(refEmb), 1e-30) && dW <= tol * Math.max(maxAbs(refW), 1e-30);

  const line: Record<string, unknown> = {
    loss,
    loss_single: ref.loss,
    max_abs_diff_grad_embeddings: dEmb,
    max_abs_diff_grad_weight: dW,
    workers,
    classes,
    dim,
    rows,
    sample_rate: sampleRate,
    margin_grad: head ? 'analytic' : marginGrad,
    loss_type: head?.kind ?? tcase.margin.type,
    ...(tRef !== undefined ? { t: tSharded[0], t_single: tRef, t_identical_on_workers: tIdentical } : {}),
    ok,
  };
  if (o.dump) {
    const nest = (a: ArrayLike<number>, n: number) => Array.from({ length: n }, (_, i) => Array.from({ length: dim }, (_, d) => a[i * dim + d]!));
    line.grad_embeddings = nest(gradEmb, rows);
    line.grad_weight = nest(gradW, classes);
  }
  console.log(JSON.stringify(line));
  if (!ok) console.error(`shardface selftest: sharded and single-process results differ by more than ${tol} relative`);
  return ok ? 0 : 1;
}
