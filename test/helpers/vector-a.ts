/**
 * Test vector A of docs/methods.md#partial-fc-test-vectors: 4 embeddings of 3
 * dims, 6 classes, ArcFace (s 64, m 0.5), with the loss and gradients the
 * document gives: `HEAD` for the straight-through margin gradient (arcface_torch
 * today), `LEGACY` for the exact one.
 */
export const X = [
  [1.0, 2.0, 0.5],
  [-0.5, 0.3, 1.2],
  [0.2, -1.0, 0.4],
  [0.9, 0.1, -0.3],
];
export const Y = [1, 4, 5, 0];
export const W = [
  [0.8, 0.6, 0.2],
  [0.9, 2.1, 0.3],
  [0.2, -0.3, 0.5],
  [0.05, 0.2, 0.1],
  [-0.1, 0.8, 1.0],
  [0.3, -0.9, 0.2],
];
export const VECTOR_A_LOSS = 4.35402806167;
export const HEAD_DW = [
  [-5.812512, 5.34455, 7.2164],
  [5.058118, -1.713945, -3.176739],
  [-3.452982, -11.052287, -5.250179],
  [8.646099, -0.245758, -3.831534],
  [1.214911, 1.252653, -0.880631],
  [1.822605, 0.058794, -2.469336],
];
export const HEAD_DX = [
  [-0.946823, -0.064612, 2.152095],
  [0.75445, -0.634694, 0.473028],
  [0.640269, 3.720135, 8.980203],
  [-1.58644, 5.961708, -2.772083],
];
export const LEGACY_DX = [
  [0.374779, -1.386214, 4.795299],
  [0.073149, -1.808646, 0.48264],
  [-3.196437, 4.729794, 13.422704],
  [-2.171074, 2.497748, -5.68064],
];
export const LEGACY_DW = [
  [-8.114511, 7.441926, 10.132265],
  [3.602116, -0.705944, -5.864743],
  [-3.452982, -11.052287, -5.250179],
  [8.646099, -0.245758, -3.831534],
  [2.091182, 2.156145, -1.515798],
  [5.818279, 0.187686, -7.88283],
];

/** The case as `shardface selftest --case` reads it, without its margin; fresh on each call (tests edit it). */
export const vectorA = () => ({ embeddings: X.map((r) => [...r]), labels: [...Y], weight: W.map((r) => [...r]) });
