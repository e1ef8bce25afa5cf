/**
 * Parameter and multiply-accumulate counts of a backbone, traced from the very
 * description the real model runs (trace.ts), never hard-coded.
 *
 * What is counted:
 *  - `params`: every parameter, as PyTorch's `sum(p.numel() for p in
 *    model.parameters())`: conv/FC weights and biases, BatchNorm γ and β
 *    (frozen γ included), PReLU slopes. BN running statistics are not
 *    parameters (`buffers`).
 *  - `paramsByKind`: the same split into conv/FC (weights + biases), BatchNorm
 *    (γ, β) and PReLU, because docs/methods.md#mobilefacenet quotes MobileFaceNet without BN/PReLU
 *    ("2.03M (+0.03M BN/PReLU)") and the others with everything.
 *  - `macs`: multiply-accumulates of one image, conv and FC only (trace.ts);
 *    one MAC = 2 FLOPs. arcface_torch's README "FLOPs" are these MACs.
 */
import { describeBackbone, traceNetwork, type ArchitectureOptions, type BackboneName } from './backbone.js';
import { numel } from './module.js';
import type { LayerCost } from './trace.js';

export interface ModelInfo {
  name: string;
  inputSize: number;
  embeddingSize: number;
  params: number;
  /** params minus the frozen ones (IResNet's output BN γ). */
  paramsTrainable: number;
  paramsByKind: { convFc: number; batchNorm: number; prelu: number };
  /** Non-parameter state (BN running mean and variance). */
  buffers: number;
  macs: number;
  layers: LayerCost[];
}

export function modelInfo(name: BackboneName, opts: ArchitectureOptions = {}): ModelInfo {
  const desc = describeBackbone(name, opts);
  const layers = traceNetwork(desc);
  const byKind = { convFc: 0, batchNorm: 0, prelu: 0 };
  let params = 0;
  let paramsTrainable = 0;
  let buffers = 0;
  for (const l of desc.layers) {
    for (const s of l.specs()) {
      const n = numel(s.shape);
      if (s.role === 'buffer') {
        buffers += n;
        continue;
      }
      params += n;
      if (s.trainable) paramsTrainable += n;
      if (l.kind === 'batchnorm') byKind.batchNorm += n;
      else if (l.kind === 'prelu') byKind.prelu += n;
      else byKind.convFc += n;
    }
  }
  // The trace counts the same parameters layer by layer; a mismatch would mean a layer the forward pass skips.
  const traced = layers.reduce((a, l) => a + l.params, 0);
  if (traced !== params) throw new Error(`${name}: traced ${traced} parameters, described ${params}`);
  return {
    name: desc.name,
    inputSize: desc.inputSize,
    embeddingSize: desc.embeddingSize,
    params,
    paramsTrainable,
    paramsByKind: byKind,
    buffers,
    macs: layers.reduce((a, l) => a + l.macs, 0),
    layers,
  };
}

/** 5_196_000 → "5.20M", 6_310_000_000 → "6.31G". */
export function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}
