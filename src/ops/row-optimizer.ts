/**
 * A classifier shard's weight and optimizer state, and the sparse update of
 * the rows that were active in a step (docs/methods.md#sparse-row-updates, "v1" semantics).
 *
 * v1 (arcface_torch partial_fc.py, mxnet memory bank): only the sampled rows
 * and their optimizer state change. An unsampled row gets no weight decay and
 * its momentum (or Adam moments) is kept, untouched, for the next step that
 * samples it; its bits do not change at all. This is what the Partial FC paper
 * describes ("only a subset is selected and updated in each iteration"), and
 * it is the semantics under which a shard never has to touch rows it did not
 * sample: the update costs O(active rows), not O(shard). (v2 would decay every
 * row and keep moving it with stale momentum.) With sample rate 1 every row is
 * active and v1 = v2 = plain SGD/AdamW on the whole classifier.
 *
 * AdamW: the step count is shared by the whole shard (one counter incremented
 * per update call), as in v1 where the swapped-in parameter keeps one `step`;
 * bias correction therefore uses the number of updates of the shard, not of
 * the row. Standard decoupled AdamW (PyTorch): w ← w(1 − lr·wd), then Adam.
 *
 * Three paths, same arithmetic, bit-identical results:
 *  - fused, in place (backend has SfRowSgdUpdate / SfRowAdamWUpdate, i.e.
 *    cpu-native): the kernel writes the active rows straight into the
 *    variables' buffers, O(|index|·D) whatever the shard size; float32
 *    operations in the composite's order, so the results are bit-identical;
 *  - composite, rows written in place (backend has SfWriteRows: tensorflow,
 *    GPU included, and cpu; row-write.ts): rows are gathered, updated with
 *    tfjs ops and written back into the variables' buffers, O(|index|·D);
 *  - composite, scattered (any other backend, or `rowWrite: 'scatter'`): the
 *    same, written back with tf.tensorScatterUpdate, which copies the whole
 *    C×D variable each step.
 * When `index` is every row in order the composite assigns whole variables.
 *
 * Invariant for the in-place path: a ShardState's variables are owned by the
 * state. Nothing may keep a zero-copy view of their buffers across an update:
 * on the cpu backends dataSync()/data() return the storage itself and a
 * contiguous tf.slice is a subarray of it, so copy what you read (gatherRows
 * does) or finish with it before the next updateRows. Tensors that share the
 * buffer by reference count (tf.clone, reshape, a tensor a variable was made
 * from) are safe: the kernel sees refCount > 1 and the variable gets a private
 * copy first (see src/ops/native/kernels-classifier.ts). On tensorflow the
 * same holds for TensorFlow's own views of a variable (tf.reshape, a slice
 * along the first axis, which share its buffer without a refCount): finish
 * with them before the next updateRows.
 */
import { tf } from './tf.js';
import { Rng, deriveSeed } from '../common/random.js';
import { ROW_WRITE_KERNEL } from './row-write.js';

export type ShardOptimizerKind = 'sgd' | 'adamw';

/** In-place fused kernels (src/ops/native/classifier.cc), used when the current backend registers them. */
export const ROW_SGD_KERNEL = 'SfRowSgdUpdate';
export const ROW_ADAMW_KERNEL = 'SfRowAdamWUpdate';
export const GATHER_ROWS_KERNEL = 'SfGatherRows';

function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

export interface SgdHyper {
  /** Optional tag; must match the shard's optimizer when given. */
  kind?: 'sgd';
  lr: number;
  momentum: number;
  weightDecay: number;
}

export interface AdamWHyper {
  /** Optional tag; must match the shard's optimizer when given. */
  kind?: 'adamw';
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** Hyper-parameters of one update: SGD or AdamW, matching the shard's optimizer. */
export type RowHyperParams = SgdHyper | AdamWHyper;

export interface ShardState {
  optimizer: ShardOptimizerKind;
  /** Rows (classes) in the shard. */
  count: number;
  /** Embedding size. */
  dim: number;
  /** W, count×dim. */
  weight: tf.Variable<tf.Rank.R2>;
  /** SGD momentum buffer (count×dim), null for AdamW. */
  momentum: tf.Variable<tf.Rank.R2> | null;
  /** AdamW first moment (count×dim), null for SGD. */
  expAvg: tf.Variable<tf.Rank.R2> | null;
  /** AdamW second moment (count×dim), null for SGD. */
  expAvgSq: tf.Variable<tf.Rank.R2> | null;
  /** Update calls so far (AdamW bias correction; shared by all rows). */
  step: number;
}

/** Standard deviation of the classifier initialisation, N(0, 0.01²) (docs/methods.md#class-ranges). */
const INIT_STD = 0.01;

/**
 * A fresh shard. `init` is either the weight values (count·dim, row-major) or
 * the Rng to draw N(0, 0.01²) from; `rng` is the Rng used when `init` is
 * absent or null. Without either, a fixed Rng (seed 0, "classifier-init") is
 * used, so the result is still deterministic.
 *
 * Given values are copied (`initOwnership` 'copy', the default): on the cpu
 * backends a tensor made from a Float32Array uses that very array, and the
 * in-place update would otherwise write into the caller's array. With 'adopt'
 * the state takes the array over without a copy (saves C·D floats of peak
 * memory); the caller must not use it afterwards.
 */
export function createShardState(count: number, dim: number, optimizer: ShardOptimizerKind, init?: Float32Array | Rng | null, rng?: Rng, initOwnership: 'copy' | 'adopt' = 'copy'): ShardState {
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`createShardState: count must be a non-negative integer, got ${count}`);
  if (!Number.isSafeInteger(dim) || dim < 1) throw new Error(`createShardState: dim must be a positive integer, got ${dim}`);
  if (optimizer !== 'sgd' && optimizer !== 'adamw') throw new Error(`createShardState: unknown optimizer ${JSON.stringify(optimizer)} (expected sgd or adamw)`);
  let values: Float32Array;
  if (init instanceof Float32Array) {
    if (init.length !== count * dim) throw new Error(`createShardState: init has ${init.length} values, expected ${count}×${dim} = ${count * dim}`);
    values = initOwnership === 'adopt' ? init : init.slice();
  } else {
    const source = init ?? rng ?? new Rng(deriveSeed(0, 'classifier-init'));
    values = source.fillNormal(new Float32Array(count * dim), 0, INIT_STD);
  }
  // Each variable the only holder of its buffer (refCount 1): the initial tensor is disposed.
  const own = (t: tf.Tensor2D): tf.Variable<tf.Rank.R2> => {
    const v = tf.variable(t, false);
    t.dispose();
    return v;
  };
  // With the in-place update (cpu-native) the optimizer state is written into memory pages
  // as rows get sampled; touch them all now, so that steps run at steady-state speed and
  // the process's memory shows what the state really costs (C·D floats per buffer).
  const prefault = hasKernel(ROW_SGD_KERNEL);
  const zeros = () => own(prefault ? tf.tensor2d(new Float32Array(count * dim).fill(0), [count, dim]) : (tf.zeros([count, dim]) as tf.Tensor2D));
  return {
    optimizer,
    count,
    dim,
    weight: own(tf.tensor2d(values, [count, dim])),
    momentum: optimizer === 'sgd' ? zeros() : null,
    expAvg: optimizer === 'adamw' ? zeros() : null,
    expAvgSq: optimizer === 'adamw' ? zeros() : null,
    step: 0,
  };
}

export function disposeShardState(state: ShardState): void {
  tf.dispose([state.weight, state.momentum, state.expAvg, state.expAvgSq].filter((v): v is tf.Variable<tf.Rank.R2> => v !== null));
}

function checkIndex(state: ShardState, index: Int32Array): boolean {
  let identity = index.length === state.count;
  for (let i = 0; i < index.length; i++) {
    const r = index[i]!;
    if (r < 0 || r >= state.count) throw new Error(`row index ${r} at position ${i} outside [0, ${state.count})`);
    if (i > 0 && r <= index[i - 1]!) throw new Error(`row indices must be strictly ascending (position ${i}: ${index[i - 1]} then ${r})`);
    if (r !== i) identity = false;
  }
  return identity;
}

/**
 * The active weight rows W[index] (a new tensor; the caller disposes it, and
 * must do so before the next updateRows, or that update copies the whole
 * shard once to keep this tensor's values). Every row in order: tf.clone,
 * which shares the variable's buffer (O(1), no copy of the C×D matrix).
 */
export function gatherRows(state: ShardState, index: Int32Array): tf.Tensor2D {
  if (checkIndex(state, index)) return tf.clone(state.weight);
  if (hasKernel(GATHER_ROWS_KERNEL)) {
    const idx = tf.tensor1d(index, 'int32');
    const rows = tf.engine().runKernel(GATHER_ROWS_KERNEL, { x: state.weight, index: idx }) as tf.Tensor2D;
    idx.dispose();
    return rows;
  }
  return tf.gather(state.weight, index) as tf.Tensor2D;
}

/** Runs a fused in-place update kernel and points each variable at its result (a no-op when in place). */
function updateInPlace(kernel: string, inputs: tf.NamedTensorMap, variables: tf.Variable<tf.Rank.R2>[], index: Int32Array, attrs: Record<string, unknown>): void {
  const idx = tf.tensor1d(index, 'int32');
  try {
    const outs = tf.engine().runKernel(kernel, { ...inputs, index: idx }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D[];
    variables.forEach((v, i) => {
      if (outs[i]!.dataId !== v.dataId) v.assign(outs[i]!);
    });
    tf.dispose(outs);
  } finally {
    idx.dispose();
  }
}

function isSgd(hp: RowHyperParams): hp is SgdHyper {
  return hp.kind !== undefined ? hp.kind === 'sgd' : 'momentum' in hp;
}

function checkHyper(hp: object, keys: string[]): void {
  for (const k of keys) {
    const v = (hp as Record<string, unknown>)[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`updateRows: hyper-parameter ${k} must be a finite number, got ${String(v)}`);
  }
}

/**
 * Applies one optimizer step to the rows `index` (strictly ascending, the same
 * rows the gradient belongs to): `gradRows[j]` is ∂L/∂W[index[j]]. Rows not in
 * `index` and their state are left bit-for-bit unchanged.
 *   SGD:   v ← μ·v + (g + wd·w),  w ← w − lr·v
 *   AdamW: w ← w·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 *          w ← w − lr·(m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + eps)
 */
export interface UpdateRowsOptions {
  /** How the composite writes the rows back: in place where the backend can (default), or by scatter (the reference the tests compare with). */
  rowWrite?: 'in-place' | 'scatter';
}

export function updateRows(state: ShardState, index: Int32Array, gradRows: tf.Tensor2D, hp: RowHyperParams, opts: UpdateRowsOptions = {}): void {
  const all = checkIndex(state, index);
  if (gradRows.rank !== 2 || gradRows.shape[0] !== index.length || gradRows.shape[1] !== state.dim)
    throw new Error(`updateRows: gradient is [${gradRows.shape.join(',')}], expected [${index.length},${state.dim}]`);
  if (index.length === 0) return;
  state.step += 1;

  if (state.optimizer === 'sgd' && isSgd(hp) && hasKernel(ROW_SGD_KERNEL)) {
    checkHyper(hp, ['lr', 'momentum', 'weightDecay']);
    // the scalars as the composite's scalar tensors hold them (float32)
    updateInPlace(ROW_SGD_KERNEL, { weight: state.weight, momentum: state.momentum!, grad: gradRows }, [state.weight, state.momentum!], index, {
      lr: Math.fround(hp.lr),
      momentum: Math.fround(hp.momentum),
      weightDecay: Math.fround(hp.weightDecay),
    });
    return;
  }
  if (state.optimizer === 'adamw' && !isSgd(hp) && hasKernel(ROW_ADAMW_KERNEL)) {
    checkHyper(hp, ['lr', 'beta1', 'beta2', 'eps', 'weightDecay']);
    const bc1 = 1 - Math.pow(hp.beta1, state.step);
    const bc2 = 1 - Math.pow(hp.beta2, state.step);
    const consts = [1 - hp.lr * hp.weightDecay, hp.beta1, 1 - hp.beta1, hp.beta2, 1 - hp.beta2, Math.sqrt(bc2), hp.eps, hp.lr / bc1].map(Math.fround);
    const vars = [state.weight, state.expAvg!, state.expAvgSq!];
    updateInPlace(ROW_ADAMW_KERNEL, { weight: vars[0]!, expAvg: vars[1]!, expAvgSq: vars[2]!, grad: gradRows }, vars, index, { consts });
    return;
  }

  const buffers: tf.Variable<tf.Rank.R2>[] = [state.weight];
  let compute: (w: tf.Tensor2D, bufs: tf.Tensor2D[]) => tf.Tensor2D[];
  if (state.optimizer === 'sgd') {
    if (!isSgd(hp)) throw new Error('updateRows: SGD shard needs {lr, momentum, weightDecay}');
    checkHyper(hp, ['lr', 'momentum', 'weightDecay']);
    buffers.push(state.momentum!);
    compute = (w, [v]) => {
      const vNew = tf.add(tf.mul(v!, hp.momentum), tf.add(gradRows, tf.mul(w, hp.weightDecay))) as tf.Tensor2D;
      return [tf.sub(w, tf.mul(vNew, hp.lr)) as tf.Tensor2D, vNew];
    };
  } else {
    if (isSgd(hp)) throw new Error('updateRows: AdamW shard needs {lr, beta1, beta2, eps, weightDecay}');
    checkHyper(hp, ['lr', 'beta1', 'beta2', 'eps', 'weightDecay']);
    buffers.push(state.expAvg!, state.expAvgSq!);
    const bc1 = 1 - Math.pow(hp.beta1, state.step);
    const bc2 = 1 - Math.pow(hp.beta2, state.step);
    compute = (w, [m, v]) => {
      const decayed = tf.mul(w, 1 - hp.lr * hp.weightDecay);
      const mNew = tf.add(tf.mul(m!, hp.beta1), tf.mul(gradRows, 1 - hp.beta1)) as tf.Tensor2D;
      const vNew = tf.add(tf.mul(v!, hp.beta2), tf.mul(tf.square(gradRows), 1 - hp.beta2)) as tf.Tensor2D;
      const denom = tf.add(tf.div(tf.sqrt(vNew), Math.sqrt(bc2)), hp.eps);
      return [tf.sub(decayed, tf.mul(tf.div(mNew, denom), hp.lr / bc1)) as tf.Tensor2D, mNew, vNew];
    };
  }

  tf.tidy(() => {
    if (all) {
      const updated = compute(buffers[0]!, buffers.slice(1));
      buffers.forEach((b, i) => b.assign(updated[i]!));
      return;
    }
    const idx = tf.tensor1d(index, 'int32');
    const rows = buffers.map((b) => tf.gather(b, idx) as tf.Tensor2D);
    const updated = compute(rows[0]!, rows.slice(1));
    if (opts.rowWrite !== 'scatter' && hasKernel(ROW_WRITE_KERNEL)) {
      buffers.forEach((b, i) => {
        const written = tf.engine().runKernel(ROW_WRITE_KERNEL, { x: b, index: idx, rows: updated[i]! }) as tf.Tensor2D;
        if (written.dataId !== b.dataId) b.assign(written);
      });
      return;
    }
    const scatterIdx = tf.reshape(idx, [index.length, 1]);
    buffers.forEach((b, i) => b.assign(tf.tensorScatterUpdate(b, scatterIdx, updated[i]!) as tf.Tensor2D));
  });
}
