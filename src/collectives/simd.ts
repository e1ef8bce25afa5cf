/**
 * WebAssembly SIMD loops for the ring's arithmetic, four lanes at a time.
 *
 * JavaScript adds float32 arrays one element at a time (~1–3 ns per element
 * here); copying both operands into WebAssembly memory, adding with f32x4.add
 * and copying the result back costs a quarter of that, because the copies are
 * memcpy. Work goes in slices of {@link SLICE} elements so the scratch stays in
 * cache. Results are IEEE-identical to the scalar loops (every lane is one
 * correctly rounded float32 operation), so ranks with and without SIMD agree.
 *
 * The module is assembled here byte by byte (it is tiny), so no build step or
 * .wasm file is needed. `simd` is null where WebAssembly SIMD is unavailable.
 */

/** Elements per slice: three 64 KiB regions of scratch (a, b, spare). */
export const SLICE = 16384;

export interface SimdLoops {
  /** Float32 view of the scratch memory: region A at 0, region B at SLICE. */
  f32: Float32Array;
  i32: Int32Array;
  /** A[0..n) += B[0..n) as float32, n rounded up to a multiple of 4. */
  addF32(n: number): void;
  /** A[0..n) += B[0..n) as int32 (wrapping). */
  addI32(n: number): void;
  /** A[0..n) /= divisor as float32. */
  divF32(n: number, divisor: number): void;
}

const I32 = 0x7f;
const F32 = 0x7d;
const V128 = 0x7b;

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}
const section = (id: number, bytes: number[]): number[] => [id, ...leb(bytes.length), ...bytes];
const vector = (items: number[][]): number[] => [...leb(items.length), ...items.flat()];
const name = (s: string): number[] => [...leb(s.length), ...Buffer.from(s, 'latin1')];

// Instructions used below.
const localGet = (i: number) => [0x20, i];
const localSet = (i: number) => [0x21, i];
const i32Const = (v: number) => [0x41, ...leb(v)];
const i32Add = [0x6a];
const i32GeU = [0x4f];
const v128Load = [0xfd, 0x00, 4, 0]; // align 2^4, offset 0
const v128Store = [0xfd, 0x0b, 4, 0];
const simd = (op: number) => [0xfd, ...leb(op)];
const F32X4_SPLAT = 0x13;
const I32X4_ADD = 0xae;
const F32X4_ADD = 0xe4;
const F32X4_DIV = 0xe7;

/** (dst, src, end): while dst < end { v128[dst] = v128[dst] ∘ v128[src]; dst += 16; src += 16 } */
function binaryLoop(op: number): number[] {
  return [
    0, // no extra locals
    0x02,
    0x40,
    0x03,
    0x40, // block, loop
    ...localGet(0),
    ...localGet(2),
    ...i32GeU,
    0x0d,
    1, // br_if out when dst >= end
    ...localGet(0),
    ...localGet(0),
    ...v128Load,
    ...localGet(1),
    ...v128Load,
    ...simd(op),
    ...v128Store,
    ...localGet(0),
    ...i32Const(16),
    ...i32Add,
    ...localSet(0),
    ...localGet(1),
    ...i32Const(16),
    ...i32Add,
    ...localSet(1),
    0x0c,
    0,
    0x0b,
    0x0b, // br loop, end loop, end block
    0x0b, // end function
  ];
}

/** (dst, end, divisor f32): local 3 = splat(divisor); while dst < end { v128[dst] /= local 3; dst += 16 } */
function divideLoop(): number[] {
  return [
    1,
    1,
    V128, // one v128 local
    ...localGet(2),
    ...simd(F32X4_SPLAT),
    ...localSet(3),
    0x02,
    0x40,
    0x03,
    0x40,
    ...localGet(0),
    ...localGet(1),
    ...i32GeU,
    0x0d,
    1,
    ...localGet(0),
    ...localGet(0),
    ...v128Load,
    ...localGet(3),
    ...simd(F32X4_DIV),
    ...v128Store,
    ...localGet(0),
    ...i32Const(16),
    ...i32Add,
    ...localSet(0),
    0x0c,
    0,
    0x0b,
    0x0b,
    0x0b,
  ];
}

function assemble(): Uint8Array {
  const types = section(
    1,
    vector([
      [0x60, 3, I32, I32, I32, 0],
      [0x60, 3, I32, I32, F32, 0],
    ]),
  );
  const funcs = section(3, vector([[0], [0], [1]]));
  const memory = section(5, vector([[0, 4]])); // 4 pages of 64 KiB, no maximum
  const exports = section(
    7,
    vector([
      [...name('memory'), 2, 0],
      [...name('addF32'), 0, 0],
      [...name('addI32'), 0, 1],
      [...name('divF32'), 0, 2],
    ]),
  );
  const bodies = [binaryLoop(F32X4_ADD), binaryLoop(I32X4_ADD), divideLoop()];
  const code = section(10, vector(bodies.map((b) => [...leb(b.length), ...b])));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0, ...types, ...funcs, ...memory, ...exports, ...code]);
}

/** The slice of the WebAssembly API used here (this project's lib settings do not declare it). */
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}

function instantiate(): SimdLoops | null {
  const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
  if (!wasm || process.env.SHARDFACE_NO_SIMD === '1') return null;
  try {
    const bytes = assemble();
    if (!wasm.validate(bytes)) return null;
    const exports = new wasm.Instance(new wasm.Module(bytes)).exports as {
      memory: { buffer: ArrayBuffer };
      addF32: (dst: number, src: number, end: number) => void;
      addI32: (dst: number, src: number, end: number) => void;
      divF32: (dst: number, end: number, divisor: number) => void;
    };
    const B = SLICE * 4; // byte offset of region B
    const round4 = (n: number) => ((n + 3) & ~3) * 4;
    return {
      f32: new Float32Array(exports.memory.buffer),
      i32: new Int32Array(exports.memory.buffer),
      addF32: (n) => exports.addF32(0, B, round4(n)),
      addI32: (n) => exports.addI32(0, B, round4(n)),
      divF32: (n, divisor) => exports.divF32(0, round4(n), divisor),
    };
  } catch {
    return null;
  }
}

/** The SIMD loops, or null where this runtime has no WebAssembly SIMD (or SHARDFACE_NO_SIMD=1). */
export const simdLoops: SimdLoops | null = instantiate();
