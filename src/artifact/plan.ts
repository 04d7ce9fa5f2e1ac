// From an artifact to the runtime's sparse plan (src/runtime/sparse.ts): the one place that turns the
// calibration tables into the k the runtime uses for a call.
import { badArg } from '../errors.ts';
import type { SparseLayerPlan, SparsePlan } from '../runtime/sparse.ts';
import type { LoadedArtifact } from './reader.ts';

/**
 * k for a call of `tokens` tokens (the batch size when decoding): the k of the smallest calibrated batch
 * size >= tokens. Above the largest calibrated batch size the MLP keeps every neuron (k = ffn): no table
 * covers it, and a union over that many tokens is close to dense anyway.
 */
export function mlpKFor(batchSizes: readonly number[], k: readonly number[], ffn: number, tokens: number): number {
  if (!Number.isInteger(tokens) || tokens < 0) throw badArg('tokens', 'an integer >= 0', tokens);
  for (let i = 0; i < batchSizes.length; i++) if (batchSizes[i] >= tokens) return k[i];
  return ffn;
}

export interface PlanOptions {
  /** fix every MLP k to that of this batch size (default: k follows each call's token count) */
  batchSize?: number;
  /** include the MLP part (default true) */
  mlp?: boolean;
  /** include the attention part (default true) */
  attn?: boolean;
}

/** The runtime plan of an artifact loaded with its tensors. */
export function artifactPlan(art: LoadedArtifact, opts: PlanOptions = {}): SparsePlan {
  const m = art.manifest;
  const bs = m.calibration.batchSizes;
  if (opts.batchSize !== undefined && (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)) throw badArg('batchSize', 'an integer >= 1', opts.batchSize);
  const layers: SparseLayerPlan[] = [];
  for (const l of art.sparseLayers()) {
    const e = art.layer(l);
    const lp: SparseLayerPlan = { layer: l };
    if (e.mlp && opts.mlp !== false) {
      const table = e.mlp.k.slice();
      const ffn = m.model.ffn;
      lp.mlp = {
        router: { rank: e.mlp.rank, fc1: e.mlp.fc1, fc2: e.mlp.fc2 },
        k: opts.batchSize !== undefined ? mlpKFor(bs, table, ffn, opts.batchSize) : (tokens: number) => mlpKFor(bs, table, ffn, tokens),
        score: e.mlp.score,
      };
    }
    if (e.attn && opts.attn !== false) {
      lp.attn = { router: { units: e.attn.outputs, weight: e.attn.weight, bias: e.attn.bias }, k: e.attn.kept };
    }
    if (lp.mlp || lp.attn) layers.push(lp);
  }
  return { layers };
}
