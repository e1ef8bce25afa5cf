/**
 * `SfWriteRows {x, index, rows} → x'`: x with rows `index` replaced by `rows`,
 * written into x's own buffer, so a classifier shard's sparse update costs
 * O(|index|·D) instead of the O(C/n·D) copy tf.tensorScatterUpdate makes of
 * the whole variable (docs/methods.md#sparse-row-updates; row-optimizer.ts
 * uses it). backend.ts registers one implementation per backend:
 *
 *  - tensorflow (tfjs-node): TensorFlow's `InplaceUpdate` op, whose CPU and GPU
 *    kernels write the rows into the input tensor's buffer and return that very
 *    buffer as the output (tensorflow/core/kernels/inplace_ops.cc). tfjs-node's
 *    backend runs any TensorFlow op by name (`executeSingleOutput`), as its
 *    own kernels do; the index tensor stays in host memory and TensorFlow
 *    copies it to the device. The output is a new tfjs tensor over x's buffer:
 *    the caller assigns it to the variable and drops the old handle.
 *  - cpu: the same write into the typed array behind x.
 *
 * A buffer another tfjs tensor also holds (refCount > 1: tf.clone, a variable
 * made from a tensor still alive) is copied first, so that tensor keeps its
 * values. Views TensorFlow makes by itself (Reshape, a slice along the first
 * axis) share the buffer without the refCount showing it; shardface keeps
 * none of the shard variables (row-optimizer.ts states the invariant).
 */
import type { tf } from './tf.js';

type KernelFunc = tf.KernelFunc;
type TensorInfo = tf.TensorInfo;

export const ROW_WRITE_KERNEL = 'SfWriteRows';

interface CpuLike {
  data: { get(id: object): { values?: unknown } };
  refCount(id: object): number;
  incRef(id: object): void;
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
}

function checkShapes(x: TensorInfo, index: TensorInfo, rows: TensorInfo): void {
  if (x.shape.length !== 2 || rows.shape.length !== 2 || index.shape.length !== 1 || rows.shape[0] !== index.shape[0] || rows.shape[1] !== x.shape[1])
    throw new Error(`${ROW_WRITE_KERNEL}: rows [${rows.shape.join(',')}] at ${index.shape[0]} indices into [${x.shape.join(',')}]`);
  if (x.dtype !== 'float32' || rows.dtype !== 'float32' || index.dtype !== 'int32')
    throw new Error(`${ROW_WRITE_KERNEL}: float32 x and rows, int32 index (got ${x.dtype}, ${rows.dtype}, ${index.dtype})`);
}

/** The cpu backends' implementation: a row copy into x's typed array. */
export const cpuWriteRows: KernelFunc = ({ inputs, backend }) => {
  const x = inputs.x as TensorInfo,
    index = inputs.index as TensorInfo,
    rows = inputs.rows as TensorInfo;
  checkShapes(x, index, rows);
  const b = backend as unknown as CpuLike;
  const [count, d] = x.shape as [number, number];
  const idx = b.data.get(index.dataId).values as Int32Array;
  const src = b.data.get(rows.dataId).values as Float32Array;
  let values = b.data.get(x.dataId).values as Float32Array;
  let out: TensorInfo;
  if (b.refCount(x.dataId) === 1) {
    b.incRef(x.dataId);
    out = { dataId: x.dataId, shape: x.shape, dtype: 'float32' };
  } else {
    values = values.slice();
    out = b.makeTensorInfo(x.shape, 'float32', values);
  }
  for (let j = 0; j < idx.length; j++) {
    const r = idx[j]!;
    if (r < 0 || r >= count) throw new Error(`${ROW_WRITE_KERNEL}: row ${r} outside [0, ${count})`);
    values.set(src.subarray(j * d, (j + 1) * d), r * d);
  }
  return out;
};

/** The part of tfjs-node's NodeJSKernelBackend used here (@tensorflow/tfjs-node/src/nodejs_kernel_backend.ts). */
interface TfjsNodeBackend {
  binding: { TF_ATTR_TYPE: number; TF_FLOAT: number };
  refCount(id: object): number;
  executeSingleOutput(op: string, attrs: { name: string; type: number; value: unknown }[], inputs: TensorInfo[]): TensorInfo & { dispose(): void };
}

/** tfjs-node's implementation: TensorFlow's InplaceUpdate (DeepCopy first when the buffer is shared). */
export const tensorflowWriteRows: KernelFunc = ({ inputs, backend }) => {
  const x = inputs.x as TensorInfo,
    index = inputs.index as TensorInfo,
    rows = inputs.rows as TensorInfo;
  checkShapes(x, index, rows);
  const b = backend as unknown as TfjsNodeBackend;
  const T = [{ name: 'T', type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT }];
  const target = b.refCount(x.dataId) > 1 ? b.executeSingleOutput('DeepCopy', T, [x]) : null;
  try {
    return b.executeSingleOutput('InplaceUpdate', T, [target ?? x, index, rows]);
  } finally {
    target?.dispose(); // the output holds the copied buffer
  }
};
