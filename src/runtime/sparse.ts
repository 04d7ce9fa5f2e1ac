// Sparse forward (Polar Sparsity) of the runtime: the plan a session runs with (routers and top-k per
// layer), per-call overrides (k for this batch size, explicit neuron sets and head masks for oracles and
// tests), and what a sparse call reports back (the realised MLP index set and each token's heads).
//
// Semantics (CPU backend, the CUDA backend takes the same API):
// - Both routers read the layer's router input: the output of the pre-attention norm (`attnIn`).
// - MLP: router scores = fc2 . (fc1 . x) (no bias, no activation between); the scores of every token of
//   the call are summed (as is, or after a sigmoid: `score`), and the top k neurons are kept for the whole
//   call: fc1/up (and gate) over the kept rows only, the down projection over the kept neurons only.
// - Attention: each token its own top k KV groups (heads for MHA; for GQA a group's score is the sum of
//   its heads' scores when the router outputs one score per head); other heads output zeros and their KV
//   cache is not read. Q/K/V projections stay dense, so the cache stays complete for later steps.
// - Layer 0 and layers not in the plan (or marked dense for a call) run dense.
import { badArg } from '../errors.ts';
import type { ModelSpec } from '../model/index.ts';
import type { NativeSparseLayerRequest } from './model.ts';

export type MlpScore = 'logit' | 'sigmoid';

/** Low-rank MLP router of one layer, fp32 row-major (nn.Linear layout, no bias). */
export interface MlpRouterWeights {
  rank: number;
  /** [rank, hidden] */
  fc1: Float32Array;
  /** [ffn, rank] */
  fc2: Float32Array;
}

/** Linear head router of one layer, fp32: one score per head or per KV group. */
export interface HeadRouterWeights {
  /** heads, or kvHeads (one score per KV group) */
  units: number;
  /** [units, hidden] */
  weight: Float32Array;
  /** [units] (optional) */
  bias?: Float32Array | null;
}

/** Top-k: a number, or a function of the call's token count (the batch size when decoding). */
export type TopK = number | ((tokens: number) => number);

export interface SparseLayerPlan {
  layer: number;
  /** k: neurons kept for the whole call (0..ffn) */
  mlp?: { router: MlpRouterWeights; k: TopK; score?: MlpScore };
  /** k: KV groups kept per token (0..kvHeads; = heads for MHA) */
  attn?: { router: HeadRouterWeights; k: TopK };
}

export interface SparsePlan {
  layers: SparseLayerPlan[];
}

/** Per-call override of one layer. */
export interface SparseLayerOverride {
  layer: number;
  /** run the layer dense in this call */
  dense?: boolean;
  /** k of the plan's MLP router for this call */
  mlpK?: number;
  /** explicit neuron set (distinct, 0..ffn-1); no router needed */
  mlpIndex?: Int32Array | number[];
  /** k of the plan's head router for this call */
  attnK?: number;
  /** explicit heads: [tokens, heads], non-zero = computed; no router needed */
  heads?: Uint8Array;
}

export interface SparseForwardOptions {
  /** overrides by layer */
  layers?: SparseLayerOverride[];
}

/** What a sparse call did in one layer (layers that ran sparse in some part). */
export interface SparseLayerReport {
  layer: number;
  /** kept neurons, ascending; null when the MLP ran dense */
  mlpIndex: Int32Array | null;
  /** [tokens, heads], 1 = computed; null when attention ran dense */
  heads: Uint8Array | null;
}

const ok = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function checkF32(name: string, a: unknown, n: number): Float32Array {
  if (!(a instanceof Float32Array)) throw badArg(name, `a Float32Array of ${n} values`, a === null ? null : typeof a);
  if (a.length !== n) throw badArg(name, `a Float32Array of ${n} values`, a.length);
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw badArg(`${name}[${i}]`, 'a finite number', a[i]);
  return Float32Array.from(a);
}

function checkK(name: string, k: unknown, max: number): TopK {
  if (typeof k === 'function') return k as (tokens: number) => number;
  if (!ok(k) || k < 0 || k > max) throw badArg(name, `an integer in 0..${max} or a function of the token count`, k);
  return k;
}

function resolveK(name: string, k: TopK, tokens: number, max: number): number {
  const v = typeof k === 'function' ? k(tokens) : k;
  if (!ok(v) || v < 0 || v > max) throw badArg(name, `an integer in 0..${max}${typeof k === 'function' ? ` (from the k function at ${tokens} tokens)` : ''}`, v);
  return v;
}

/** Checks a plan against the model and copies its arrays (later changes by the caller have no effect). */
export function checkSparsePlan(spec: ModelSpec, plan: SparsePlan): SparsePlan {
  if (!plan || typeof plan !== 'object' || !Array.isArray(plan.layers)) throw badArg('sparse plan', 'an object { layers: [...] }', plan);
  const seen = new Set<number>();
  const layers = plan.layers.map((lp, i): SparseLayerPlan => {
    const at = `sparse plan layers[${i}]`;
    if (!lp || typeof lp !== 'object') throw badArg(at, 'an object { layer, mlp?, attn? }', lp);
    if (!ok(lp.layer) || lp.layer < 0 || lp.layer >= spec.layers) throw badArg(`${at}.layer`, `an integer in 1..${spec.layers - 1}`, lp.layer);
    if (lp.layer === 0) throw badArg(`${at}.layer`, `a layer in 1..${spec.layers - 1} (layer 0 stays dense)`, 0);
    if (seen.has(lp.layer)) throw badArg(`${at}.layer`, 'each layer once', lp.layer);
    seen.add(lp.layer);
    const out: SparseLayerPlan = { layer: lp.layer };
    if (lp.mlp !== undefined) {
      const r = lp.mlp.router;
      if (!r || !ok(r.rank) || r.rank < 1) throw badArg(`${at}.mlp.router.rank`, 'an integer >= 1', r?.rank);
      const score = lp.mlp.score ?? 'logit';
      if (score !== 'logit' && score !== 'sigmoid') throw badArg(`${at}.mlp.score`, '"logit" or "sigmoid"', score);
      out.mlp = {
        router: { rank: r.rank, fc1: checkF32(`${at}.mlp.router.fc1`, r.fc1, r.rank * spec.hidden), fc2: checkF32(`${at}.mlp.router.fc2`, r.fc2, spec.ffn * r.rank) },
        k: checkK(`${at}.mlp.k`, lp.mlp.k, spec.ffn),
        score,
      };
    }
    if (lp.attn !== undefined) {
      const r = lp.attn.router;
      const unitsOk = r && (r.units === spec.heads || r.units === spec.kvHeads);
      if (!unitsOk) throw badArg(`${at}.attn.router.units`, `${spec.heads} (heads)${spec.kvHeads !== spec.heads ? ` or ${spec.kvHeads} (KV groups)` : ''}`, r?.units);
      out.attn = {
        router: {
          units: r.units,
          weight: checkF32(`${at}.attn.router.weight`, r.weight, r.units * spec.hidden),
          bias: r.bias == null ? null : checkF32(`${at}.attn.router.bias`, r.bias, r.units),
        },
        k: checkK(`${at}.attn.k`, lp.attn.k, spec.kvHeads),
      };
    }
    return out;
  });
  return { layers };
}

/** Per-call request of the sparse layers, and how to read their reports back. */
export interface SparseCall {
  layers: (NativeSparseLayerRequest | null)[];
  report(): SparseLayerReport[];
}

const DENSE = 0, ROUTER = 1, EXPLICIT = 2;

/**
 * Resolves the plan and the call's overrides into the native request (null when every layer runs dense).
 * `tokens` is the call's token count T.
 */
export function buildSparseCall(spec: ModelSpec, plan: SparsePlan | null, opts: SparseForwardOptions | undefined, tokens: number): SparseCall | null {
  const byLayer = new Map<number, SparseLayerPlan>();
  for (const lp of plan?.layers ?? []) byLayer.set(lp.layer, lp);
  const over = new Map<number, SparseLayerOverride>();
  if (opts !== undefined) {
    if (!opts || typeof opts !== 'object') throw badArg('forward opts.sparse', 'an object { layers? } or a boolean', opts);
    if (opts.layers !== undefined && !Array.isArray(opts.layers)) throw badArg('forward opts.sparse.layers', 'an array', opts.layers);
    for (const [i, o] of (opts.layers ?? []).entries()) {
      const at = `forward opts.sparse.layers[${i}]`;
      if (!o || typeof o !== 'object') throw badArg(at, 'an object { layer, ... }', o);
      if (!ok(o.layer) || o.layer < 1 || o.layer >= spec.layers) throw badArg(`${at}.layer`, `an integer in 1..${spec.layers - 1} (layer 0 stays dense)`, o.layer);
      if (over.has(o.layer)) throw badArg(`${at}.layer`, 'each layer once', o.layer);
      over.set(o.layer, o);
    }
  }
  const layers: (NativeSparseLayerRequest | null)[] = new Array(spec.layers).fill(null);
  let any = false;
  for (let l = 1; l < spec.layers; l++) {
    const lp = byLayer.get(l);
    const o = over.get(l);
    if (!lp && !o) continue;
    if (o?.dense) continue;
    const at = `forward opts.sparse.layers (layer ${l})`;
    const req: NativeSparseLayerRequest = { mlpMode: DENSE, attnMode: DENSE };
    // MLP
    if (o?.mlpIndex !== undefined) {
      const idx = o.mlpIndex instanceof Int32Array ? o.mlpIndex : Array.isArray(o.mlpIndex) ? Int32Array.from(o.mlpIndex) : null;
      if (!idx) throw badArg(`${at}.mlpIndex`, 'an Int32Array or an array of neuron indices', o.mlpIndex);
      const seen = new Uint8Array(spec.ffn);
      for (const v of idx) {
        if (!ok(v) || v < 0 || v >= spec.ffn) throw badArg(`${at}.mlpIndex`, `neuron indices in 0..${spec.ffn - 1}`, v);
        if (seen[v]) throw badArg(`${at}.mlpIndex`, 'distinct neuron indices', `${v} more than once`);
        seen[v] = 1;
      }
      req.mlpMode = EXPLICIT;
      req.mlpIdx = Int32Array.from(idx);
    } else if (lp?.mlp) {
      req.mlpMode = ROUTER;
      req.mlpFc1 = lp.mlp.router.fc1;
      req.mlpFc2 = lp.mlp.router.fc2;
      req.mlpRank = lp.mlp.router.rank;
      req.mlpScore = lp.mlp.score === 'sigmoid' ? 1 : 0;
      req.mlpK = o?.mlpK !== undefined ? resolveK(`${at}.mlpK`, o.mlpK, tokens, spec.ffn) : resolveK(`sparse plan layer ${l} mlp.k`, lp.mlp.k, tokens, spec.ffn);
    } else if (o?.mlpK !== undefined) {
      throw badArg(`${at}.mlpK`, 'an MLP router for this layer in the session plan (or mlpIndex)', o.mlpK);
    }
    // attention
    if (o?.heads !== undefined) {
      if (!(o.heads instanceof Uint8Array) || o.heads.length !== tokens * spec.heads) {
        throw badArg(`${at}.heads`, `a Uint8Array [tokens (${tokens}), heads (${spec.heads})] of ${tokens * spec.heads} values`, o.heads instanceof Uint8Array ? o.heads.length : o.heads);
      }
      req.attnMode = EXPLICIT;
      req.attnMask = Uint8Array.from(o.heads);
    } else if (lp?.attn) {
      req.attnMode = ROUTER;
      req.attnW = lp.attn.router.weight;
      req.attnB = lp.attn.router.bias ?? null;
      req.attnUnits = lp.attn.router.units;
      req.attnK = o?.attnK !== undefined ? resolveK(`${at}.attnK`, o.attnK, tokens, spec.kvHeads) : resolveK(`sparse plan layer ${l} attn.k`, lp.attn.k, tokens, spec.kvHeads);
    } else if (o?.attnK !== undefined) {
      throw badArg(`${at}.attnK`, 'a head router for this layer in the session plan (or heads)', o.attnK);
    }
    if (req.mlpMode === DENSE && req.attnMode === DENSE) continue;
    if (req.mlpMode !== DENSE) {
      req.outMlpIdx = new Int32Array(spec.ffn);
      req.outMlpN = new Int32Array(1);
    }
    if (req.attnMode !== DENSE) req.outHeads = new Uint8Array(tokens * spec.heads);
    layers[l] = req;
    any = true;
  }
  if (!any) return null;
  return {
    layers,
    report: () =>
      layers.flatMap((r, layer) =>
        r
          ? [{ layer, mlpIndex: r.outMlpIdx && r.outMlpN ? r.outMlpIdx.slice(0, r.outMlpN[0]) : null, heads: r.outHeads ?? null }]
          : [],
      ),
  };
}
