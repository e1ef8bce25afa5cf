/**
 * The PyTorch peer of `bench train`: runs bench/peer/arcface_torch_step.py
 * against the user's arcface_torch checkout with the same backbone, batch,
 * image size and embedding size, and returns its JSON line. The harness is
 * ours; arcface_torch itself is never shipped (README "Benchmarks").
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PeerOptions {
  /** arcface_torch folder (the one holding backbones/). */
  dir: string;
  /** Python with torch installed. */
  python: string;
  /** torch.set_num_threads; default: every core of the machine (what our workers share). */
  threads?: number;
}

export interface PeerResult {
  peer: 'arcface_torch';
  network: string;
  batch: number;
  threads: number;
  torch: string;
  steps: number;
  step_seconds: number;
  images_per_s: number;
}

/** arcface_torch's name for one of our backbones, or an error naming those it has. */
export function arcfaceTorchNetwork(backbone: string): string {
  if (backbone === 'mobilefacenet') return 'mbf';
  const m = /^iresnet(\d+)$/.exec(backbone);
  if (m) return `r${m[1]}`;
  throw new Error(`--peer-arcface-torch: arcface_torch has no counterpart of ${backbone} (mobilefacenet → mbf, iresnetNN → rNN)`);
}

/** The harness, next to this file in the source tree (bench/peer/) or two levels up from dist/bench/. */
function harnessPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [join(here, 'peer', 'arcface_torch_step.py'), join(here, '..', '..', 'bench', 'peer', 'arcface_torch_step.py')]) if (existsSync(p)) return p;
  throw new Error(`--peer-arcface-torch: bench/peer/arcface_torch_step.py not found near ${here}`);
}

export interface PeerJob {
  backbone: string;
  batch: number;
  imageSize: number;
  embeddingSize: number;
}

/** The harness's argument list; throws the one-line error a bad setting deserves (checked before our own run starts). */
export function peerArgs(o: PeerOptions, job: PeerJob): string[] {
  const network = arcfaceTorchNetwork(job.backbone);
  if (job.imageSize !== 112) throw new Error(`--peer-arcface-torch: arcface_torch's backbones take 112×112 input, not ${job.imageSize}`);
  const dir = resolve(o.dir);
  if (!existsSync(join(dir, 'backbones', '__init__.py')))
    throw new Error(`--peer-arcface-torch ${o.dir}: no backbones/__init__.py there (give the recognition/arcface_torch folder of an insightface checkout)`);
  const threads = o.threads ?? availableParallelism();
  return [
    harnessPath(),
    '--arcface-torch',
    dir,
    '--network',
    network,
    '--batch',
    String(job.batch),
    '--image-size',
    String(job.imageSize),
    '--embedding-size',
    String(job.embeddingSize),
    '--threads',
    String(threads),
  ];
}

export async function runArcfaceTorchPeer(o: PeerOptions, job: PeerJob): Promise<PeerResult> {
  const args = peerArgs(o, job);
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
    const child = spawn(o.python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', (e) => fail(new Error(`--peer-arcface-torch: cannot run ${o.python} (${e.message}); give a Python with torch as --peer-python`)));
    child.on('close', (c) => done({ code: c, stdout: out, stderr: err }));
  });
  const lastErr = stderr.trim().split('\n').pop() ?? '';
  if (code !== 0) throw new Error(`--peer-arcface-torch: the PyTorch harness exited with ${code}: ${lastErr}`);
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as PeerResult;
  } catch {
    throw new Error(`--peer-arcface-torch: the PyTorch harness printed no JSON line (${JSON.stringify(line.slice(0, 200))})`);
  }
}
