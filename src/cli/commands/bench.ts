/** `shardface bench <what>`: benchmarks printing JSON lines (bench/ holds them). */
import { parseArgs, usage, UsageError, type OptionSpec } from '../args.js';
import { BACKEND_CHOICES, type BackendChoice } from '../../ops/backend.js';
import { BACKBONE_NAMES, isBackboneName } from '../../models/index.js';

const COMMAND_OPTIONS: Record<string, Record<string, OptionSpec>> = {
  collectives: {
    workers: { kind: 'int', default: 2, help: 'processes in the ring' },
    floats: { kind: 'int', default: 10_000_000, help: 'float32 elements per tensor' },
    reps: { kind: 'int', default: 5, help: 'timed repetitions (median reported)' },
    transport: { kind: 'string', default: 'both', help: 'tcp (ZeroMQ ring) | shm (same-host shared memory) | both' },
    gloo: { kind: 'string', default: 'auto', help: 'time PyTorch gloo for comparison: auto (when /usr/bin/python3 has torch) | yes | no' },
  },
  classifier: {
    workers: { kind: 'int', default: 1, help: 'worker processes' },
    classes: { kind: 'int', default: 100_000, help: 'number of classes C' },
    dim: { kind: 'int', default: 512, help: 'embedding size D' },
    batch: { kind: 'int', default: 128, help: 'per-worker batch B' },
    'sample-rate': { kind: 'number', default: 1, help: 'Partial FC sample rate' },
    steps: { kind: 'int', default: 5, help: 'steps (the first is warm-up)' },
    'chunk-rows': { kind: 'int', default: 256, help: 'logit rows computed at once' },
    backend: { kind: 'string', default: 'auto', help: BACKEND_CHOICES.join('|') },
    // --- DCQ
    classifier: { kind: 'string', default: 'fc', help: 'fc (sharded margin softmax) | dcq (sharded class queue, random keys)' },
    'queue-size': { kind: 'int', default: 8192, help: 'dcq: queue slots K over all workers (a multiple of workers × batch)' },
    // --- end DCQ
  },
  train: {
    backbone: { kind: 'string', default: 'mobilefacenet', help: 'backbone to train' },
    workers: { kind: 'int', default: 2, help: 'worker processes' },
    batch: { kind: 'int', default: 32, help: 'per-worker batch' },
    'image-size': { kind: 'int', default: 112, help: 'input size' },
    steps: { kind: 'int', default: 6, help: 'steps (the first is warm-up)' },
    'embedding-size': { kind: 'int', default: 512, help: 'embedding size' },
    classes: { kind: 'int', default: 1000, help: 'synthetic identities' },
    backend: { kind: 'string', default: 'auto', help: BACKEND_CHOICES.join('|') },
    'peer-arcface-torch': { kind: 'string', help: "also time arcface_torch's step of the same backbone: its recognition/arcface_torch folder" },
    'peer-python': { kind: 'string', default: 'python3', help: 'Python with torch for --peer-arcface-torch' },
    'peer-threads': { kind: 'int', help: 'torch.set_num_threads of the peer (default: every core)' },
  },
  recovery: {
    workers: { kind: 'int', default: 2, help: 'worker processes' },
    backbone: { kind: 'string', default: 'tiny', help: 'backbone to train' },
    batch: { kind: 'int', default: 16, help: 'per-worker batch' },
    'image-size': { kind: 'int', default: 32, help: 'input size' },
    'embedding-size': { kind: 'int', default: 128, help: 'embedding size' },
    classes: { kind: 'int', default: 20000, help: 'synthetic identities (the classifier shards are most of the checkpoint)' },
    steps: { kind: 'int', default: 50, help: 'steps of the run' },
    'checkpoint-every': { kind: 'int', default: 20, help: 'checkpoint interval' },
    'kill-step': { kind: 'int', default: 31, help: 'the step at whose start a worker is SIGKILLed' },
    'kill-rank': { kind: 'int', default: 1, help: 'the rank killed' },
    reps: { kind: 'int', default: 5, help: 'timed repetitions of each checkpoint write (median reported)' },
    backend: { kind: 'string', default: 'auto', help: BACKEND_CHOICES.join('|') },
  },
  data: {
    data: { kind: 'string', default: 'synthetic-rec:3000', help: 'dataset: a .rec, folder, list file, or synthetic-rec:N (JPEG faces written to a temporary RecordIO)' },
    batch: { kind: 'int', default: 128, help: 'images per batch' },
    'image-size': { kind: 'int', default: 112, help: 'decoded size' },
    batches: { kind: 'int', default: 40, help: 'batches to time' },
    prefetch: { kind: 'int', default: 2, help: 'batches decoded ahead' },
  },
  // --- occlusion: two short runs (occlusion none / adversarial), clean and occluded verification
  occlusion: {
    workers: { kind: 'int', default: 2, help: 'worker processes' },
    batch: { kind: 'int', default: 64, help: 'per-worker batch' },
    'image-size': { kind: 'int', default: 40, help: 'input size (tiny: 40 px gives a 10×10 feature map)' },
    identities: { kind: 'int', default: 300, help: 'synthetic training identities' },
    'images-per-identity': { kind: 'int', default: 20, help: 'images per identity' },
    'held-out-identities': { kind: 'int', default: 100, help: 'held-out identities for the pairs' },
    pairs: { kind: 'int', default: 3000, help: 'verification pairs' },
    epochs: { kind: 'int', default: 15, help: 'epochs of each run' },
    'start-fraction': { kind: 'number', default: 0.3, help: 'share of the run trained plainly before the adversary starts' },
    'pretrain-steps': { kind: 'int', default: 10, help: 'adversary pre-training steps' },
    width: { kind: 'int', default: 64, help: 'hidden width of G and S' },
    'train-occluders': { kind: 'number', default: 0, help: 'augment.occluders of both runs: share of training images with a drawn occluder' },
    seeds: { kind: 'string', default: '1,2,3', help: 'comma-separated seeds: one pair of runs each' },
    backend: { kind: 'string', default: 'auto', help: BACKEND_CHOICES.join('|') },
  },
  // --- end occlusion
  // --- thin data: the recommended recipe against the defaults on thousands of identities × 2 images
  thin: {
    recipes: { kind: 'string', default: 'recommended,defaults', help: 'comma-separated: recommended (README "Small real datasets") and/or defaults (ArcFace s=64, m=0.5 from step 1)' },
    workers: { kind: 'int', default: 2, help: 'worker processes' },
    batch: { kind: 'int', default: 64, help: 'per-worker batch' },
    'image-size': { kind: 'int', default: 32, help: 'input size' },
    'embedding-size': { kind: 'int', default: 128, help: 'embedding size' },
    identities: { kind: 'int', default: 5000, help: 'synthetic training identities' },
    'images-per-identity': { kind: 'int', default: 2, help: 'images per identity (training and held-out)' },
    'held-out-identities': { kind: 'int', default: 1000, help: 'held-out identities for the verification pairs' },
    pairs: { kind: 'int', default: 900, help: 'verification pairs (at most half the same-identity pairs the held-out set has)' },
    epochs: { kind: 'int', default: 20, help: 'epochs of each run' },
    seed: { kind: 'int', default: 1, help: 'seed of both runs (data, init, pairs)' },
    backend: { kind: 'string', default: 'auto', help: BACKEND_CHOICES.join('|') },
  },
  // --- end thin data
  profile: {
    backbone: { kind: 'string', default: 'mobilefacenet', help: BACKBONE_NAMES.join('|') },
    batch: { kind: 'int', default: 32, help: 'images per step' },
    'image-size': { kind: 'int', default: 112, help: 'input size' },
    'embedding-size': { kind: 'int', default: 512, help: 'embedding size' },
    backend: { kind: 'string', default: 'cpu-native', help: BACKEND_CHOICES.join('|') },
    threads: { kind: 'int', help: 'native kernel threads (default all cores)' },
    steps: { kind: 'int', default: 1, help: 'profiled steps, averaged (after one warm-up and one timed unprofiled step)' },
    'by-shape': { kind: 'boolean', default: false, help: 'also break the top kernels down by input and output shapes' },
    top: { kind: 'int', default: 5, help: 'with --by-shape: how many of the slowest kernels to break down' },
  },
  kernels: {
    reps: { kind: 'int', default: 5, help: 'timed repetitions' },
    threads: { kind: 'int', help: 'native kernel threads (default all cores)' },
  },
};

export async function run(argv: string[]): Promise<number> {
  const [what, ...rest] = argv;
  if (!what || what === '--help' || !(what in COMMAND_OPTIONS)) {
    const list = Object.entries(COMMAND_OPTIONS)
      .map(([k, s]) => usage(`bench ${k}`, s))
      .join('\n\n');
    if (what && what !== '--help') throw new UsageError(`unknown benchmark ${JSON.stringify(what)}\n\n${list}`);
    console.log(list);
    return 0;
  }
  const spec = { ...COMMAND_OPTIONS[what]!, help: { kind: 'boolean' } } as Record<string, OptionSpec>;
  const { options: o } = parseArgs(rest, spec);
  if (o.help) {
    console.log(usage(`bench ${what}`, COMMAND_OPTIONS[what]!));
    return 0;
  }
  switch (what) {
    case 'collectives': {
      const { benchCollectives } = await import('../../../bench/collectives.js');
      const transport = o.transport as string;
      if (transport !== 'tcp' && transport !== 'shm' && transport !== 'both') throw new UsageError('--transport must be tcp, shm or both');
      const gloo = o.gloo as string;
      if (gloo !== 'auto' && gloo !== 'yes' && gloo !== 'no') throw new UsageError('--gloo must be auto, yes or no');
      await benchCollectives({ workers: o.workers as number, floats: o.floats as number, reps: o.reps as number, transport, gloo: gloo === 'auto' ? undefined : gloo === 'yes' });
      return 0;
    }
    case 'classifier': {
      const { benchClassifier } = await import('../../../bench/classifier.js');
      const backend = o.backend as string;
      if (!(BACKEND_CHOICES as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKEND_CHOICES.join('|')}`);
      // --- DCQ
      const classifier = o.classifier as string;
      if (classifier !== 'fc' && classifier !== 'dcq') throw new UsageError('--classifier must be fc or dcq');
      const queueSize = o['queue-size'] as number;
      if (classifier === 'dcq' && (queueSize < 1 || queueSize % ((o.workers as number) * (o.batch as number)) !== 0))
        throw new UsageError(`--queue-size ${queueSize} must be a positive multiple of workers × batch = ${(o.workers as number) * (o.batch as number)}`);
      // --- end DCQ
      const line = await benchClassifier({
        workers: o.workers as number,
        classes: o.classes as number,
        dim: o.dim as number,
        batch: o.batch as number,
        sampleRate: o['sample-rate'] as number,
        steps: o.steps as number,
        chunkRows: o['chunk-rows'] as number,
        backend: backend as BackendChoice,
        classifier, // --- DCQ
        queueSize, // --- DCQ
      });
      console.log(JSON.stringify(line));
      return 0;
    }
    case 'train': {
      const { benchTrain } = await import('../../../bench/train.js');
      const line = await benchTrain({
        backbone: o.backbone as string,
        workers: o.workers as number,
        batch: o.batch as number,
        imageSize: o['image-size'] as number,
        steps: o.steps as number,
        embeddingSize: o['embedding-size'] as number,
        classes: o.classes as number,
        backend: o.backend as string,
        ...(o['peer-arcface-torch'] !== undefined
          ? { peer: { dir: o['peer-arcface-torch'] as string, python: o['peer-python'] as string, ...(o['peer-threads'] !== undefined ? { threads: o['peer-threads'] as number } : {}) } }
          : {}),
      });
      console.log(JSON.stringify(line));
      return 0;
    }
    case 'recovery': {
      const { benchRecovery } = await import('../../../bench/recovery.js');
      if ((o['kill-rank'] as number) >= (o.workers as number)) throw new UsageError(`--kill-rank must be below --workers (${o.workers as number})`);
      const [every, kill, steps] = [o['checkpoint-every'] as number, o['kill-step'] as number, o.steps as number];
      if (every < 1 || kill <= every || kill > steps) throw new UsageError(`--kill-step ${kill} must come after the first checkpoint (--checkpoint-every ${every}) and within --steps ${steps}`);
      const line = await benchRecovery({
        workers: o.workers as number,
        backbone: o.backbone as string,
        batch: o.batch as number,
        imageSize: o['image-size'] as number,
        embeddingSize: o['embedding-size'] as number,
        classes: o.classes as number,
        steps: o.steps as number,
        checkpointEvery: o['checkpoint-every'] as number,
        killStep: o['kill-step'] as number,
        killRank: o['kill-rank'] as number,
        reps: o.reps as number,
        backend: o.backend as string,
      });
      console.log(JSON.stringify(line));
      return 0;
    }
    case 'data': {
      const { benchData } = await import('../../../bench/data.js');
      const line = await benchData({ data: o.data as string, batch: o.batch as number, imageSize: o['image-size'] as number, batches: o.batches as number, prefetch: o.prefetch as number });
      console.log(JSON.stringify(line));
      return 0;
    }
    // --- occlusion
    case 'occlusion': {
      const { benchOcclusion } = await import('../../../bench/occlusion.js');
      await benchOcclusion({
        workers: o.workers as number,
        batch: o.batch as number,
        imageSize: o['image-size'] as number,
        identities: o.identities as number,
        imagesPerIdentity: o['images-per-identity'] as number,
        heldOutIdentities: o['held-out-identities'] as number,
        pairs: o.pairs as number,
        epochs: o.epochs as number,
        startFraction: o['start-fraction'] as number,
        pretrainSteps: o['pretrain-steps'] as number,
        width: o.width as number,
        trainOccluders: o['train-occluders'] as number,
        seeds: parseSeeds(o.seeds as string),
        backend: o.backend as string,
      });
      return 0;
    }
    // --- end occlusion
    // --- thin data
    case 'thin': {
      const { benchThin, THIN_RECIPES } = await import('../../../bench/thin.js');
      const recipes = (o.recipes as string).split(',').map((r) => r.trim());
      const bad = recipes.find((r) => !(THIN_RECIPES as readonly string[]).includes(r));
      if (bad !== undefined || new Set(recipes).size !== recipes.length)
        throw new UsageError(`--recipes must be comma-separated, each once, from ${THIN_RECIPES.join(', ')}; got ${JSON.stringify(o.recipes)}`);
      await benchThin({
        recipes: recipes as (typeof THIN_RECIPES)[number][],
        workers: o.workers as number,
        batch: o.batch as number,
        imageSize: o['image-size'] as number,
        embeddingSize: o['embedding-size'] as number,
        identities: o.identities as number,
        imagesPerIdentity: o['images-per-identity'] as number,
        heldOutIdentities: o['held-out-identities'] as number,
        pairs: o.pairs as number,
        epochs: o.epochs as number,
        seed: o.seed as number,
        backend: o.backend as string,
      });
      return 0;
    }
    // --- end thin data
    case 'profile': {
      const backbone = o.backbone as string;
      if (!isBackboneName(backbone)) throw new UsageError(`--backbone must be one of ${BACKBONE_NAMES.join('|')}, got ${JSON.stringify(backbone)}`);
      const backend = o.backend as string;
      if (!(BACKEND_CHOICES as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKEND_CHOICES.join('|')}`);
      for (const k of ['batch', 'image-size', 'embedding-size', 'steps', 'top'] as const) if ((o[k] as number) < 1) throw new UsageError(`--${k} must be positive, got ${o[k] as number}`);
      if ((o.batch as number) < 2) throw new UsageError('--batch must be at least 2 (BatchNorm needs batch statistics)');
      const { benchProfile } = await import('../../../bench/profile.js');
      await benchProfile({
        backbone,
        batch: o.batch as number,
        imageSize: o['image-size'] as number,
        embeddingSize: o['embedding-size'] as number,
        backend: backend as BackendChoice,
        threads: o.threads as number | undefined,
        steps: o.steps as number,
        byShape: o['by-shape'] ? (o.top as number) : 0,
      });
      return 0;
    }
    case 'kernels': {
      const { benchKernels } = await import('../../../bench/kernels.js');
      await benchKernels({ reps: o.reps as number, threads: o.threads as number | undefined });
      return 0;
    }
  }
  return 2;
}

/** "1,2,3" → [1, 2, 3]; anything else is a usage error. */
function parseSeeds(s: string): number[] {
  const seeds = s.split(',').map((x) => Number(x.trim()));
  if (seeds.length === 0 || seeds.some((x) => !Number.isInteger(x))) throw new UsageError(`--seeds must be comma-separated integers, got ${JSON.stringify(s)}`);
  return seeds;
}
