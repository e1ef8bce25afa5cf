import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import { COORDINATOR_OPTIONS } from '../src/cli/commands/coordinator.js';
import { WORKER_OPTIONS } from '../src/cli/commands/worker.js';

const read = (p: string) => readFileSync(new URL(`../${p}`, import.meta.url), 'utf8');

/** Every --option named after `shardface coordinator|worker` in a text must exist. */
function optionsUsed(text: string, command: 'coordinator' | 'worker'): string[] {
  const out: string[] = [];
  const joined = text.replace(/\\\n/g, ' '); // shell line continuations
  const re = new RegExp(`shardface"?,?\\s*"?${command}"?([^\\n]*)`, 'g');
  for (const m of joined.matchAll(re)) for (const o of m[1]!.matchAll(/--([a-z-]+)/g)) out.push(o[1]!);
  return out;
}

describe('deploy files', () => {
  it('the Slurm script is valid bash and uses real options', () => {
    const r = spawnSync('bash', ['-n', new URL('../deploy/slurm/train.sbatch', import.meta.url).pathname]);
    expect(r.status, r.stderr.toString()).toBe(0);
    const text = read('deploy/slurm/train.sbatch');
    expect(optionsUsed(text, 'coordinator')).toEqual(['bind', 'workers', 'config', 'run-dir', 'token-file', 'job']);
    for (const o of optionsUsed(text, 'coordinator')) expect(COORDINATOR_OPTIONS, o).toHaveProperty(o);
    for (const o of optionsUsed(text, 'worker')) expect(WORKER_OPTIONS, o).toHaveProperty(o);
  });

  it('the Kubernetes manifest parses and its args are real options', () => {
    const docs = parseAllDocuments(read('deploy/kubernetes/shardface.yaml')).map((d) => d.toJS());
    expect(docs.map((d) => d.kind)).toEqual(['Service', 'Deployment', 'Job']);
    const coordinatorArgs: string[] = docs[1].spec.template.spec.containers[0].args;
    const workerArgs: string[] = docs[2].spec.template.spec.containers[0].args;
    expect(coordinatorArgs[0]).toBe('coordinator');
    expect(workerArgs[0]).toBe('worker');
    for (const a of coordinatorArgs.filter((x) => x.startsWith('--'))) expect(COORDINATOR_OPTIONS).toHaveProperty(a.slice(2));
    for (const a of workerArgs.filter((x) => x.startsWith('--'))) expect(WORKER_OPTIONS).toHaveProperty(a.slice(2));
    expect(docs[2].spec.completionMode).toBe('Indexed'); // rank = JOB_COMPLETION_INDEX
  });
});
