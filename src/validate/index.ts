// `polar validate`: the sparse runtime driven by an exported artifact, against the dense model, measured
// as decoding runs (src/validate/decode.ts) at each batch size, with thresholds.
import { openRuntimeModel, type RuntimeModel, type SparsePlan } from '../runtime/index.ts';
import { artifactPlan, loadArtifact, type LoadedArtifact } from '../artifact/index.ts';
import type { LoadedModel } from '../model/index.ts';
import { windows as protocolWindows } from '../eval/protocol.ts';
import { decodeValidate, predictedPositions, type DecodeProgress } from './decode.ts';
import type { BatchResult, ValidateJson } from './metrics.ts';
import { runtimePair } from './runtime-pair.ts';

export type { BatchResult, LayerMetrics, ValidateJson } from './metrics.ts';
export { decodeValidate, predictedPositions } from './decode.ts';
export { runtimePair } from './runtime-pair.ts';

export { validationText, DEFAULT_MAX_TOKENS, type ValidationText } from './text.ts';

export interface Thresholds {
  /** sparse_ppl / dense_ppl - 1 at most this, at every batch size (default 0.01) */
  maxPplIncrease: number;
  /** optional: top-1 agreement at least this */
  minTop1?: number;
  /** optional: mean KL(dense || sparse) at most this */
  maxKl?: number;
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

export interface ValidateArtifactOptions {
  /** the artifact folder (manifest.json, routers.safetensors) */
  artifact: string;
  model: LoadedModel;
  tokens: Int32Array;
  batchSizes: number[];
  /** default: validateWindow(model) */
  window?: number;
  onProgress?: (batchSize: number, p: DecodeProgress) => void;
  /** CPU threads of the runtime (default: all cores, or POLAR_THREADS) */
  threads?: number;
  /** runtime backend: 'cpu' (default) or 'cuda' */
  backend?: 'cpu' | 'cuda';
  /** called once the artifact is loaded and checked against the model */
  onLoaded?: (art: LoadedArtifact) => void;
}

/**
 * Loads the artifact (refusing another model's, a damaged or an unknown version) and validates it: at batch
 * size b every MLP k is the artifact's k for b (src/artifact/plan.ts: the smallest calibrated batch size
 * >= b; dense above the largest), heads per layer as calibrated.
 */
export async function validateArtifact(o: ValidateArtifactOptions): Promise<ValidateOutcome> {
  const art = loadArtifact(o.artifact, { model: o.model });
  o.onLoaded?.(art);
  const rt = openRuntimeModel(o.model, { threads: o.threads, backend: o.backend ?? 'cpu' });
  try {
    return await runValidation({
      rt,
      tokens: o.tokens,
      window: o.window ?? validateWindow(o.model.spec.maxPositions),
      batchSizes: o.batchSizes,
      planFor: (b) => artifactPlan(art, { batchSize: b }),
      onProgress: o.onProgress,
    });
  } finally {
    rt.dispose();
  }
}

/** Every threshold a result exceeds, as readable lines ("batch size 16: perplexity increase 1.31% > 1.00%"). */
export function failures(results: BatchResult[], t: Thresholds): string[] {
  const out: string[] = [];
  const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
  for (const r of results) {
    if (!(r.ppl_increase <= t.maxPplIncrease)) out.push(`batch size ${r.batch_size}: perplexity increase ${pct(r.ppl_increase)} > ${pct(t.maxPplIncrease)}`);
    if (t.minTop1 !== undefined && !(r.top1_agreement >= t.minTop1)) out.push(`batch size ${r.batch_size}: top-1 agreement ${pct(r.top1_agreement)} < ${pct(t.minTop1)}`);
    if (t.maxKl !== undefined && !(r.kl <= t.maxKl)) out.push(`batch size ${r.batch_size}: KL ${r.kl.toPrecision(4)} > ${t.maxKl}`);
  }
  return out;
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
