/** Element types that may travel in a tensor frame. Bytes are little-endian. */
const DTYPES = ['float32', 'int32', 'uint8', 'float64'] as const;
export type DType = (typeof DTYPES)[number];

export type AnyTypedArray = Float32Array | Int32Array | Uint8Array | Float64Array;

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  float32: 4,
  int32: 4,
  uint8: 1,
  float64: 8,
};

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export function dtypeOf(a: AnyTypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Uint8Array) return 'uint8';
  return 'float64';
}

/**
 * A typed view over `bytes`. No copy when the offset is aligned for the element
 * size (ZeroMQ frames normally are); an unaligned frame is copied once.
 */
export function viewAs(dtype: DType, bytes: Uint8Array): AnyTypedArray {
  const size = BYTES_PER_ELEMENT[dtype];
  let buf = bytes;
  if (buf.byteOffset % size !== 0) buf = new Uint8Array(bytes); // copy to realign
  const n = buf.byteLength / size;
  switch (dtype) {
    case 'float32':
      return new Float32Array(buf.buffer, buf.byteOffset, n);
    case 'int32':
      return new Int32Array(buf.buffer, buf.byteOffset, n);
    case 'uint8':
      return new Uint8Array(buf.buffer, buf.byteOffset, n);
    case 'float64':
      return new Float64Array(buf.buffer, buf.byteOffset, n);
  }
}

/** Byte view of a typed array, sharing its memory. */
export function bytesOf(a: AnyTypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
