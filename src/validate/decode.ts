// The decoding loop of `polar validate`: windows of the perplexity protocol, grouped b at a time, fed one
// position per step to a dense and a sparse session in lockstep. At every step the sparse MLP computes the
// union chosen for the (up to) b tokens decoded together, with the k calibrated for batch size b, and each
// token keeps its own heads: never a union over a whole prompt. The dense step of the same tokens gives
// the reference logits and the true MLP activity / head norms the recall is measured against.
import { LayerSparsityMetrics, LogitMetrics, type BatchResult } from './metrics.ts';

export interface StepToken {
  slot: number;
  token: number;
}

export interface DenseStepOut {
  /** [tokens, vocab] */
  logits: Float32Array;
  /** per layer: MLP activations [tokens, ffn] (null where not captured) */
  mlpAct: (Float32Array | null)[];
  /** per layer: head output norms [tokens, heads] (null where not captured) */
  headNorm: (Float32Array | null)[];
}

export interface SparseStepOut {
  /** [tokens, vocab] */
  logits: Float32Array;
  /** per layer: kept neurons (null = MLP ran dense) and kept heads [tokens, heads] (null = all) */
  layers: { mlpIndex: Int32Array | null; heads: Uint8Array | null }[];
}

/** A dense and a sparse model decoding the same tokens (sessions of `maxSeqs` = b slots). */
export interface DecodePair {
  reset(): void;
  dense(step: StepToken[]): Promise<DenseStepOut>;
  sparse(step: StepToken[]): Promise<SparseStepOut>;
}

export interface DecodeShape {
  layers: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  vocab: number;
}

export interface DecodeProgress {
  /** predicted positions so far, and in all */
  done: number;
  total: number;
}

/** Predicted positions of a set of windows (each window predicts length - 1 tokens). */
export function predictedPositions(windows: Int32Array[]): number {
  return windows.reduce((a, w) => a + Math.max(0, w.length - 1), 0);
}

export async function decodeValidate(
  pair: DecodePair,
  windows: Int32Array[],
  batchSize: number,
  shape: DecodeShape,
  onProgress?: (p: DecodeProgress) => void,
): Promise<BatchResult> {
  const logit = new LogitMetrics(shape.vocab);
  const layers = Array.from({ length: shape.layers }, (_, l) => new LayerSparsityMetrics(l, shape.ffn, shape.heads, shape.kvHeads));
  const total = predictedPositions(windows);
  let done = 0;
  for (let g = 0; g < windows.length; g += batchSize) {
    const group = windows.slice(g, g + batchSize);
    pair.reset();
    const steps = Math.max(...group.map((w) => w.length)) - 1;
    for (let t = 0; t < steps; t++) {
      // a window takes part while it still has a next token to predict
      const step: StepToken[] = [];
      const targets: number[] = [];
      for (let s = 0; s < group.length; s++) {
        const w = group[s];
        if (t + 1 < w.length) {
          step.push({ slot: s, token: w[t] });
          targets.push(w[t + 1]);
        }
      }
      const d = await pair.dense(step);
      const sp = await pair.sparse(step);
      for (let i = 0; i < step.length; i++) logit.add(d.logits, i, sp.logits, i, targets[i]);
      for (let l = 0; l < shape.layers; l++) {
        const r = sp.layers[l];
        layers[l].addMlpStep(r?.mlpIndex ?? null, d.mlpAct[l] ?? null, step.length);
        layers[l].addHeadStep(r?.heads ?? null, d.headNorm[l] ?? null, step.length);
      }
      done += step.length;
      onProgress?.({ done, total });
    }
  }
  const r = logit.result();
  return {
    batch_size: batchSize,
    dense_ppl: r.dense_ppl,
    sparse_ppl: r.sparse_ppl,
    ppl_increase: r.ppl_increase,
    top1_agreement: r.top1_agreement,
    kl: r.kl,
    layers: layers.map((m) => m.result()),
  };
}
