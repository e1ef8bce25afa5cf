/**
 * `tiny`: a small, fast CPU backbone for the demo and the tests, not a published
 * architecture. About 210k parameters and 2–5M MACs per 32–48 px image.
 *
 *   stage1: conv3×3 s2 (3→16)                    → BN → PReLU
 *   stage2: conv3×3 s2 (16→32)  → residual unit   (conv3×3 → BN → PReLU, + x)
 *   stage3: conv3×3 s2 (32→64)  → residual unit
 *   stage4: conv3×3 s2 (64→128)                  → BN → PReLU
 *   global average pool → FC (128→D, +bias) → BN1d
 *
 * Global pooling makes it work at any input size ≥ 16 (16 px leaves a 1×1
 * map).
 *
 * Feature map / head split (occlusion training, docs/methods.md#adversarial-training): features() ends
 * after stage2: [⌈S/4⌉², 32], 10×10 at 40 px, 14×14 at 56 px. A cell there
 * sees a 15-px window, so a drawn occluder lands on a few cells and leaves
 * the others clean, and dropping cells resembles occluding pixels. After
 * stage3 (a 5×5 map at 40 px) every cell sees 39 px, almost the whole image:
 * an occluder corrupts every cell, and training against dropped cells there
 * measurably did not carry over to drawn occluders (README, bench occlusion).
 * head() is stage3 → stage4 → pool → FC → BN. Only the split point is chosen here: forward(),
 * the parameters and their order are the same as without the split. `norm: 'none'` drops every BatchNorm and gives the convs a bias
 * instead: per-sample computation only, so a batch split across workers gives
 * exactly the gradients of the whole batch (the data-parallel exactness test).
 * Init: He normal (fan-out) for conv and FC weights, biases 0, BN eps 1e-5.
 */
import { bnPrelu, chain, heNormalFanOut, Scope, type BatchNorm, type Block, type Conv2d, type FeatureHeadBlock, type Linear, type NetworkDescription, type PReLU, type Runner } from './module.js';

export type TinyNorm = 'batch' | 'none';

const EPS = 1e-5;
const WIDTHS = [16, 32, 64, 128];
const RESIDUAL_STAGES = new Set([1, 2]); // stage2, stage3 (0-based)
/** body blocks: stage1 down, stage2 down + unit, stage3 down + unit, stage4 down; head() starts at stage3's. */
const HEAD_FROM = 3;

/** conv → [BN] → PReLU. */
class ConvUnit implements Block {
  private readonly conv: Conv2d;
  private readonly bn: BatchNorm | null;
  private readonly prelu: PReLU;

  constructor(s: Scope, inC: number, outC: number, stride: number, norm: TinyNorm) {
    this.conv = s.conv('conv', { inChannels: inC, outChannels: outC, kernel: 3, stride, pad: 1, bias: norm === 'none', init: heNormalFanOut(outC, 3) });
    this.bn = norm === 'batch' ? s.batchNorm('bn', { channels: outC, eps: EPS }) : null;
    this.prelu = s.prelu('prelu', outC);
  }

  forward<T>(r: Runner<T>, x: T): T {
    const y = r.conv(this.conv, x);
    return this.bn ? bnPrelu(r, this.bn, this.prelu, y) : r.prelu(this.prelu, y);
  }
}

class Residual implements Block {
  constructor(private readonly unit: ConvUnit) {}

  forward<T>(r: Runner<T>, x: T): T {
    return r.add(this.unit.forward(r, x), x);
  }
}

class Tiny implements FeatureHeadBlock {
  private readonly body: Block[] = [];
  /** stage3 and stage4: the part of the convolutions that head() runs. */
  private readonly tail: Block[];
  private readonly fc: Linear;
  private readonly bn: BatchNorm | null;

  constructor(s: Scope, embeddingSize: number, norm: TinyNorm) {
    let inC = 3;
    WIDTHS.forEach((c, i) => {
      const st = s.sub(`stage${i + 1}`);
      this.body.push(new ConvUnit(st.sub('down'), inC, c, 2, norm));
      if (RESIDUAL_STAGES.has(i)) this.body.push(new Residual(new ConvUnit(st.sub('block0'), c, c, 1, norm)));
      inC = c;
    });
    this.tail = this.body.splice(HEAD_FROM);
    this.fc = s.linear('fc', { inFeatures: inC, outFeatures: embeddingSize, bias: true, init: heNormalFanOut(embeddingSize) });
    this.bn = norm === 'batch' ? s.batchNorm('features', { channels: embeddingSize, eps: EPS }) : null;
  }

  forward<T>(r: Runner<T>, x: T): T {
    return this.head(r, this.features(r, x));
  }

  /** stage1, stage2: [B, ⌈S/4⌉, ⌈S/4⌉, 32] (see the split above). */
  features<T>(r: Runner<T>, x: T): T {
    return chain(r, this.body, x);
  }

  /** stage3, stage4 → global average pool → FC → BN1d. */
  head<T>(r: Runner<T>, f: T): T {
    const y = r.linear(this.fc, r.flatten(r.globalAvgPool(chain(r, this.tail, f))));
    return this.bn ? r.batchNorm(this.bn, y) : y;
  }
}

export function describeTiny(opts: { embeddingSize: number; inputSize: number; norm: TinyNorm }): NetworkDescription {
  if (opts.inputSize < 16) throw new Error(`tiny: input size ${opts.inputSize} < 16`);
  const scope = new Scope();
  const root = new Tiny(scope, opts.embeddingSize, opts.norm);
  return { name: 'tiny', embeddingSize: opts.embeddingSize, inputSize: opts.inputSize, anyInputSize: true, root, layers: scope.layers };
}
