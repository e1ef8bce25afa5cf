/**
 * MobileFaceNet as arcface_torch `mbf` (docs/methods.md#mobilefacenet): scale 2, blocks (1, 4, 6, 2).
 *
 *   ConvBlock 3×3 s2 (3→128) → ConvBlock 3×3 grouped (128→128, 64 groups)
 *   → DepthWise(128→128, s2, g128) → 4 × residual DepthWise(128, g128)
 *   → DepthWise(128→256, s2, g256) → 6 × residual DepthWise(256, g256)
 *   → DepthWise(256→256, s2, g512) → 2 × residual DepthWise(256, g256)
 *   → ConvBlock 1×1 (256→512)
 *   → GDC: LinearBlock 7×7 depthwise (512) → flatten → Linear(512→D, no bias) → BN1d
 *
 * ConvBlock = conv → BN → PReLU; LinearBlock = conv → BN;
 * DepthWise(in, out, s, g) = ConvBlock 1×1 (in→g) → ConvBlock 3×3 depthwise (g, stride s)
 * → LinearBlock 1×1 (g→out), residual when in = out and s = 1.
 *
 * Init as arcface_torch: conv and Linear weights Kaiming normal (fan_out,
 * relu); BN γ = 1, β = 0; BN eps 1e-5. The GDC's 7×7 valid conv needs a 7×7
 * final map, so the input must be 97…112 pixels (112 in practice).
 */
import { bnPrelu, chain, heNormalFanOut, Scope, type BatchNorm, type Block, type Conv2d, type FeatureHeadBlock, type Linear, type NetworkDescription, type PReLU, type Runner } from './module.js';

const EPS = 1e-5;

interface ConvOpts {
  kernel: number;
  stride?: number;
  pad?: number;
  groups?: number;
}

/** conv → BN → PReLU, or conv → BN when `act` is false (LinearBlock). */
class ConvBlock implements Block {
  private readonly conv: Conv2d;
  private readonly bn: BatchNorm;
  private readonly prelu: PReLU | null;

  constructor(s: Scope, inC: number, outC: number, o: ConvOpts, act: boolean) {
    this.conv = s.conv('conv', { inChannels: inC, outChannels: outC, ...o, init: heNormalFanOut(outC, o.kernel) });
    this.bn = s.batchNorm('bn', { channels: outC, eps: EPS });
    this.prelu = act ? s.prelu('prelu', outC) : null;
  }

  forward<T>(r: Runner<T>, x: T): T {
    const y = r.conv(this.conv, x);
    return this.prelu ? bnPrelu(r, this.bn, this.prelu, y) : r.batchNorm(this.bn, y);
  }
}

class DepthWise implements Block {
  private readonly expand: ConvBlock;
  private readonly depthwise: ConvBlock;
  private readonly project: ConvBlock;

  constructor(
    s: Scope,
    inC: number,
    outC: number,
    stride: number,
    groups: number,
    private readonly residual: boolean,
  ) {
    this.expand = new ConvBlock(s.sub('expand'), inC, groups, { kernel: 1 }, true);
    this.depthwise = new ConvBlock(s.sub('depthwise'), groups, groups, { kernel: 3, stride, pad: 1, groups }, true);
    this.project = new ConvBlock(s.sub('project'), groups, outC, { kernel: 1 }, false);
  }

  forward<T>(r: Runner<T>, x: T): T {
    const y = this.project.forward(r, this.depthwise.forward(r, this.expand.forward(r, x)));
    return this.residual ? r.add(y, x) : y;
  }
}

class MobileFaceNet implements FeatureHeadBlock {
  private readonly body: Block[] = [];
  private readonly gdcConv: ConvBlock;
  private readonly gdcLinear: Linear;
  private readonly gdcBn: BatchNorm;

  constructor(s: Scope, embeddingSize: number, blocks: readonly number[], scale: number) {
    const c1 = 64 * scale;
    const c2 = 128 * scale;
    this.body.push(new ConvBlock(s.sub('stem'), 3, c1, { kernel: 3, stride: 2, pad: 1 }, true));
    if (blocks[0] !== 1) throw new Error('mobilefacenet: only blocks[0] = 1 is implemented');
    this.body.push(new ConvBlock(s.sub('stem2'), c1, c1, { kernel: 3, pad: 1, groups: 64 }, true));
    // [input, output, groups of the down-sampling DepthWise, groups of the residual ones, count]
    const stages: [number, number, number, number, number][] = [
      [c1, c1, 128, 128, blocks[1]!],
      [c1, c2, 256, 256, blocks[2]!],
      [c2, c2, 512, 256, blocks[3]!],
    ];
    stages.forEach(([inC, outC, gDown, gRes, n], i) => {
      const st = s.sub(`stage${i + 2}`);
      this.body.push(new DepthWise(st.sub('down'), inC, outC, 2, gDown, false));
      for (let b = 0; b < n; b++) this.body.push(new DepthWise(st.sub(`block${b}`), outC, outC, 1, gRes, true));
    });
    this.body.push(new ConvBlock(s.sub('convSep'), c2, 512, { kernel: 1 }, true));
    this.gdcConv = new ConvBlock(s.sub('gdc'), 512, 512, { kernel: 7, groups: 512 }, false);
    this.gdcLinear = s.linear('gdc.linear', { inFeatures: 512, outFeatures: embeddingSize, bias: false, init: heNormalFanOut(embeddingSize) });
    this.gdcBn = s.batchNorm('gdc.features', { channels: embeddingSize, eps: EPS });
  }

  forward<T>(r: Runner<T>, x: T): T {
    return this.head(r, this.features(r, x));
  }

  /** Everything up to convSep: the 7×7×512 map. */
  features<T>(r: Runner<T>, x: T): T {
    return chain(r, this.body, x);
  }

  /** GDC: 7×7 depthwise → flatten → Linear → BN1d. */
  head<T>(r: Runner<T>, f: T): T {
    const y = r.flatten(this.gdcConv.forward(r, f));
    return r.batchNorm(this.gdcBn, r.linear(this.gdcLinear, y));
  }
}

export function describeMobileFaceNet(opts: { embeddingSize: number; inputSize: number }): NetworkDescription {
  const scope = new Scope();
  const root = new MobileFaceNet(scope, opts.embeddingSize, [1, 4, 6, 2], 2);
  return { name: 'mobilefacenet', embeddingSize: opts.embeddingSize, inputSize: opts.inputSize, anyInputSize: false, root, layers: scope.layers };
}
