/**
 * IResNet (docs/methods.md#iresnet; insightface arcface_torch `backbones/iresnet.py`).
 *
 *   stem: conv3×3 s1 (3→64) → BN → PReLU
 *   4 stages, widths 64/128/256/512, the first block of each with stride 2
 *   IBasicBlock: BN → conv3×3 → BN → PReLU → conv3×3 (stride here) → BN, + shortcut
 *                (identity, or conv1×1(stride) → BN), no activation after the add
 *   output: BN2d → flatten → [dropout p = 0: omitted] → FC(+bias) → BN1d (γ frozen at 1)
 *
 * Init as arcface_torch: conv weights N(0, 0.1²); BN γ = 1, β = 0; the FC keeps
 * PyTorch's Linear default U(±1/√in) for weight and bias. BN eps 1e-5.
 *
 * Input sizes: 112 gives the 7×7 final map and the 25,088 → 512 FC of the
 * reference. Other sizes work too; the FC then takes 512·h·w inputs for the
 * final h×w map (arcface_torch hard-codes 7×7). The flatten is NHWC, i.e. a
 * fixed permutation of PyTorch's NCHW flatten: the same model family.
 */
import { bnPrelu, chain, Scope, type BatchNorm, type Block, type Conv2d, type FeatureHeadBlock, type Linear, type NetworkDescription, type PReLU, type Runner } from './module.js';

export const IRESNET_LAYERS = {
  iresnet18: [2, 2, 2, 2],
  iresnet34: [3, 4, 6, 3],
  iresnet50: [3, 4, 14, 3],
  iresnet100: [3, 13, 30, 3],
  iresnet200: [6, 26, 60, 6],
} as const;
export type IResNetName = keyof typeof IRESNET_LAYERS;

const EPS = 1e-5;
const CONV_INIT = { kind: 'normal', std: 0.1 } as const;
const WIDTHS = [64, 128, 256, 512];

class IBasicBlock implements Block {
  private readonly bn1: BatchNorm;
  private readonly conv1: Conv2d;
  private readonly bn2: BatchNorm;
  private readonly prelu: PReLU;
  private readonly conv2: Conv2d;
  private readonly bn3: BatchNorm;
  private readonly downsample: { conv: Conv2d; bn: BatchNorm } | null;

  constructor(s: Scope, inC: number, outC: number, stride: number) {
    this.bn1 = s.batchNorm('bn1', { channels: inC, eps: EPS });
    this.conv1 = s.conv('conv1', { inChannels: inC, outChannels: outC, kernel: 3, pad: 1, init: CONV_INIT });
    this.bn2 = s.batchNorm('bn2', { channels: outC, eps: EPS });
    this.prelu = s.prelu('prelu', outC);
    this.conv2 = s.conv('conv2', { inChannels: outC, outChannels: outC, kernel: 3, stride, pad: 1, init: CONV_INIT });
    this.bn3 = s.batchNorm('bn3', { channels: outC, eps: EPS });
    this.downsample =
      stride !== 1 || inC !== outC
        ? {
            conv: s.conv('downsample.conv', { inChannels: inC, outChannels: outC, kernel: 1, stride, init: CONV_INIT }),
            bn: s.batchNorm('downsample.bn', { channels: outC, eps: EPS }),
          }
        : null;
  }

  forward<T>(r: Runner<T>, x: T): T {
    let y = r.batchNorm(this.bn1, x);
    y = r.conv(this.conv1, y);
    y = bnPrelu(r, this.bn2, this.prelu, y);
    y = r.conv(this.conv2, y);
    y = r.batchNorm(this.bn3, y);
    const shortcut = this.downsample ? r.batchNorm(this.downsample.bn, r.conv(this.downsample.conv, x)) : x;
    return r.add(y, shortcut);
  }
}

class IResNet implements FeatureHeadBlock {
  private readonly stemConv: Conv2d;
  private readonly stemBn: BatchNorm;
  private readonly stemPrelu: PReLU;
  private readonly blocks: IBasicBlock[] = [];
  private readonly bn2: BatchNorm;
  private readonly fc: Linear;
  private readonly featuresBn: BatchNorm;

  constructor(s: Scope, layers: readonly number[], embeddingSize: number, inputSize: number) {
    this.stemConv = s.conv('stem.conv', { inChannels: 3, outChannels: 64, kernel: 3, pad: 1, init: CONV_INIT });
    this.stemBn = s.batchNorm('stem.bn', { channels: 64, eps: EPS });
    this.stemPrelu = s.prelu('stem.prelu', 64);
    let inC = 64;
    let size = inputSize;
    layers.forEach((n, i) => {
      const stage = s.sub(`stage${i + 1}`);
      for (let b = 0; b < n; b++) {
        this.blocks.push(new IBasicBlock(stage.sub(`block${b}`), inC, WIDTHS[i]!, b === 0 ? 2 : 1));
        inC = WIDTHS[i]!;
      }
      size = Math.floor((size - 1) / 2) + 1; // conv3×3, pad 1, stride 2
    });
    this.bn2 = s.batchNorm('bn2', { channels: 512, eps: EPS });
    const fcIn = 512 * size * size;
    const bound = 1 / Math.sqrt(fcIn);
    this.fc = s.linear('fc', { inFeatures: fcIn, outFeatures: embeddingSize, init: { kind: 'uniform', bound }, biasInit: { kind: 'uniform', bound } });
    this.featuresBn = s.batchNorm('features', { channels: embeddingSize, eps: EPS, frozenGamma: true });
  }

  forward<T>(r: Runner<T>, x: T): T {
    return this.head(r, this.features(r, x));
  }

  /** stem + the four stages: the last spatial map (7×7×512 at 112). */
  features<T>(r: Runner<T>, x: T): T {
    return chain(r, this.blocks, bnPrelu(r, this.stemBn, this.stemPrelu, r.conv(this.stemConv, x)));
  }

  /** BN2d → flatten → FC → BN1d. */
  head<T>(r: Runner<T>, f: T): T {
    let y = r.batchNorm(this.bn2, f);
    y = r.flatten(y);
    y = r.linear(this.fc, y);
    return r.batchNorm(this.featuresBn, y);
  }
}

export function describeIResNet(name: IResNetName, opts: { embeddingSize: number; inputSize: number }): NetworkDescription {
  const scope = new Scope();
  const root = new IResNet(scope, IRESNET_LAYERS[name], opts.embeddingSize, opts.inputSize);
  return { name, embeddingSize: opts.embeddingSize, inputSize: opts.inputSize, anyInputSize: false, root, layers: scope.layers };
}
