/**
 * The backbone's optimizer: SGD with momentum (PyTorch semantics: weight decay
 * added to the gradient, v ← μv + g, w ← w − lr·v) or AdamW (decoupled decay),
 * with weight decay skipped where a parameter says so (BatchNorm, biases), and
 * gradient-norm clipping over the whole backbone (torch.nn.utils.clip_grad_norm_).
 */
import { tf } from '../ops/tf.js';

export interface TrainableParam {
  name: string;
  variable: tf.Variable;
  decay: boolean;
}

export type OptimizerSettings = { kind: 'sgd'; momentum: number; weightDecay: number } | { kind: 'adamw'; beta1: number; beta2: number; eps: number; weightDecay: number };

export class BackboneOptimizer {
  private readonly slots = new Map<string, tf.Variable[]>();
  private t = 0;

  constructor(
    private readonly params: TrainableParam[],
    readonly settings: OptimizerSettings,
  ) {
    for (const p of params) {
      const n = settings.kind === 'sgd' ? 1 : 2;
      this.slots.set(
        p.name,
        Array.from({ length: n }, (_, i) => tf.variable(tf.zerosLike(p.variable), false, `${p.name}/slot${i}`)),
      );
    }
  }

  /** Applies one update; `grads` in the order of `params`. Disposes nothing it did not create. */
  step(grads: tf.Tensor[], lr: number): void {
    this.t += 1;
    const s = this.settings;
    tf.tidy(() => {
      this.params.forEach((p, i) => {
        const g = grads[i]!;
        const w = p.variable;
        const slots = this.slots.get(p.name)!;
        if (s.kind === 'sgd') {
          const gd = p.decay && s.weightDecay > 0 ? tf.add(g, tf.mul(w, s.weightDecay)) : g;
          const v = tf.add(tf.mul(slots[0]!, s.momentum), gd);
          slots[0]!.assign(v);
          w.assign(tf.sub(w, tf.mul(v, lr)));
        } else {
          const [m, v] = slots as [tf.Variable, tf.Variable];
          const m1 = tf.add(tf.mul(m, s.beta1), tf.mul(g, 1 - s.beta1));
          const v1 = tf.add(tf.mul(v, s.beta2), tf.mul(tf.square(g), 1 - s.beta2));
          m.assign(m1);
          v.assign(v1);
          const mHat = tf.div(m1, 1 - Math.pow(s.beta1, this.t));
          const vHat = tf.div(v1, 1 - Math.pow(s.beta2, this.t));
          const decayed = p.decay && s.weightDecay > 0 ? tf.mul(w, 1 - lr * s.weightDecay) : w;
          w.assign(tf.sub(decayed, tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), s.eps)), lr)));
        }
      });
    });
  }

  /** Optimizer state for checkpoints. */
  state(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [name, vs] of this.slots) vs.forEach((v, i) => out.set(`${name}/slot${i}`, v));
    return out;
  }

  get stepCount(): number {
    return this.t;
  }

  set stepCount(t: number) {
    this.t = t;
  }

  dispose(): void {
    for (const vs of this.slots.values()) vs.forEach((v) => v.dispose());
  }
}

/**
 * Scales `grads` in place (returns new tensors, disposing the old ones) so their
 * global L2 norm is at most `maxNorm`; returns the norm before clipping.
 */
export function clipGradNorm(grads: tf.Tensor[], maxNorm: number): { grads: tf.Tensor[]; norm: number } {
  const norm = Math.sqrt(tf.tidy(() => tf.addN(grads.map((g) => tf.sum(tf.square(g)))).dataSync()[0]!));
  if (!(maxNorm > 0) || norm <= maxNorm) return { grads, norm };
  const scale = maxNorm / (norm + 1e-6);
  const scaled = grads.map((g) => tf.mul(g, scale));
  grads.forEach((g) => g.dispose());
  return { grads: scaled, norm };
}
