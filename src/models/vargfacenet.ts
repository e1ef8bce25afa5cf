/**
 * VarGFaceNet (docs/methods.md#vargfacenet; zma-c-137/VarGFaceNet, insightface
 * `arcface_mxnet/symbol/vargfacenet.py`), multiplier 1.25, factor 2, 8
 * channels per group, units [3, 7, 4], last channels 1024.
 *
 *   head:  conv3×3 s1 (3→40) → BN → PReLU → normal-type block (s2, factor 1,
 *          Sep(40→40, s2, no act) shortcut)                      40 × 56²
 *   stage2: Down(40→80) + 2 × Norm(80)                           80 × 28²
 *   stage3: Down(80→160) + 6 × Norm(160)                        160 × 14²
 *   stage4: Down(160→320) + 3 × Norm(320)                       320 × 7²
 *   embed: 1×1 (320→1024) → BN → PReLU → 7×7 VarG (128 groups, valid) → BN
 *          → 1×1 (1024→512) → BN → PReLU → FC 512→D (+bias) → BN
 *
 * Sep(in→out, s, factor) = VarG conv 3×3 (groups in/8, in→in·factor) → BN →
 * PReLU → 1×1 (in·factor→out) → BN → [PReLU unless "no act"].
 * Norm(C): Sep → Sep(no act) → SE → + x → PReLU.
 * Down(in→out): two parallel Sep(in→out, s2, no act) summed → PReLU →
 * Sep(out→out, no act) → + Sep(in→out, s2, no act) shortcut → PReLU; no SE.
 * SE: avg pool → 1×1 (C→C/4, +bias) → PReLU → 1×1 (C/4→C, +bias) → sigmoid → × x.
 *
 * Options follow the official repo: SE on (`se: false` gives insightface's
 * `net_se = 0`); final BN with a learnable γ (insightface's output 'J' freezes
 * it). BN eps 2e-5, momentum 0.1 in PyTorch terms (MXNet 0.9). Init: MXNet
 * Xavier(gaussian, 'out', magnitude 2) = He normal over fan-out, biases 0.
 *
 * Preprocessing: the MXNet symbol computes (x − 127.5)·0.0078125 =
 * (x − 127.5)/128, while shardface feeds (x/255 − 0.5)/0.5 = (x − 127.5)/127.5,
 * i.e. the same input times 128/127.5 = 1.0039. The first conv has no bias
 * and is followed by BatchNorm, which divides out any constant input scale
 * (up to its eps), so the two are the same network; we take ours as is.
 */
import { bnPrelu, chain, heNormalFanOut, Scope, type BatchNorm, type Block, type Conv2d, type FeatureHeadBlock, type Linear, type NetworkDescription, type PReLU, type Runner } from './module.js';

const EPS = 2e-5;
const GROUP_BASE = 8;
const SE_RATIO = 4;

/** The separable unit Sep(in→out, stride, factor), optionally without its final PReLU. */
class Sep implements Block {
  private readonly varg: Conv2d;
  private readonly bn1: BatchNorm;
  private readonly act1: PReLU;
  private readonly pointwise: Conv2d;
  private readonly bn2: BatchNorm;
  private readonly act2: PReLU | null;

  constructor(s: Scope, inC: number, outC: number, stride: number, factor: number, act: boolean) {
    if (inC % GROUP_BASE !== 0) throw new Error(`${s.prefix}: ${inC} channels not divisible by ${GROUP_BASE}`);
    const mid = inC * factor;
    this.varg = s.conv('varg', { inChannels: inC, outChannels: mid, kernel: 3, stride, pad: 1, groups: inC / GROUP_BASE, init: heNormalFanOut(mid, 3) });
    this.bn1 = s.batchNorm('bn1', { channels: mid, eps: EPS });
    this.act1 = s.prelu('prelu1', mid);
    this.pointwise = s.conv('pointwise', { inChannels: mid, outChannels: outC, kernel: 1, init: heNormalFanOut(outC) });
    this.bn2 = s.batchNorm('bn2', { channels: outC, eps: EPS });
    this.act2 = act ? s.prelu('prelu2', outC) : null;
  }

  forward<T>(r: Runner<T>, x: T): T {
    let y = bnPrelu(r, this.bn1, this.act1, r.conv(this.varg, x));
    y = r.conv(this.pointwise, y);
    return this.act2 ? bnPrelu(r, this.bn2, this.act2, y) : r.batchNorm(this.bn2, y);
  }
}

class SqueezeExcite implements Block {
  private readonly reduce: Conv2d;
  private readonly act: PReLU;
  private readonly expand: Conv2d;

  constructor(s: Scope, c: number) {
    const mid = c / SE_RATIO;
    this.reduce = s.conv('reduce', { inChannels: c, outChannels: mid, kernel: 1, bias: true, init: heNormalFanOut(mid) });
    this.act = s.prelu('prelu', mid);
    this.expand = s.conv('expand', { inChannels: mid, outChannels: c, kernel: 1, bias: true, init: heNormalFanOut(c) });
  }

  forward<T>(r: Runner<T>, x: T): T {
    const g = r.sigmoid(r.conv(this.expand, r.prelu(this.act, r.conv(this.reduce, r.globalAvgPool(x)))));
    return r.scaleChannels(x, g);
  }
}

/** Normal block (vargnet_block): identity shortcut, or a Sep projection in the head. */
class NormalBlock implements Block {
  private readonly shortcut: Sep | null;
  private readonly sep1: Sep;
  private readonly sep2: Sep;
  private readonly se: SqueezeExcite | null;
  private readonly act: PReLU;

  constructor(s: Scope, c: number, stride: number, factor: number, se: boolean) {
    this.shortcut = stride !== 1 ? new Sep(s.sub('shortcut'), c, c, stride, factor, false) : null;
    this.sep1 = new Sep(s.sub('sep1'), c, c, stride, factor, true);
    this.sep2 = new Sep(s.sub('sep2'), c, c, 1, factor, false);
    this.se = se ? new SqueezeExcite(s.sub('se'), c) : null;
    this.act = s.prelu('prelu', c);
  }

  forward<T>(r: Runner<T>, x: T): T {
    const shortcut = this.shortcut ? this.shortcut.forward(r, x) : x;
    let y = this.sep2.forward(r, this.sep1.forward(r, x));
    if (this.se) y = this.se.forward(r, y);
    return r.prelu(this.act, r.add(y, shortcut));
  }
}

/** Down-sampling block (vargnet_branch_merge_block). */
class DownBlock implements Block {
  private readonly shortcut: Sep;
  private readonly branch1: Sep;
  private readonly branch2: Sep;
  private readonly mergeAct: PReLU;
  private readonly sep2: Sep;
  private readonly act: PReLU;

  constructor(s: Scope, inC: number, outC: number, factor: number) {
    this.shortcut = new Sep(s.sub('shortcut'), inC, outC, 2, factor, false);
    this.branch1 = new Sep(s.sub('branch1'), inC, outC, 2, factor, false);
    this.branch2 = new Sep(s.sub('branch2'), inC, outC, 2, factor, false);
    this.mergeAct = s.prelu('mergePrelu', outC);
    this.sep2 = new Sep(s.sub('sep2'), outC, outC, 1, factor, false);
    this.act = s.prelu('prelu', outC);
  }

  forward<T>(r: Runner<T>, x: T): T {
    const shortcut = this.shortcut.forward(r, x);
    const merged = r.prelu(this.mergeAct, r.add(this.branch1.forward(r, x), this.branch2.forward(r, x)));
    return r.prelu(this.act, r.add(this.sep2.forward(r, merged), shortcut));
  }
}

class VarGFaceNet implements FeatureHeadBlock {
  private readonly headConv: Conv2d;
  private readonly headBn: BatchNorm;
  private readonly headAct: PReLU;
  private readonly blocks: Block[] = [];
  private readonly embConv: Conv2d;
  private readonly embBn: BatchNorm;
  private readonly embAct: PReLU;
  private readonly embVarg: Conv2d;
  private readonly embVargBn: BatchNorm;
  private readonly embPointwise: Conv2d;
  private readonly embPointwiseBn: BatchNorm;
  private readonly embPointwiseAct: PReLU;
  private readonly fc: Linear;
  private readonly featuresBn: BatchNorm;

  constructor(s: Scope, embeddingSize: number, se: boolean) {
    const multiplier = 1.25;
    const factor = 2;
    const widths = [32, 64, 128, 256].map((c) => Math.trunc(c * multiplier)); // 40, 80, 160, 320
    const units = [3, 7, 4];
    const last = 1024;

    const head = s.sub('head');
    this.headConv = head.conv('conv', { inChannels: 3, outChannels: widths[0]!, kernel: 3, pad: 1, init: heNormalFanOut(widths[0]!, 3) });
    this.headBn = head.batchNorm('bn', { channels: widths[0]!, eps: EPS });
    this.headAct = head.prelu('prelu', widths[0]!);
    this.blocks.push(new NormalBlock(head.sub('block'), widths[0]!, 2, 1, se));

    units.forEach((n, i) => {
      const st = s.sub(`stage${i + 2}`);
      this.blocks.push(new DownBlock(st.sub('down'), widths[i]!, widths[i + 1]!, factor));
      for (let b = 0; b < n - 1; b++) this.blocks.push(new NormalBlock(st.sub(`block${b}`), widths[i + 1]!, 1, factor, se));
    });

    const emb = s.sub('embed');
    this.embConv = emb.conv('conv', { inChannels: widths[3]!, outChannels: last, kernel: 1, init: heNormalFanOut(last) });
    this.embBn = emb.batchNorm('bn', { channels: last, eps: EPS });
    this.embAct = emb.prelu('prelu', last);
    this.embVarg = emb.conv('varg', { inChannels: last, outChannels: last, kernel: 7, groups: last / GROUP_BASE, init: heNormalFanOut(last, 7) });
    this.embVargBn = emb.batchNorm('vargBn', { channels: last, eps: EPS });
    this.embPointwise = emb.conv('pointwise', { inChannels: last, outChannels: last / 2, kernel: 1, init: heNormalFanOut(last / 2) });
    this.embPointwiseBn = emb.batchNorm('pointwiseBn', { channels: last / 2, eps: EPS });
    this.embPointwiseAct = emb.prelu('pointwisePrelu', last / 2);
    this.fc = emb.linear('fc', { inFeatures: last / 2, outFeatures: embeddingSize, bias: true, init: heNormalFanOut(embeddingSize) });
    this.featuresBn = emb.batchNorm('features', { channels: embeddingSize, eps: EPS });
  }

  forward<T>(r: Runner<T>, x: T): T {
    return this.head(r, this.features(r, x));
  }

  /** head conv + the stages: the last spatial map (7×7×320 at 112). */
  features<T>(r: Runner<T>, x: T): T {
    return chain(r, this.blocks, r.prelu(this.headAct, r.batchNorm(this.headBn, r.conv(this.headConv, x))));
  }

  /** The embedding block: 1×1 → 7×7 variable-group conv → 1×1 → FC → BN1d. */
  head<T>(r: Runner<T>, f: T): T {
    let y = r.prelu(this.embAct, r.batchNorm(this.embBn, r.conv(this.embConv, f)));
    y = r.batchNorm(this.embVargBn, r.conv(this.embVarg, y));
    y = r.prelu(this.embPointwiseAct, r.batchNorm(this.embPointwiseBn, r.conv(this.embPointwise, y)));
    return r.batchNorm(this.featuresBn, r.linear(this.fc, r.flatten(y)));
  }
}

export function describeVarGFaceNet(opts: { embeddingSize: number; inputSize: number; se: boolean }): NetworkDescription {
  const scope = new Scope();
  const root = new VarGFaceNet(scope, opts.embeddingSize, opts.se);
  return { name: 'vargfacenet', embeddingSize: opts.embeddingSize, inputSize: opts.inputSize, anyInputSize: false, root, layers: scope.layers };
}
