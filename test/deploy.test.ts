/**
 * The deploy files (deploy/) checked by the tools their formats have — shellcheck,
 * the Kubernetes API schema, dockerfilelint — and against shardface itself:
 * every option they pass exists, every file an image copies is in the build
 * context, the manifests' cross-references agree, and the Slurm script trains
 * for real under a stand-in srun.
 */
import { describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { COORDINATOR_OPTIONS } from '../src/cli/commands/coordinator.js';
import { WORKER_OPTIONS } from '../src/cli/commands/worker.js';
import { resolveConfig } from '../src/config/index.js';
import { kubernetesErrors, KUBERNETES_RELEASE } from './helpers/kubernetes-schema.js';
import { copies, copyTarget, dockerIgnore, dockerInstructions, dockerStages, execForm, filesUnder, isShellScript, readText, type Stage } from './helpers/deploy-files.js';
import { freePort } from './helpers/processes.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string) => readText(ROOT, p);
const DEPLOY_FILES = filesUnder(ROOT, 'deploy');
const SHELL_SCRIPTS = DEPLOY_FILES.filter((p) => isShellScript(p, read(p)));
const MANIFESTS = DEPLOY_FILES.filter((p) => p.startsWith('deploy/kubernetes/') && /\.ya?ml$/.test(p));
const DOCKERFILES = DEPLOY_FILES.filter((p) => /(^|\/)Dockerfile(\.[a-z0-9]+)?$/.test(p));
const ENTRYPOINT = join(ROOT, 'deploy/docker/entrypoint.sh');
const OPTIONS = { coordinator: COORDINATOR_OPTIONS, worker: WORKER_OPTIONS };

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string; timeout?: number } = {}) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, input: opts.input, encoding: 'utf8', timeout: opts.timeout ?? 60_000 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}${(r.error as { code?: string }).code === 'ENOENT' ? ' (not installed? .ci/run installs it)' : ''}`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Every --option named after `shardface|main.js coordinator|worker` in a shell text. */
function optionsUsed(text: string, command: 'coordinator' | 'worker'): string[] {
  const out: string[] = [];
  const joined = text.replace(/\\\n/g, ' '); // shell line continuations
  const re = new RegExp(`(?:shardface|main\\.js|\\$CLI)"?,?\\s*"?${command}"?([^\\n]*)`, 'g');
  for (const m of joined.matchAll(re)) for (const o of m[1]!.matchAll(/--([a-z-]+)/g)) out.push(o[1]!);
  return out;
}

describe('deploy shell scripts', () => {
  it('are found: the Slurm script and the image entrypoint at least', () => {
    expect(SHELL_SCRIPTS).toEqual(expect.arrayContaining(['deploy/slurm/train.sbatch', 'deploy/docker/entrypoint.sh']));
  });

  it('pass shellcheck', () => {
    const r = run('shellcheck', ['--format=gcc', ...SHELL_SCRIPTS]);
    expect(r.out, 'shellcheck findings').toBe('');
    expect(r.status).toBe(0);
  });

  it('shellcheck does report problems (the check above can fail)', () => {
    const r = run('shellcheck', ['--format=gcc', '-'], { input: '#!/bin/bash\nrm -rf $1/tmp\n' });
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/SC2086/);
  });

  it('the Slurm script asks for SIGTERM early enough for a final checkpoint (default shutdownTimeoutMs + 10 s)', () => {
    const m = /^#SBATCH --signal=TERM@(\d+)$/m.exec(read('deploy/slurm/train.sbatch'));
    expect(m, '#SBATCH --signal=TERM@SECONDS').not.toBeNull();
    expect(Number(m![1]) * 1000).toBeGreaterThan(resolveConfig({}).shutdownTimeoutMs + 10_000);
  });

  it('the Slurm script passes only options that exist', () => {
    const text = read('deploy/slurm/train.sbatch');
    expect(optionsUsed(text, 'coordinator')).toEqual(['bind', 'workers', 'config', 'run-dir', 'token-file', 'job']);
    expect(optionsUsed(text, 'worker')).toEqual(['coordinator', 'token-file', 'job']);
    for (const c of ['coordinator', 'worker'] as const) for (const o of optionsUsed(text, c)) expect(OPTIONS[c], `${c} --${o}`).toHaveProperty(o);
  });
});

describe('the Slurm script under a stand-in srun', () => {
  // srun and scontrol replaced by small scripts that start the step's tasks on
  // this machine with the variables Slurm gives each task; the coordinator and
  // workers are the real processes, talking ZeroMQ on loopback.
  function fakeSlurm(dir: string): string {
    const bin = join(dir, 'bin');
    spawnSync('mkdir', ['-p', bin]);
    writeFileSync(join(bin, 'scontrol'), '#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo localhost\n');
    writeFileSync(
      join(bin, 'srun'),
      [
        '#!/bin/bash',
        'n=$SLURM_NTASKS',
        'while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do case $1 in --ntasks=*) n=${1#--ntasks=};; esac; echo "$1" >> "$SRUN_LOG"; shift; done',
        'pids=()',
        'for ((i = 0; i < n; i++)); do SLURM_PROCID=$i SLURM_LOCALID=$i "$@" & pids+=($!); done',
        'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc',
      ].join('\n'),
    );
    chmodSync(join(bin, 'scontrol'), 0o755);
    chmodSync(join(bin, 'srun'), 0o755);
    return bin;
  }

  it('trains: coordinator and 2 workers, ranks from SLURM_PROCID, a private token made on first use', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-sbatch-'));
    const bin = fakeSlurm(dir);
    const config = join(dir, 'train.json');
    writeFileSync(
      config,
      JSON.stringify({ batch: 16, imageSize: 16, embeddingSize: 32, data: 'synthetic:20', imagesPerIdentity: 8, heldOutIdentities: 0, steps: 3, backend: 'cpu-native', threads: 1 }),
    );
    const tokenFile = join(dir, 'keys', 'token');
    const env = {
      PATH: `${bin}:${process.env.PATH}`,
      SLURM_JOB_ID: '4242',
      SLURM_JOB_NODELIST: 'node[1-2]',
      SLURM_NTASKS: '2',
      SLURM_CPUS_PER_TASK: '1',
      SLURM_SUBMIT_DIR: ROOT,
      SHARDFACE_PORT: String(await freePort()),
      SHARDFACE_RUN_DIR: join(dir, 'run'),
      SHARDFACE_TOKEN_FILE: tokenFile,
      SRUN_LOG: join(dir, 'srun.log'),
    };
    const r = run('bash', ['deploy/slurm/train.sbatch', config], { env, timeout: 90_000 });
    expect(r.status, r.out.split('\n').slice(-20).join('\n')).toBe(0);
    const summary = JSON.parse(readFileSync(join(dir, 'run', 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ ok: true, steps: 3 });
    const joined = r.out
      .split('\n')
      .filter((l) => l.includes('"joined job"'))
      .map((l) => JSON.parse(l) as { rank: number });
    expect(joined.map((l) => l.rank).sort()).toEqual([0, 1]);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(tokenFile, 'utf8').trim().length).toBeGreaterThanOrEqual(40); // 32 random bytes, base64
    expect(readFileSync(env.SRUN_LOG, 'utf8')).toContain('--gres=none'); // the coordinator takes no GPU
  });

  it('refuses a missing config or a checkout without a build, naming what is missing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-sbatch-'));
    const env = { PATH: `${fakeSlurm(dir)}:${process.env.PATH}`, SLURM_JOB_ID: '1', SLURM_JOB_NODELIST: 'n1', SLURM_NTASKS: '1', SLURM_SUBMIT_DIR: ROOT };
    let r = run('bash', ['deploy/slurm/train.sbatch', join(dir, 'nope.json')], { env });
    expect(r.status).toBe(2);
    expect(r.out).toContain(`no config file ${join(dir, 'nope.json')}`);
    writeFileSync(join(dir, 'train.json'), '{}');
    r = run('bash', ['deploy/slurm/train.sbatch', join(dir, 'train.json')], { env: { ...env, SHARDFACE_HOME: dir } });
    expect(r.status).toBe(2);
    expect(r.out).toContain(`${dir}/dist/src/cli/main.js missing`);
    r = run('bash', ['deploy/slurm/train.sbatch'], { env });
    expect(r.status).not.toBe(0);
    expect(r.out).toContain('usage: sbatch train.sbatch CONFIG');
  });
});

type K8s = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function manifestDocs(path: string): K8s[] {
  const docs = parseAllDocuments(read(path));
  for (const d of docs) if (d.errors.length > 0) throw new Error(`${path}: ${d.errors.map((e) => e.message).join('; ')}`);
  // An empty document (comments only) is skipped, as kubectl does.
  return docs.map((d) => d.toJS() as K8s | null).filter((d): d is K8s => d !== null);
}

const ALL_DOCS = MANIFESTS.flatMap((p) => manifestDocs(p).map((doc) => ({ path: p, doc })));
const find = (kind: string, name: string): K8s => {
  const d = ALL_DOCS.find((x) => x.doc.kind === kind && x.doc.metadata?.name === name);
  if (!d) throw new Error(`no ${kind} ${name} in ${MANIFESTS.join(', ')}`);
  return d.doc;
};

/** A container's argument after `--name`. */
function argValue(args: string[], name: string): string {
  const i = args.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= args.length) throw new Error(`no --${name} in ${args.join(' ')}`);
  return args[i + 1]!;
}

/** The volume mounted at the longest mount path that contains `file`. */
function volumeHolding(pod: K8s, container: K8s, file: string): { mountPath: string; volume: K8s } {
  const mounts = (container.volumeMounts as K8s[]).filter((m) => file.startsWith(`${m.mountPath.replace(/\/$/, '')}/`));
  if (mounts.length === 0) throw new Error(`${file}: on no volume of container ${container.name}`);
  const m = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0]!;
  return { mountPath: m.mountPath, volume: (pod.volumes as K8s[]).find((v) => v.name === m.name)! };
}

describe('Kubernetes manifests', () => {
  it(`every document validates against the Kubernetes ${KUBERNETES_RELEASE} API schema`, () => {
    expect(MANIFESTS).toEqual(expect.arrayContaining(['deploy/kubernetes/shardface.yaml', 'deploy/kubernetes/secret.yaml']));
    const problems = ALL_DOCS.flatMap(({ path, doc }) => kubernetesErrors(doc).map((e) => `${path}: ${doc.kind} ${doc.metadata?.name}: ${e}`));
    expect(problems).toEqual([]);
  });

  it('a broken copy fails validation, naming each problem', () => {
    const job = structuredClone(find('Job', 'shardface-workers'));
    job.spec.completionMod = job.spec.completionMode; // misspelt field
    job.spec.completions = 'eight'; // wrong type
    job.spec.template.spec.containers[0].resources.limits['nvidia.com/gpu'] = 'one GPU'; // not a quantity
    delete job.spec.template.spec.containers[0].name; // required
    expect(kubernetesErrors(job).sort()).toEqual(
      [
        '/spec must NOT have additional properties: completionMod',
        '/spec/completions must be integer',
        '/spec/template/spec/containers/0 must have required property name',
        '/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu must be number',
        '/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu must match format "quantity"',
        '/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu must match a schema in "anyOf"',
      ].sort(),
    );
    expect(kubernetesErrors({ ...find('Service', 'shardface-coordinator'), kind: 'Servise' })[0]).toMatch(/no schema for apiVersion v1 kind Servise/);
    // The whole file with one typo in its text: exactly that one error among all its documents.
    const text = read('deploy/kubernetes/shardface.yaml');
    expect(text).toContain('terminationGracePeriodSeconds: 300');
    const broken = parseAllDocuments(text.replace('terminationGracePeriodSeconds: 300', 'terminationGracePeriodSecond: 300'))
      .map((d) => d.toJS() as K8s | null)
      .filter((d): d is K8s => d !== null);
    expect(broken.flatMap((d) => kubernetesErrors(d).map((e) => `${d.kind} ${d.metadata.name}: ${e}`))).toEqual([
      'Job shardface-coordinator: /spec/template/spec must NOT have additional properties: terminationGracePeriodSecond',
    ]);
    const pvc = structuredClone(find('PersistentVolumeClaim', 'shardface-runs'));
    pvc.spec.accessModes = 'ReadWriteMany';
    expect(kubernetesErrors(pvc)).toEqual(['/spec/accessModes must be array']);
  });

  const coordinatorJob = find('Job', 'shardface-coordinator');
  const workerJob = find('Job', 'shardface-workers');
  const coordPod = coordinatorJob.spec.template.spec;
  const workerPod = workerJob.spec.template.spec;
  const coord = coordPod.containers[0];
  const worker = workerPod.containers[0];

  it('commands are shardface coordinator/worker with options that exist', () => {
    expect(coord.args[0]).toBe('coordinator');
    expect(worker.args[0]).toBe('worker');
    for (const [c, args] of [
      ['coordinator', coord.args],
      ['worker', worker.args],
    ] as const)
      for (const a of (args as string[]).filter((x) => x.startsWith('--'))) expect(OPTIONS[c], `${c} ${a}`).toHaveProperty(a.slice(2));
    // $(VAR) in args is expanded by Kubernetes only from the container's env.
    for (const c of [coord, worker])
      for (const a of c.args as string[])
        for (const m of a.matchAll(/\$\((\w+)\)/g))
          expect(
            (c.env ?? []).map((e: K8s) => e.name),
            `${c.name}: ${a}`,
          ).toContain(m[1]);
  });

  it('workers: an Indexed Job of one-GPU pods, as many as the coordinator waits for', () => {
    expect(workerJob.spec.completionMode).toBe('Indexed'); // rank = JOB_COMPLETION_INDEX
    expect(worker.args).not.toContain('--rank');
    const n = Number(argValue(coord.args, 'workers'));
    expect(workerJob.spec.completions).toBe(n);
    expect(workerJob.spec.parallelism).toBe(n);
    expect(worker.resources.limits['nvidia.com/gpu']).toBe(1);
    expect(argValue(worker.args, 'job')).toBe(argValue(coord.args, 'job'));
  });

  it('workers reach the coordinator through its Service', () => {
    const service = find('Service', 'shardface-coordinator');
    const [, host, port] = /^tcp:\/\/([^:]+):(\d+)$/.exec(argValue(worker.args, 'coordinator'))!;
    expect(host).toBe(service.metadata.name);
    const sp = (service.spec.ports as K8s[]).find((p) => p.port === Number(port))!;
    expect(sp, `Service port ${port}`).toBeDefined();
    expect(sp.targetPort).toBe(Number(/:(\d+)$/.exec(argValue(coord.args, 'bind'))![1]));
    expect(coordinatorJob.spec.template.metadata.labels).toMatchObject(service.spec.selector);
    expect(workerJob.spec.template.metadata.labels).not.toMatchObject(service.spec.selector); // only the coordinator behind it
  });

  /** The ConfigMap's training config, resolved (defaults filled in). */
  const trainConfig = () => {
    const file = argValue(coord.args, 'config');
    const { mountPath, volume } = volumeHolding(coordPod, coord, file);
    const values = JSON.parse(find('ConfigMap', volume.configMap.name).data[posix.relative(mountPath, file)]) as Record<string, unknown>;
    return resolveConfig({ values: { ...values, data: 'synthetic:1000', val: 'none' } });
  };

  it('the coordinator runs once and fails fast; a failed worker is replaced as often as maxRestarts allows', () => {
    expect(coordPod.restartPolicy).toBe('Never');
    expect(coordinatorJob.spec.backoffLimit).toBe(0);
    expect(coordinatorJob.spec.podFailurePolicy.rules[0]).toMatchObject({ action: 'FailJob', onExitCodes: { containerName: coord.name, operator: 'NotIn', values: [0] } });
    // a new pod (possibly on another node) per failure of a rank, not a container restart in place: podFailurePolicy needs Never
    const maxRestarts = trainConfig().maxRestarts;
    expect(maxRestarts).toBeGreaterThan(0);
    expect(workerPod.restartPolicy).toBe('Never');
    expect(workerJob.spec.backoffLimitPerIndex).toBe(maxRestarts);
    expect(workerJob.spec.maxFailedIndexes).toBe(0);
    expect(workerJob.spec.backoffLimit).toBeUndefined();
    // a bad config and a graceful stop are not retried
    expect(workerJob.spec.podFailurePolicy.rules[0]).toMatchObject({ action: 'FailJob', onExitCodes: { containerName: worker.name, operator: 'In', values: [2, 130, 143] } });
  });

  it('stops gracefully within the SIGTERM grace, with resources and a non-root user', () => {
    for (const job of [coordinatorJob, workerJob]) {
      const pod = job.spec.template.spec;
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(120);
      // a signalled worker waits shutdownTimeoutMs + 10 s for the coordinator's stop after the final checkpoint
      expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(trainConfig().shutdownTimeoutMs + 10_000);
      expect(pod.containers[0].resources.requests.cpu).toBeDefined();
      expect(pod.containers[0].resources.limits.memory).toBeDefined();
      expect(pod.securityContext.runAsNonRoot).toBe(true);
    }
  });

  it('credentials come from the Secret, mounted as a directory holding the token', () => {
    const secret = find('Secret', 'shardface-keys');
    for (const [pod, c] of [
      [coordPod, coord],
      [workerPod, worker],
    ]) {
      const file = argValue(c.args, 'token-file');
      const { mountPath, volume } = volumeHolding(pod, c, file);
      expect(volume.secret?.secretName, `${c.name}: ${file}`).toBe(secret.metadata.name);
      expect(mountPath).toBe('/etc/shardface/keys');
      expect(Object.keys({ ...secret.data, ...secret.stringData })).toContain(posix.relative(mountPath, file));
    }
  });

  it('checkpoints and logs go to one ReadWriteMany claim that every pod mounts at the same path', () => {
    const runDir = argValue(coord.args, 'run-dir');
    const { mountPath, volume } = volumeHolding(coordPod, coord, runDir);
    const claim = find('PersistentVolumeClaim', volume.persistentVolumeClaim.claimName);
    expect(claim.spec.accessModes).toEqual(['ReadWriteMany']);
    // Workers write their checkpoint shards under the coordinator's run directory.
    const w = volumeHolding(workerPod, worker, runDir);
    expect(w.mountPath).toBe(mountPath);
    expect(w.volume.persistentVolumeClaim.claimName).toBe(claim.metadata.name);
  });

  it('the training config is a ConfigMap key that shardface accepts, and its data paths are mounted', () => {
    const file = argValue(coord.args, 'config');
    const { mountPath, volume } = volumeHolding(coordPod, coord, file);
    const cm = find('ConfigMap', volume.configMap.name);
    const values = JSON.parse(cm.data[posix.relative(mountPath, file)]) as { data: string; val: string };
    // The data set is not here: check every other key and value, then that the data paths are on the data volume.
    const here = { ...values, data: 'synthetic:1000', val: 'none' };
    const cfg = resolveConfig({ values: here, overrides: { workers: argValue(coord.args, 'workers') } });
    expect(cfg.checkpointEvery).toBeGreaterThan(0); // a stopped run loses at most that many steps
    expect(cfg.backend).toBe(argValue(worker.args, 'backend'));
    const paths = [values.data, ...values.val.split(',').map((e) => e.split('=')[1]!)];
    expect(paths.length).toBeGreaterThan(1);
    for (const [pod, c] of [
      [coordPod, coord],
      [workerPod, worker],
    ])
      for (const p of paths) expect(volumeHolding(pod, c, p).volume.persistentVolumeClaim?.claimName, `${c.name}: ${p}`).toBe('shardface-data');
    expect(() => resolveConfig({ values: { ...here, backbon: 'iresnet50' } })).toThrow(/backbon/); // the check above can fail
  });
});

/** An entrypoint script run here from the repository, as the image runs it (it finds the CLI relative to itself). */
function entrypoint(args: string[], env: NodeJS.ProcessEnv = {}) {
  return run(ENTRYPOINT, args, { env });
}

describe('Dockerfiles', () => {
  const ignore = dockerIgnore(read('.dockerignore'));

  it('are found: the GPU and the CPU image', () => {
    expect(DOCKERFILES).toEqual(['deploy/Dockerfile', 'deploy/Dockerfile.cpu']);
  });

  it('pass dockerfilelint', () => {
    const r = run(join(ROOT, 'node_modules/.bin/dockerfilelint'), ['--json', ...DOCKERFILES]);
    const report = JSON.parse(r.out) as { totalIssues: number; files: { file: string; issues: { line: string; title: string }[] }[] };
    expect(report.files.flatMap((f) => f.issues.map((i) => `${f.file}:${i.line}: ${i.title}`))).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('dockerfilelint does report problems (the check above can fail)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shardface-docker-'));
    writeFileSync(join(dir, 'Dockerfile'), 'FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n');
    const r = run(join(ROOT, 'node_modules/.bin/dockerfilelint'), ['--json', join(dir, 'Dockerfile')]);
    expect(r.status).not.toBe(0);
    const titles = (JSON.parse(r.out) as { files: { issues: { title: string }[] }[] }).files[0]!.issues.map((i) => i.title);
    expect(titles).toEqual(expect.arrayContaining(['Base Image Latest Tag', 'Consider `--no-install-recommends`']));
  });

  for (const file of DOCKERFILES) {
    describe(file, () => {
      const stages = dockerStages(dockerInstructions(read(file)));
      const final = stages[stages.length - 1]!;
      const workdir = (s: Stage) => s.instructions.filter((i) => i.keyword === 'WORKDIR').pop()?.args ?? '/';

      it('starts every stage from an earlier stage or a pinned image', () => {
        stages.forEach((s, i) => {
          const earlier = stages.slice(0, i).map((x) => x.name);
          if (earlier.includes(s.from)) return;
          expect(s.from, `FROM ${s.from}`).toMatch(/^[a-z0-9./_-]+:[A-Za-z0-9._-]+$/);
          expect(s.from).not.toMatch(/:latest$/);
        });
        for (const s of stages)
          for (const c of copies(s))
            if (c.from)
              expect(
                stages.map((x) => x.name),
                `COPY --from=${c.from}`,
              ).toContain(c.from);
      });

      it('copies only files that exist in the repository and are in the build context', () => {
        const sources = stages.flatMap((s) => copies(s).filter((c) => !c.from)).flatMap((c) => c.sources);
        expect(sources.length).toBeGreaterThan(0);
        for (const src of sources) {
          expect(existsSync(join(ROOT, src)), `COPY ${src}: not in the repository`).toBe(true);
          expect(ignore.ignored(src), `COPY ${src}: excluded by .dockerignore`).toBe(false);
        }
        // What the host built or installed never enters the image.
        for (const p of ['node_modules', 'dist', 'src/ops/native/build', '.git']) expect(ignore.ignored(p), p).toBe(true);
      });

      it('runs the entrypoint script it copies, with a real shardface command by default', () => {
        const entry = execForm(final, 'ENTRYPOINT')!;
        const cmd = execForm(final, 'CMD')!;
        expect(entry.slice(0, 2)).toEqual(['/usr/bin/tini', '--']); // signals forwarded, zombies reaped
        const script = entry[2]!;
        const copied = copies(final).flatMap((c) => (c.from ? [] : c.sources.map((s) => ({ s, at: copyTarget(c, s, workdir(final)) }))));
        expect(copied.find((x) => x.at === script)?.s, `${script} is not copied into the image`).toBe('deploy/docker/entrypoint.sh');
        expect(SHELL_SCRIPTS).toContain('deploy/docker/entrypoint.sh'); // so shellcheck covers it
        // The script finds the CLI the way it does in the image: /opt/shardface/deploy/docker -> /opt/shardface/dist.
        expect(posix.relative(workdir(final), script)).toBe('deploy/docker/entrypoint.sh');
        const copiedDist = copies(final).some((c) => c.sources.some((s) => s.endsWith('/dist')) && copyTarget(c, 'dist', workdir(final)) === posix.join(workdir(final), 'dist'));
        expect(copiedDist, 'dist/ is copied next to deploy/').toBe(true);
        const r = entrypoint([...cmd, '--help']);
        expect(r.status, r.out).toBe(0);
        expect(r.out).toMatch(new RegExp(`usage: shardface ${cmd[0]}`));
      });

      it('checks its install with deploy/docker/check-install.cjs in the build stage', () => {
        const build = stages.find((s) => s.name === 'build')!;
        const runs = build.instructions
          .filter((i) => i.keyword === 'RUN')
          .map((i) => i.args)
          .join('\n');
        expect(runs).toMatch(file.endsWith('.cpu') ? /check-install\.cjs native/ : /check-install\.cjs gpu/);
        expect(copies(build).some((c) => c.sources.includes('deploy/docker/check-install.cjs'))).toBe(true);
        expect(runs).toMatch(/npm prune --omit=dev/);
      });
    });
  }
});

describe('the image helpers', () => {
  it('the entrypoint passes arguments through to shardface and its exit code back', () => {
    const r = entrypoint(['no-such-command']);
    expect(r.status).toBe(2);
    expect(r.out).toContain('unknown command "no-such-command"');
  });

  it('the entrypoint refuses the placeholder token of secret.yaml, and starts with a real one', () => {
    const keys = mkdtempSync(join(tmpdir(), 'shardface-keys-'));
    const placeholder = find('Secret', 'shardface-keys').stringData.token as string;
    writeFileSync(join(keys, 'token'), placeholder);
    let r = entrypoint(['worker', '--help'], { SHARDFACE_KEYS_DIR: keys });
    expect(r.status).toBe(2);
    expect(r.out).toContain(`${keys}/token still holds the placeholder ${placeholder}`);
    writeFileSync(join(keys, 'token'), 'c2VjcmV0LXRva2VuLWZvci10ZXN0cw==\n');
    r = entrypoint(['worker', '--help'], { SHARDFACE_KEYS_DIR: keys });
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('usage: shardface worker');
  });

  it('check-install.cjs: the native kernels load here; the GPU check names what is missing', () => {
    let r = run('node', ['deploy/docker/check-install.cjs', 'native']);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(/native kernels load \(BLAS OpenBLAS/);
    let gpuInstalled = true;
    try {
      createRequire(join(ROOT, 'package.json')).resolve('@tensorflow/tfjs-node-gpu/package.json');
    } catch {
      gpuInstalled = false;
    }
    r = run('node', ['deploy/docker/check-install.cjs', 'gpu']);
    if (gpuInstalled) expect(r.status, r.out).toBe(0);
    else {
      expect(r.status).toBe(1);
      expect(r.out).toContain('@tensorflow/tfjs-node-gpu is not installed');
    }
    r = run('node', ['deploy/docker/check-install.cjs']);
    expect(r.status).toBe(1);
    expect(r.out).toContain('usage: node deploy/docker/check-install.cjs native|gpu');
  });
});
