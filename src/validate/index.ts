// `polar validate`: the sparse runtime driven by an exported artifact, against the dense model, measured
// as decoding runs (src/validate/decode.ts) at each batch size, with thresholds.
import type { RuntimeModel, SparsePlan } from '../runtime/index.ts';
import { windows as protocolWindows } from '../eval/protocol.ts';
import { decodeValidate, predictedPositions, type DecodeProgress } from './decode.ts';
import type { BatchResult, ValidateJson } from './metrics.ts';
import { runtimePair } from './runtime-pair.ts';

export type { BatchResult, LayerMetrics, ValidateJson } from './metrics.ts';
export { decodeValidate, predictedPositions } from './decode.ts';
export { runtimePair } from './runtime-pair.ts';

export interface Thresholds {
  /** sparse_ppl / dense_ppl - 1 at most this, at every batch size (default 0.01) */
  maxPplIncrease: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = { maxPplIncrease: 0.01 };

/** Perplexity window of the protocol (256), capped by the model's positions. */
export function validateWindow(maxPositions: number): number {
  return Math.min(256, maxPositions);
}

/** The first `maxTokens` tokens of the protocol stream (null: all). */
export function capTokens(tokens: Int32Array, maxTokens: number | null): Int32Array {
  return maxTokens !== null && tokens.length > maxTokens ? tokens.subarray(0, maxTokens) : tokens;
}

export interface ValidateRun {
  rt: RuntimeModel;
  tokens: Int32Array;
  window: number;
  batchSizes: number[];
  /** the sparse plan for batch size b (routers and the k of b) */
  planFor(batchSize: number): SparsePlan;
  onProgress?: (batchSize: number, p: DecodeProgress) => void;
}

export interface ValidateOutcome extends ValidateJson {
  tokens: number;
  seconds: number;
}

export async function runValidation(v: ValidateRun): Promise<ValidateOutcome> {
  const t0 = performance.now();
  const spec = v.rt.spec;
  const ws = protocolWindows(v.tokens, v.window);
  const results: BatchResult[] = [];
  for (const b of v.batchSizes) {
    const pair = runtimePair(v.rt, v.planFor(b), Math.min(b, ws.length), v.window);
    try {
      results.push(
        await decodeValidate(pair, ws, b, { layers: spec.layers, ffn: spec.ffn, heads: spec.heads, kvHeads: spec.kvHeads, vocab: spec.vocab }, (p) =>
          v.onProgress?.(b, p),
        ),
      );
    } finally {
      pair.dispose();
    }
  }
  return { results, tokens: predictedPositions(ws), seconds: (performance.now() - t0) / 1000 };
}

/** Batch sizes whose perplexity increase exceeds the threshold. */
export function failures(results: BatchResult[], t: Thresholds): BatchResult[] {
  return results.filter((r) => !(r.ppl_increase <= t.maxPplIncrease));
}

/** The JSON that `polar validate --json` prints: exactly the documented fields, in order. */
export function validateJson(results: BatchResult[]): ValidateJson {
  return {
    results: results.map((r) => ({
      batch_size: r.batch_size,
      dense_ppl: r.dense_ppl,
      sparse_ppl: r.sparse_ppl,
      ppl_increase: r.ppl_increase,
      top1_agreement: r.top1_agreement,
      kl: r.kl,
      layers: r.layers.map((l) => ({ layer: l.layer, mlp_density: l.mlp_density, heads_kept: l.heads_kept, mlp_recall: l.mlp_recall, head_recall: l.head_recall })),
    })),
  };
}
