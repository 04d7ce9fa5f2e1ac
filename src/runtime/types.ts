// The runtime's TypeScript API (CPU backend now, CUDA backend later, same shape). Implemented by
// src/runtime/model.ts over the native addon. Token rows in every output follow the order of the inputs.
import type { ModelSpec } from '../model/index.ts';
import type { SparseForwardOptions, SparseLayerReport, SparsePlan } from './sparse.ts';

export type Backend = 'cpu' | 'cuda';

export interface CaptureRequest {
  /** output of the pre-attention norm (the routers' input), [T, hidden] per layer */
  attnIn?: boolean;
  /** output of the pre-MLP norm, [T, hidden] */
  mlpIn?: boolean;
  /** input of the down projection (ReLU(fc1) for OPT, SiLU(gate)*up for LLaMA), [T, ffn] */
  mlpAct?: boolean;
  /** L2 norm of each head's attention output before the output projection, [T, heads] */
  headNorm?: boolean;
  /** layers to capture (default: all) */
  layers?: number[];
}

export interface StepInput {
  /** sequence slot in the session's KV cache (0..maxSeqs-1) */
  slot: number;
  /** tokens appended to that slot's sequence in this call (prefill: many; decode: one) */
  tokens: Int32Array | number[];
}

export interface ForwardOptions {
  /** which logits to return: every new token's, each input's last token's, or none (default 'all') */
  logits?: 'all' | 'last' | 'none';
  capture?: CaptureRequest;
  /**
   * Sparse forward (src/runtime/sparse.ts). Default: sparse when the session has a plan. false: dense even
   * with a plan; true: the plan as is; an object: the plan with per-layer overrides (k, explicit indices).
   */
  sparse?: boolean | SparseForwardOptions;
}

export interface LayerCapture {
  layer: number;
  attnIn?: Float32Array;
  mlpIn?: Float32Array;
  mlpAct?: Float32Array;
  headNorm?: Float32Array;
}

export interface ForwardOutput {
  /** total new tokens in this call */
  tokens: number;
  /** [tokens or inputs.length, vocab] fp32 */
  logits: Float32Array | null;
  captures: LayerCapture[];
  /** when the call ran sparse: per sparse layer, the realised MLP index set and each token's heads */
  sparse?: SparseLayerReport[];
}

export interface RuntimeSession {
  readonly maxSeqs: number;
  readonly maxLen: number;
  /** Runs one batched causal step (async: the work runs off the JS thread). */
  forward(inputs: StepInput[], opts?: ForwardOptions): Promise<ForwardOutput>;
  /** current length of a slot's sequence */
  length(slot: number): number;
  /** forget a slot's cache (or every slot's) */
  reset(slot?: number): void;
  /** routers and top-k per layer for the following forwards (null: dense); checked and copied */
  setSparsePlan(plan: SparsePlan | null): void;
  dispose(): void;
}

export interface RuntimeModel {
  readonly spec: ModelSpec;
  readonly backend: Backend;
  session(opts: { maxSeqs: number; maxLen: number }): RuntimeSession;
  dispose(): void;
}
