/**
 * ROC curve and TAR@FAR for 1:1 verification, reproducing sklearn's
 * `roc_curve` (default drop_intermediate=True) and insightface `eval_ijbc.py`'s
 * "nearest FPR" read-out (docs/methods.md#roc-and-tar-at-far).
 */

export interface RocCurve {
  /** False-positive rates, ascending, starting at 0. */
  fpr: Float64Array;
  /** True-positive rates (TAR), starting at 0. */
  tpr: Float64Array;
  /** Score threshold of each point (score ≥ threshold ⇒ accept); the first is +Infinity. */
  thresholds: Float64Array;
}

export interface TarAtFar {
  /** The requested false-accept rate. */
  far: number;
  /** TPR at the ROC point whose FPR is nearest to `far`. */
  tar: number;
  /** That point's actual FPR (may lie above `far`). */
  fpr: number;
  threshold: number;
}

/** The six FARs eval_ijbc.py reports. */
const IJB_FARS: readonly number[] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/**
 * sklearn `roc_curve(labels, scores)`: sort scores descending, cumulate true and
 * false positives at each distinct score, optionally drop collinear points
 * (where both second differences are zero), prepend (0, 0).
 */
export function rocCurve(scores: Float64Array | Float32Array | number[], labels: Uint8Array | boolean[] | number[], opts: { dropIntermediate?: boolean } = {}): RocCurve {
  const n = scores.length;
  if (labels.length !== n) throw new RangeError(`roc: ${n} scores but ${labels.length} labels`);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]!);
  // one point per distinct score: the last index of each run of equal scores
  let tps: number[] = [];
  let fps: number[] = [];
  let thr: number[] = [];
  let tp = 0;
  for (let i = 0; i < n; i++) {
    const idx = order[i]!;
    if (Number.isNaN(scores[idx]!)) throw new RangeError(`roc: score ${idx} is NaN`);
    if (labels[idx]) tp++;
    if (i === n - 1 || scores[order[i + 1]!]! !== scores[idx]!) {
      tps.push(tp);
      fps.push(i + 1 - tp);
      thr.push(scores[idx]!);
    }
  }
  if (tps.length === 0) throw new RangeError('roc: no scores');
  if (tps[tps.length - 1] === 0) throw new RangeError('roc: no positive pairs, TPR undefined');
  if (fps[fps.length - 1] === 0) throw new RangeError('roc: no negative pairs, FPR undefined');
  if ((opts.dropIntermediate ?? true) && tps.length > 2) {
    const keep: number[] = [0];
    for (let i = 1; i < tps.length - 1; i++) {
      const d2f = fps[i + 1]! - 2 * fps[i]! + fps[i - 1]!;
      const d2t = tps[i + 1]! - 2 * tps[i]! + tps[i - 1]!;
      if (d2f !== 0 || d2t !== 0) keep.push(i);
    }
    keep.push(tps.length - 1);
    tps = keep.map((i) => tps[i]!);
    fps = keep.map((i) => fps[i]!);
    thr = keep.map((i) => thr[i]!);
  }
  const m = tps.length + 1;
  const fpr = new Float64Array(m);
  const tpr = new Float64Array(m);
  const thresholds = new Float64Array(m);
  const P = tps[tps.length - 1]!;
  const N = fps[fps.length - 1]!;
  thresholds[0] = Infinity;
  for (let i = 1; i < m; i++) {
    fpr[i] = fps[i - 1]! / N;
    tpr[i] = tps[i - 1]! / P;
    thresholds[i] = thr[i - 1]!;
  }
  return { fpr, tpr, thresholds };
}

/**
 * TAR at each requested FAR, eval_ijbc.py style: on the drop-intermediate ROC
 * take the point with the nearest FPR (|fpr − far| smallest; on a tie the later
 * point, i.e. the larger TPR). The point may lie above the requested FAR.
 */
export function tarAtFar(scores: Float64Array | Float32Array | number[], labels: Uint8Array | boolean[] | number[], fars: readonly number[] = IJB_FARS): TarAtFar[] {
  const roc = rocCurve(scores, labels, { dropIntermediate: true });
  return fars.map((far) => {
    let best = Infinity;
    let at = 0;
    for (let i = 0; i < roc.fpr.length; i++) {
      const d = Math.abs(roc.fpr[i]! - far);
      if (d <= best) {
        best = d;
        at = i;
      }
    }
    return { far, tar: roc.tpr[at]!, fpr: roc.fpr[at]!, threshold: roc.thresholds[at]! };
  });
}
