/**
 * Runs a network description on real tensors. The variables live in one map
 * keyed by tensor name (module.ts); this runner only looks them up.
 *
 * BatchNorm in training mode normalises with the batch statistics (gradients
 * flow through mean and variance; ops/norm-act.ts, one native kernel with its
 * own backward kernel on cpu-native, fused with a following PReLU when the
 * block asks through `batchNormPrelu`; TensorFlow's FusedBatchNormV3 and its
 * gradient op on the tensorflow backend) and writes the running statistics in place.
 * That write is an `assign` of a tensor that does not feed the output, so it
 * contributes nothing to any gradient, and it runs inside its own `tf.tidy`, so
 * no intermediate outlives the call (under a gradient tape the engine's saved
 * copies are freed when the gradient call ends).
 */
import { tf } from '../ops/tf.js';
import { groupedConv2d } from '../ops/grouped-conv.js';
import { batchNormPrelu, batchNormTrain, prelu } from '../ops/norm-act.js';
import type { BatchNorm, Conv2d, Linear, PReLU, Runner } from './module.js';
import type { PendingStats } from './pending-stats.js';

/** What a training-mode BatchNorm does with its new running statistics: write them, drop them, or stage them for a later commit. */
export type StatsMode = 'write' | 'skip' | PendingStats;

export class TensorRunner implements Runner<tf.Tensor> {
  constructor(
    private readonly vars: ReadonlyMap<string, tf.Variable>,
    private readonly training: boolean,
    /** BatchNorm's running statistics in training mode. */
    private readonly stats: StatsMode = 'write',
  ) {}

  private v(name: string): tf.Variable {
    const t = this.vars.get(name);
    if (!t) throw new Error(`missing tensor ${name}`);
    return t;
  }

  conv(l: Conv2d, x: tf.Tensor): tf.Tensor {
    const x4 = x as tf.Tensor4D;
    const w = this.v(`${l.name}.weight`) as unknown as tf.Tensor4D;
    let y: tf.Tensor4D;
    if (l.groups === 1) {
      y = tf.conv2d(x4, w, l.stride, l.pad);
    } else if (l.inChannels === l.groups) {
      // depthwise (one input channel per group): tf's own kernel, filter
      // [k,k,1,C·m] → [k,k,C,m] keeps output channel c·m + j from input c.
      const dw = w.reshape([l.kernel, l.kernel, l.inChannels, l.outChannels / l.inChannels]) as tf.Tensor4D;
      y = tf.depthwiseConv2d(x4, dw, l.stride, l.pad);
    } else {
      y = groupedConv2d(x4, w, { strides: l.stride, pad: l.pad, groups: l.groups });
    }
    return l.bias ? tf.add(y, this.v(`${l.name}.bias`)) : y;
  }

  batchNorm(l: BatchNorm, x: tf.Tensor): tf.Tensor {
    return this.normalize(l, x, null);
  }

  prelu(l: PReLU, x: tf.Tensor): tf.Tensor {
    return prelu(x, this.v(`${l.name}.alpha`));
  }

  batchNormPrelu(bn: BatchNorm, act: PReLU, x: tf.Tensor): tf.Tensor {
    return this.normalize(bn, x, act);
  }

  /** BatchNorm, then `act` when given: one kernel on cpu-native in training mode. */
  private normalize(l: BatchNorm, x: tf.Tensor, act: PReLU | null): tf.Tensor {
    const gamma = this.v(`${l.name}.gamma`);
    const beta = this.v(`${l.name}.beta`);
    const runningMean = this.v(`${l.name}.runningMean`);
    const runningVar = this.v(`${l.name}.runningVar`);
    if (x.shape[x.rank - 1] !== l.channels) throw new Error(`${l.name}: expected ${l.channels} channels, got shape [${x.shape}]`);
    if (!this.training) {
      // y = (x − μ)·γ/√(σ²+ε) + β with the running statistics, folded into one scale and one shift per channel.
      const scale = tf.mul(gamma, tf.rsqrt(tf.add(runningVar, l.eps)));
      const shift = tf.sub(beta, tf.mul(runningMean, scale));
      const y = tf.add(tf.mul(x, scale), shift);
      return act ? this.prelu(act, y) : y;
    }
    const n = x.size / l.channels;
    if (n < 2) throw new Error(`${l.name}: BatchNorm in training mode needs more than one value per channel`);
    // the statistics feed only the running averages, never the loss
    const opts = { statsGradient: false };
    const { y, mean, variance } = act ? batchNormPrelu(x, gamma, beta, this.v(`${act.name}.alpha`), l.eps, opts) : batchNormTrain(x, gamma, beta, l.eps, opts);
    if (this.stats !== 'skip') {
      const write = this.stats === 'write' ? (v: tf.Variable, next: tf.Tensor) => v.assign(next) : (v: tf.Variable, next: tf.Tensor) => (this.stats as PendingStats).stage(v, next);
      updateRunning(runningMean, mean, l.momentum, 1, write);
      updateRunning(runningVar, variance, l.momentum, n / (n - 1), write);
    }
    return y;
  }

  linear(l: Linear, x: tf.Tensor): tf.Tensor {
    const y = tf.matMul(x as tf.Tensor2D, this.v(`${l.name}.weight`) as unknown as tf.Tensor2D);
    return l.bias ? tf.add(y, this.v(`${l.name}.bias`)) : y;
  }

  add(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    return tf.add(a, b);
  }

  sigmoid(x: tf.Tensor): tf.Tensor {
    return tf.sigmoid(x);
  }

  scaleChannels(x: tf.Tensor, gate: tf.Tensor): tf.Tensor {
    return tf.mul(x, gate);
  }

  globalAvgPool(x: tf.Tensor): tf.Tensor {
    return tf.mean(x, [1, 2], true);
  }

  flatten(x: tf.Tensor): tf.Tensor {
    return tf.reshape(x, [x.shape[0]!, -1]);
  }
}

/**
 * running ← (1 − m)·running + m·correction·batch. tf.js has no stop-gradient
 * op; none is needed, because the new value never feeds the output, so
 * backpropagation from the loss never reaches these ops.
 */
function updateRunning(running: tf.Variable, batch: tf.Tensor, momentum: number, correction: number, write: (v: tf.Variable, next: tf.Tensor) => void): void {
  tf.tidy(() => {
    write(running, tf.add(tf.mul(running, 1 - momentum), tf.mul(batch, momentum * correction)));
  });
}
