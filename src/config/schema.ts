/**
 * The one training configuration: every key, its type, its range, its default
 * and what it means. The README's configuration table, `--print-config` and
 * every validation message are generated from this table, so a key documented
 * anywhere else is a bug.
 *
 * Keys are flat except `margin.*`, `augment.*`, `dcq.*`, `magface.*` and `curricular.*`; on the command line a key is written with
 * dashes (`--sample-rate 0.1` sets sampleRate, `--margin.m2 0.4` sets margin.m2).
 */

const BACKBONES = ['tiny', 'mobilefacenet', 'iresnet18', 'iresnet34', 'iresnet50', 'iresnet100', 'iresnet200', 'vargfacenet'] as const;
const BACKBONE_NORMS = ['batch', 'none'] as const;
const OPTIMIZERS = ['sgd', 'adamw'] as const;
const MARGIN_TYPES = ['arcface', 'cosface', 'combined', 'softmax'] as const;
const MARGIN_GRADS = ['straight-through', 'exact'] as const;
export const BACKENDS = ['auto', 'tensorflow', 'cpu-native', 'cpu'] as const;
const LOG_FORMATS = ['json', 'pretty'] as const;
const OCCLUSION_MODES = ['none', 'adversarial'] as const;

export type MarginType = (typeof MARGIN_TYPES)[number];

const LOSSES = ['margin', 'magface', 'curricular'] as const;
const DISTILL_LOSSES = ['angular', 'l2'] as const;
const CLASSIFIERS = ['fc', 'dcq'] as const;

interface Common {
  docs: string;
}
export type KeySpec =
  | (Common & { kind: 'int'; default: number; min: number; max?: number })
  | (Common & { kind: 'number'; default: number; min?: number; max?: number; minExclusive?: boolean; maxExclusive?: boolean })
  | (Common & { kind: 'string'; default: string })
  | (Common & { kind: 'enum'; values: readonly string[]; default: string })
  | (Common & { kind: 'boolean'; default: boolean });

const U32 = 4294967295;

/** Every key, in the order they are printed. Dotted keys are nested objects. TrainConfig is computed from it. */
const KEY_TABLE = {
  workers: { kind: 'int', default: 2, min: 1, max: 1024, docs: 'Number of worker processes (one device each). The classifier is sharded over them and the backbone replicated.' },
  backbone: { kind: 'enum', values: BACKBONES, default: 'tiny', docs: 'Backbone network.' },
  backboneNorm: {
    kind: 'enum',
    values: BACKBONE_NORMS,
    default: 'batch',
    docs: 'tiny only: batch = BatchNorm layers, none = no normalisation layers (the exact data-parallel check uses it, since BatchNorm statistics are per worker).',
  },
  embeddingSize: { kind: 'int', default: 512, min: 1, max: 8192, docs: 'Embedding (feature) size D; 512 in arcface_torch, the tiny backbone trains well with 128.' },
  imageSize: { kind: 'int', default: 112, min: 8, max: 1024, docs: 'Input images are imageSize × imageSize RGB (112 for aligned faces; the demo uses a smaller size).' },
  data: {
    kind: 'string',
    default: 'synthetic:500',
    docs: "Training data: synthetic:IDS = IDS procedurally drawn identities (the embedded dataset); an insightface RecordIO file PATH/train.rec (next to train.idx, with an optional property file num_classes,h,w) or its folder; an image folder with one sub-folder per identity (JPEG, PNG, PGM; folders sorted by name get labels 0, 1, …); or a list file of path<TAB>label lines (relative paths from the list's folder). The number of classes comes from the data. Images are resized (short side) and centre-cropped to imageSize.",
  },
  imagesPerIdentity: { kind: 'int', default: 20, min: 1, max: 1_000_000, docs: 'Synthetic data only: images per identity (training and held-out).' },
  heldOutIdentities: {
    kind: 'int',
    default: 100,
    min: 0,
    max: 10_000_000,
    docs: 'Synthetic data only: further identities, disjoint from training, for verification; 0 = no verification. File data has no built-in held-out split (use val).',
  },
  verificationPairs: { kind: 'int', default: 1000, min: 0, max: 100_000_000, docs: 'Verification pairs drawn from the held-out identities (half same, half different), scored by 10-fold accuracy.' },
  evalEvery: { kind: 'int', default: 0, min: 0, docs: 'Run verification every this many steps; 0 = only at the end of training.' },
  val: {
    kind: 'string',
    default: 'none',
    docs: 'Verification sets scored by rank 0 during training ("none" = no sets), comma-separated NAME=PATH: PATH is FILE.bin (insightface pack), PAIRS.txt::IMAGES_DIR (LFW pairs.txt over an image folder) or any other file (a pair list: pathA, pathB, 1 or 0, tab-separated, per line); e.g. "lfw=data/lfw.bin,mine=pairs.tsv". Metrics: val_NAME_accuracy, val_NAME_accuracy_std, val_NAME_threshold, val_NAME_tar_at_far_1e-3 and _1e-4.',
  },
  valEvery: { kind: 'int', default: 0, min: 0, docs: 'Score the val sets every this many steps; 0 = only at the end of training. The other ranks wait for rank 0 at the next step.' },
  batch: { kind: 'int', default: 128, min: 1, max: 1_000_000, docs: 'Images per worker per step (B); the global batch is workers × batch.' },
  epochs: { kind: 'int', default: 20, min: 1, max: 1_000_000, docs: 'Passes over the training set.' },
  steps: { kind: 'int', default: 0, min: 0, docs: 'Stop after this many steps (also the length of the LR schedule); 0 = epochs × steps per epoch.' },
  lr: { kind: 'number', default: 0.1, min: 0, minExclusive: true, max: 100, docs: 'Base learning rate (arcface_torch: 0.1 for a global batch of 1024), shared by backbone and classifier.' },
  warmupEpochs: { kind: 'number', default: 0, min: 0, docs: 'Linear LR warm-up length in epochs (then linear decay to 0); exclusive with warmupSteps.' },
  warmupSteps: { kind: 'int', default: 0, min: 0, docs: 'Linear LR warm-up length in steps; exclusive with warmupEpochs.' },
  optimizer: { kind: 'enum', values: OPTIMIZERS, default: 'sgd', docs: 'Optimizer for backbone and classifier shards.' },
  momentum: { kind: 'number', default: 0.9, min: 0, max: 1, maxExclusive: true, docs: 'SGD momentum (sgd only).' },
  weightDecay: { kind: 'number', default: 5e-4, min: 0, max: 1, docs: 'Weight decay (L2 for sgd, decoupled for adamw); 1e-4 in the Glint360K configs.' },
  clipGradNorm: { kind: 'number', default: 5, min: 0, docs: 'Clip the backbone gradient to this global L2 norm (backbone only, as arcface_torch); 0 = no clipping.' },
  maxBadSteps: {
    kind: 'int',
    default: 5,
    min: 1,
    max: 1_000_000,
    docs: 'Numerical guard: a step whose loss or gradients are NaN or infinite on any worker is skipped on every worker (nothing changes; its batch and LR slot are used up) and logged; after this many skipped steps in a row the job stops with an error naming the step and the ranks.',
  },
  'margin.type': {
    kind: 'enum',
    values: MARGIN_TYPES,
    default: 'arcface',
    docs: 'Margin family: arcface cos(θ+m2), cosface cos θ − m3, combined cos(m1·θ+m2) − m3, softmax (normalised, no margin). Unused m* must stay neutral.',
  },
  'margin.s': { kind: 'number', default: 64, min: 0, minExclusive: true, max: 1000, docs: 'Logit scale s.' },
  'margin.m1': { kind: 'number', default: 1, min: 1, max: 4, docs: 'Multiplicative angular margin (combined only; 1 = off).' },
  'margin.m2': { kind: 'number', default: 0.5, min: 0, max: 1.5, docs: 'Additive angular margin (arcface, combined). Default by type: arcface 0.5, combined 0.3, others 0.' },
  'margin.m3': { kind: 'number', default: 0, min: 0, max: 1, docs: 'Additive cosine margin (cosface, combined). Default by type: cosface 0.4, combined 0.2, others 0.' },
  marginGrad: { kind: 'enum', values: MARGIN_GRADS, default: 'straight-through', docs: 'Gradient through the margin: straight-through (arcface_torch today) or exact (analytic chain rule).' },
  marginWarmupEpochs: {
    kind: 'number',
    default: 0,
    min: 0,
    docs: 'Margin warm-up length in epochs: margin.m1, m2 and m3 ramp linearly from none (the normalised softmax at step 1) to their values, reached after this many epochs; margin.s stays. Lets training from scratch on thin or hard data (few images per identity) converge where the full margin from step 1 stalls near chance; see "Small real datasets" in the README. 0 = the full margin from the first step. Exclusive with marginWarmupSteps; margin family only (loss margin, classifier fc).',
  },
  marginWarmupSteps: { kind: 'int', default: 0, min: 0, docs: 'Margin warm-up length in steps; exclusive with marginWarmupEpochs.' },
  classifierInitStd: {
    kind: 'number',
    default: 0.01,
    min: 0,
    minExclusive: true,
    max: 100,
    docs: 'Standard deviation of the normal initial classifier rows (arcface_torch: 0.01). The rows are normalised, so their length only sets how fast they turn: the angular step of a row is about lr × gradient / length, and rows of length 0.01·sqrt(embeddingSize) spin fast in the first steps. A larger value (e.g. 1/sqrt(embeddingSize)) calms the start on thin data; see "Small real datasets" in the README.',
  },
  sampleRate: { kind: 'number', default: 1, min: 0, minExclusive: true, max: 1, docs: "Partial FC: fraction of each shard's classes used per step (positives always kept); 1 = all." },
  chunkRows: { kind: 'int', default: 0, min: 0, docs: 'Classifier rows per logits chunk, to bound memory on huge shards; 0 = the whole shard at once.' },
  // --- loss heads (docs/methods.md#magface, docs/methods.md#curricularface) and distillation (docs/methods.md#distillation)
  loss: {
    kind: 'enum',
    values: LOSSES,
    default: 'margin',
    docs: 'Loss of the sharded classifier: margin = the margin family (margin.*, marginGrad); magface = MagFace (docs/methods.md#magface): margin m(‖x‖) growing linearly with the clamped embedding magnitude, legacy ArcFace target (easy margin unless magface.easyMargin is false), plus λ_g·mean g(a) (magface.*, scale margin.s; the loss reported includes the regulariser); curricular = CurricularFace (docs/methods.md#curricularface): legacy ArcFace target with margin margin.m2, hard negatives re-weighted as c·(t + c) by the job-wide stage indicator t (curricular.*; t is logged as curricular_t and saved in checkpoint manifests as lossState.curricularT). magface and curricular need margin.type arcface and use the analytic gradient (marginGrad does not apply).',
  },
  'magface.la': {
    kind: 'number',
    default: 10,
    min: 0,
    minExclusive: true,
    max: 1e6,
    docs: 'magface: lower bound l_a of the magnitude clamp a = clamp(‖x‖, l_a, u_a); the margin is l_m there. Outside [l_a, u_a] the magnitude gets no gradient.',
  },
  'magface.ua': {
    kind: 'number',
    default: 110,
    min: 0,
    minExclusive: true,
    max: 1e6,
    docs: 'magface: upper bound u_a of the magnitude clamp; the margin is u_m there, and g(a) = 1/a + a/u_a² is smallest there.',
  },
  'magface.lm': { kind: 'number', default: 0.45, min: 0, max: 1.5, docs: 'magface: margin l_m at a = l_a.' },
  'magface.um': { kind: 'number', default: 0.8, min: 0, max: 1.5, docs: 'magface: margin u_m at a = u_a (≥ magface.lm).' },
  'magface.lambdaG': {
    kind: 'number',
    default: 35,
    min: 0,
    docs: 'magface: weight λ_g of the magnitude regulariser λ_g·mean g(a) (official scripts: 35). Must satisfy λ_g ≥ s·k·u_a²·l_a²/(u_a² − l_a²), k = (u_m − l_m)/(u_a − l_a) (docs/methods.md#magface-regulariser-bound; 22.59 for the defaults), checked before training starts.',
  },
  'magface.easyMargin': {
    kind: 'boolean',
    default: true,
    docs: 'magface: easy_margin of the official code (default true): the margin applies only where the target cosine c > 0, else the target is c. false = the ArcFace threshold: the margin applies where c > cos(π − m(a)), i.e. θ + m < π, else the target is c − m(a)·sin m(a).',
  },
  'curricular.t': {
    kind: 'number',
    default: 0,
    min: -1,
    max: 1,
    docs: "curricular: the stage indicator t before the first step (0 for a new run; a checkpoint manifest's lossState.curricularT to continue one). Each step t ← emaWeight·(mean target cosine of the global batch) + (1 − emaWeight)·t, before it is used.",
  },
  'curricular.emaWeight': { kind: 'number', default: 0.01, min: 0, max: 1, docs: 'curricular: EMA weight of the new batch mean in t (official code: 0.01).' },
  teacher: {
    kind: 'string',
    default: 'none',
    docs: "Distillation (docs/methods.md#distillation): a checkpoint (RUN_DIR/ckpt or RUN_DIR/ckpt/step-N, readable by every worker) whose frozen backbone runs on every batch; the student is pulled towards its embeddings by distill, weighted by distillWeight, reported as distill_loss. Its embeddingSize and imageSize must match this run's. none = no teacher.",
  },
  distill: {
    kind: 'enum',
    values: DISTILL_LOSSES,
    default: 'angular',
    docs: 'teacher: the distillation loss, mean over the global batch: angular = ‖n(F_t) − n(F_s)‖² = 2 − 2cos (VarGFaceNet eq. 5); l2 = ‖F_t − F_s‖² on the raw embeddings.',
  },
  distillWeight: { kind: 'number', default: 1, min: 0, docs: 'teacher: weight of the distillation loss added to the classifier loss (the paper: 1).' },
  initFrom: {
    kind: 'string',
    default: 'none',
    docs: "Start the backbone from this checkpoint's weights (RUN_DIR/ckpt or RUN_DIR/ckpt/step-N; same backbone and embeddingSize) with a fresh optimizer state and the LR schedule from its start: the next generation of recursive knowledge distillation (docs/methods.md#distillation). The classifier starts fresh. none = random initialisation.",
  },
  // --- end loss heads and distillation
  // --- DCQ (docs/methods.md#dynamic-class-queue)
  classifier: {
    kind: 'enum',
    values: CLASSIFIERS,
    default: 'fc',
    docs: 'fc = the sharded margin-softmax classifier (a C×D weight matrix split over the workers; margin.*, sampleRate). dcq = Dynamic Class Queue (docs/methods.md#dynamic-class-queue): no stored classifier; each image is classified against the class weight generated from a same-identity reference image by an EMA copy of the backbone (the key encoder), plus a FIFO queue of earlier keys sharded over the workers. Memory and time depend on dcq.queueSize, not on the number of classes. Checkpoints and the end-of-training verification use the key encoder.',
  },
  'dcq.queueSize': {
    kind: 'int',
    default: 8192,
    min: 1,
    max: 1 << 30,
    docs: "dcq: queue size K (slots over all workers, each worker holds a contiguous block of K / workers); must be a multiple of the global batch workers × batch. 8192 in the official scripts (about 10% of MS1MV2's identities).",
  },
  'dcq.momentum': {
    kind: 'number',
    default: 0.999,
    min: 0,
    max: 1,
    docs: "dcq: EMA momentum μ of the key encoder, θ_k ← μ·θ_k + (1 − μ)·θ_q, applied to the parameters before each step's keys are computed.",
  },
  'dcq.s': { kind: 'number', default: 50, min: 0, minExclusive: true, max: 1000, docs: 'dcq: logit scale s of the (1 + K)-way softmax.' },
  'dcq.m': { kind: 'number', default: 0.3, min: 0, max: 1, docs: 'dcq: CosFace margin m on the positive logit s·(q·k − m).' },
  // --- end DCQ
  bucketMb: { kind: 'number', default: 16, min: 0, minExclusive: true, max: 4096, docs: 'Backbone gradient all-reduce bucket size in MiB.' },
  collectiveTransport: {
    kind: 'enum',
    values: ['auto', 'shm', 'tcp'],
    default: 'auto',
    docs: 'Transport of the backbone gradient all-reduce: shm = shared memory among the workers of one host (fails the job when unavailable), tcp = the ZeroMQ ring, auto = shm when every host runs two or more workers and /dev/shm has room, else tcp (the reason is logged once).',
  },
  flip: { kind: 'boolean', default: true, docs: 'Random horizontal flip augmentation.' },
  'augment.cropScale': {
    kind: 'number',
    default: 1,
    min: 0.05,
    max: 1,
    docs: 'Random resized crop: keep a box covering [cropScale, 1] of the image area (aspect 3/4..4/3), resized back to imageSize; 1 = off. Drawn per (seed, epoch, image) like the flip.',
  },
  'augment.colourJitter': { kind: 'number', default: 0, min: 0, max: 1, docs: 'Colour jitter strength j: brightness, contrast and saturation each scaled by a factor in [1 − j, 1 + j]; 0 = off.' },
  'augment.occluders': {
    kind: 'number',
    default: 0,
    min: 0,
    max: 1,
    docs: 'Share of the training images that get one synthetic occluder drawn on them (sunglasses band, face mask, grey half, random block; the kinds of `eval --occlude`), after the flip, drawn per (seed, epoch, image); 0 = off. With occlusion adversarial the segmentation head also learns to find these occluders, so that `eval --seg-gate` can blank them out.',
  },
  'augment.grey': { kind: 'number', default: 0, min: 0, max: 1, docs: 'Probability of turning a training image grey-scale (luma in all three channels); 0 = off.' },
  prefetch: { kind: 'int', default: 2, min: 0, max: 64, docs: 'File data: batches decoded ahead of the step that needs them (0 = decode on demand). Synthetic data is rendered on demand.' },
  decodeThreads: {
    kind: 'int',
    default: 0,
    min: 0,
    max: 1024,
    docs: "File data: images read and decoded at once per worker (libvips runs them on libuv's thread pool, UV_THREADPOOL_SIZE); 0 = 4 × cores.",
  },
  strictData: {
    kind: 'boolean',
    default: false,
    docs: 'An unreadable training image (corrupt or truncated record, undecodable image, index entry past the end of the file) stops training with an error naming the file, image and reason; false = log it, count it (skipped_images in metrics.jsonl and summary.json) and use another image (with its own label) instead, up to maxBadImageShare.',
  },
  maxBadImageShare: {
    kind: 'number',
    default: 0.01,
    min: 0,
    max: 1,
    docs: 'With strictData false: the run fails once the skipped (unreadable) images exceed this share of the images drawn so far, counted over all workers; until min(training images, 1000) images are drawn the share is taken over that many, so a few unlucky early draws do not stop a run. 0 = fail on the first unreadable image (after its step, unlike strictData, which stops in the loader); 1 = never fail for it.',
  },
  seed: { kind: 'int', default: 1, min: 0, max: U32, docs: 'Job seed: data, shuffling, initialisation and sampling all derive from it.' },
  backend: { kind: 'enum', values: BACKENDS, default: 'auto', docs: 'Compute backend: auto = tensorflow if installed, else cpu-native if built, else cpu.' },
  threads: { kind: 'int', default: 0, min: 0, max: 1024, docs: 'Threads per worker for native CPU kernels; 0 = cores / workers.' },
  runDir: { kind: 'string', default: '', docs: 'Directory for checkpoints, logs, metrics.jsonl and summary.json of this run; empty = runs/<timestamp>.' },
  checkpointEvery: { kind: 'int', default: 0, min: 0, docs: 'Write a checkpoint every this many steps; 0 = only at the end.' },
  checkpointKeep: { kind: 'int', default: 3, min: 0, docs: 'Keep the newest this many complete checkpoints and delete older ones once a newer one is complete (its manifest written); 0 = keep all.' },
  checkpointMinutes: {
    kind: 'number',
    default: 0,
    min: 0,
    docs: 'Also write a checkpoint at the end of the first step that begins this many minutes (fractions allowed) after the last complete one (or after training started); the coordinator decides, so every rank writes at the same step. 0 = off.',
  },
  shutdownTimeoutMs: {
    kind: 'int',
    default: 120_000,
    min: 0,
    max: 86_400_000,
    docs: "On the first SIGTERM or SIGINT (to the coordinator, or to any worker) the running step finishes and a final checkpoint is written before the job stops; this bounds both together (ms), after which the job stops without it. A signalled worker waits this long plus 10 s for the coordinator's stop. Keep the scheduler's grace period (Kubernetes terminationGracePeriodSeconds, Slurm --signal) above that.",
  },
  logEvery: { kind: 'int', default: 10, min: 1, docs: 'Log loss and throughput every this many steps.' },
  logFormat: { kind: 'enum', values: LOG_FORMATS, default: 'json', docs: 'Log lines as JSON or human-readable.' },
  heartbeatMs: { kind: 'int', default: 2000, min: 10, max: 3_600_000, docs: 'Interval of worker heartbeats to the coordinator (ms).' },
  workerTimeoutMs: {
    kind: 'int',
    default: 30000,
    min: 100,
    max: 86_400_000,
    docs: 'A worker silent for this long (ms) is declared lost; must exceed heartbeatMs. Also bounds connecting: a coordinator or ring neighbour not reached within it fails the worker with an error naming its address and rank.',
  },
  maxRestarts: {
    kind: 'int',
    default: 0,
    min: 0,
    max: 1000,
    docs: 'How many times a worker that dies or goes silent restarts the job from its newest verified checkpoint (the survivors register again, a replacement takes the lost rank) instead of stopping it; 0 = stop at the first failure. The failure after the last restart stops the job, naming the rank.',
  },
  metricsPort: {
    kind: 'int',
    default: 0,
    min: -1,
    max: 65535,
    docs: "Port of the coordinator's monitoring endpoint: Prometheus metrics at /metrics, the status page at /, its JSON at /api/status (the URL is printed and logged at start). 0 = any free port; -1 = off. Give a fixed port for Prometheus to scrape.",
  },
  metricsHost: {
    kind: 'string',
    default: '127.0.0.1',
    docs: 'Address the monitoring endpoint listens on: 127.0.0.1 = this machine only; 0.0.0.0 = every interface (it has no authentication: expose it only on a trusted network).',
  },
  curveKeys: {
    kind: 'string',
    default: 'none',
    docs: 'Directory written by `shardface keys generate`: every connection (coordinator and ring) is encrypted and authenticated with ZeroMQ CURVE, and only keys listed in its authorized_keys may connect. none = plain TCP (loopback use).',
  },
  maxFrameMb: {
    kind: 'number',
    default: 64,
    min: 1,
    max: 4096,
    docs: 'Largest frame (MiB) any socket accepts; a peer sending a larger one is disconnected before the frame is read. Must cover the largest legitimate frame: a ring chunk (4 MiB) and the classifier exchange (4 bytes × rows of the global batch, twice that with occlusion adversarial); checked before training starts.',
  },
  // --- occlusion robustness (docs/methods.md#occlusion-robust-adversarial-masking). Flat keys: `occlusion` itself is the mode, so the settings cannot be a dotted group under it.
  occlusion: {
    kind: 'enum',
    values: OCCLUSION_MODES,
    default: 'none',
    docs: 'Occlusion robustness: adversarial = adversarial feature masking plus occlusion segmentation (docs/methods.md#adversarial-training): a mask generator G learns which cells of the last feature map hurt recognition most, the network is trained on clean and masked features (both through the sharded classifier, as one batch of 2 × batch rows per worker) and a segmentation head S predicts the dropped cells. G and S are replicated like the backbone and saved in its checkpoint file.',
  },
  occlusionStartStep: {
    kind: 'int',
    default: 0,
    min: 0,
    docs: 'occlusion adversarial: train without occlusion up to and including this step, so the adversary is warmed up on a network that already recognises faces; 0 = from the first step.',
  },
  occlusionPretrainSteps: {
    kind: 'int',
    default: 20,
    min: 0,
    docs: 'occlusion adversarial: steps of adversary pre-training (docs/methods.md#adversarial-training stage 1) after occlusionStartStep: backbone and classifier frozen, G trained towards the hardest of the candidate masks (landmark windows, halves, random halves). Then joint training.',
  },
  occlusionSegWeight: {
    kind: 'number',
    default: 0.1,
    min: 0,
    docs: "occlusion adversarial: λ_seg, weight of the segmentation loss (per-cell BCE of S on the masked features against the mask, mean over cells) in the backbone's loss ½(L_clean + L_masked) + λ_seg·L_seg.",
  },
  occlusionAdversaryWeight: {
    kind: 'number',
    default: 0.0025,
    min: 0,
    docs: 'occlusion adversarial: weight of the adversary loss BCE(π, M) in joint training (A-Fast-RCNN: 0.0025), applied to the samples passing occlusionGate.',
  },
  occlusionGate: {
    kind: 'number',
    default: 0.1,
    min: 0,
    max: 1,
    docs: "occlusion adversarial: the adversary learns from a sample's sampled mask only when it lowered the target probability by more than this: p_before[y] − p_after[y] > gate.",
  },
  occlusionWidth: {
    kind: 'int',
    default: 256,
    min: 1,
    max: 4096,
    docs: 'occlusion adversarial: hidden channels of the mask generator and the segmentation head (256 in the reference design; docs/methods.md#adversarial-training).',
  },
  occlusionStructuredShare: {
    kind: 'number',
    default: 0.5,
    min: 0,
    max: 1,
    docs: 'occlusion adversarial, joint training: share of the samples masked with one of the docs/methods.md#feature-masks candidates (landmark window, half, random half; "mixed in as data augmentation") instead of a mask sampled from G. 0 = every mask is G\'s; 1 = G is never sampled (pure structured feature dropout).',
  },
  occlusionRandomHalves: {
    kind: 'int',
    default: 3,
    min: 0,
    max: 64,
    docs: 'occlusion adversarial: random-half masks among the pre-training candidates (besides the 7 landmark windows and the 4 halves).',
  },
  // --- end occlusion
} as const satisfies Record<string, KeySpec>;

/** The key table for lookups by any string (command line, config files). */
export const CONFIG_KEYS: Readonly<Record<string, KeySpec>> = KEY_TABLE;

type KeyTable = typeof KEY_TABLE;
type Key = keyof KeyTable;

/** The value type a key's spec describes (an enum's own values). */
type ValueOf<S> = S extends { kind: 'int' | 'number' }
  ? number
  : S extends { kind: 'string' }
    ? string
    : S extends { kind: 'boolean' }
      ? boolean
      : S extends { kind: 'enum'; values: readonly (infer V)[] }
        ? V
        : never;

type FlatKey = Exclude<Key, `${string}.${string}`>;
type GroupOf<K> = K extends `${infer G}.${string}` ? G : never;

/** The resolved training configuration: flat keys as they are, dotted keys as nested groups (margin.s → margin: { s }). */
export type TrainConfig = {
  [K in FlatKey]: ValueOf<KeyTable[K]>;
} & {
  [G in GroupOf<Key>]: { [K in Key as K extends `${G}.${infer Name}` ? Name : never]: ValueOf<KeyTable[K]> };
};

/** Margin presets: the m1/m2/m3 defaults of each margin.type (docs/methods.md#margin-presets). */
export const MARGIN_PRESETS: Readonly<Record<MarginType, { m1: number; m2: number; m3: number }>> = {
  arcface: { m1: 1, m2: 0.5, m3: 0 },
  cosface: { m1: 1, m2: 0, m3: 0.4 },
  combined: { m1: 1, m2: 0.3, m3: 0.2 },
  softmax: { m1: 1, m2: 0, m3: 0 },
};

/** Which of m1, m2, m3 each margin type reads; the others must be neutral (1, 0, 0). */
export const MARGIN_USES: Readonly<Record<MarginType, readonly ('m1' | 'm2' | 'm3')[]>> = {
  arcface: ['m2'],
  cosface: ['m3'],
  combined: ['m1', 'm2', 'm3'],
  softmax: [],
};

/** Human description of a key's type and range, e.g. "a number in (0, 1]". */
export function describeType(spec: KeySpec): string {
  switch (spec.kind) {
    case 'boolean':
      return 'true or false';
    case 'string':
      return 'a string';
    case 'enum':
      return `one of ${spec.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'int':
      return spec.max !== undefined ? `an integer in [${spec.min}, ${spec.max}]` : `an integer ≥ ${spec.min}`;
    case 'number': {
      const lo = spec.min === undefined ? '(−∞' : `${spec.minExclusive ? '(' : '['}${spec.min}`;
      const hi = spec.max === undefined ? '∞)' : `${spec.max}${spec.maxExclusive ? ')' : ']'}`;
      if (spec.min !== undefined && spec.max === undefined) return `a number ${spec.minExclusive ? '>' : '≥'} ${spec.min}`;
      return `a number in ${lo}, ${hi}`;
    }
  }
}
