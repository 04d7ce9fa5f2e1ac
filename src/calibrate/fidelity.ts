// The perplexity evaluator of the head-budget search: calibration windows decoded as `polar validate`
// decodes them (src/validate/decode.ts): windows grouped `batch` at a time, one position per step, so the
// MLP keeps the union chosen for the tokens decoded together (with the k calibrated for that many tokens)
// and each token its own heads — never a union over a whole prompt. Perplexity follows the protocol of
// src/eval/protocol.ts (mean next-token NLL over every predicted token).
import { accumulateNll } from '../eval/protocol.ts';
import type { HeadRouterWeights, MlpRouterWeights, MlpScore, RuntimeModel, SparseLayerPlan, SparsePlan } from '../runtime/index.ts';
import type { EvalConfig, PplEvaluator } from './heads.ts';

export interface LayerRouters {
  mlp?: MlpRouterWeights & { score: MlpScore };
  attn?: HeadRouterWeights;
}

export interface DecodeEvaluatorInput {
  rt: RuntimeModel;
  windows: Int32Array[];
  /** windows decoded together (the batch size the fidelity is judged at) */
  batch: number;
  /** routers by layer */
  routers: Map<number, LayerRouters>;
  /** k of layer l's MLP for a call of `tokens` tokens at recall target `target` */
  mlpK(target: number, layer: number, tokens: number): number;
  shouldStop?: () => boolean;
}

export interface DecodeEvaluator {
  evaluate: PplEvaluator;
  /** predicted tokens per evaluation */
  tokens: number;
  /** seconds spent evaluating, in all */
  seconds(): number;
  dispose(): void;
}

/** The sparse plan of a configuration (null when everything runs dense). */
export function planFor(cfg: EvalConfig, input: Pick<DecodeEvaluatorInput, 'routers' | 'mlpK' | 'rt'>): SparsePlan | null {
  const layers: SparseLayerPlan[] = [];
  const units = input.rt.spec.kvHeads;
  for (const [l, r] of [...input.routers].sort((a, b) => a[0] - b[0])) {
    if (l === 0) continue;
    const lp: SparseLayerPlan = { layer: l };
    if (cfg.mlp !== null && r.mlp) {
      const target = cfg.mlp;
      lp.mlp = { router: { rank: r.mlp.rank, fc1: r.mlp.fc1, fc2: r.mlp.fc2 }, score: r.mlp.score, k: (tokens: number) => input.mlpK(target, l, tokens) };
    }
    if (r.attn && cfg.heads[l] < units) lp.attn = { router: r.attn, k: cfg.heads[l] };
    if (lp.mlp || lp.attn) layers.push(lp);
  }
  return layers.length ? { layers } : null;
}

export function decodeEvaluator(input: DecodeEvaluatorInput): DecodeEvaluator {
  const { rt, windows, batch } = input;
  const vocab = rt.spec.vocab;
  const maxLen = Math.max(...windows.map((w) => w.length));
  const session = rt.session({ maxSeqs: Math.min(batch, windows.length), maxLen });
  const tokens = windows.reduce((a, w) => a + w.length - 1, 0);
  let spent = 0;
  const evaluate: PplEvaluator = async (cfg) => {
    const t0 = performance.now();
    session.setSparsePlan(planFor(cfg, input));
    const acc = { nll: 0, count: 0 };
    for (let g = 0; g < windows.length; g += batch) {
      if (input.shouldStop?.()) throw new Error('head calibration interrupted');
      const group = windows.slice(g, g + batch);
      session.reset();
      const steps = Math.max(...group.map((w) => w.length)) - 1;
      for (let t = 0; t < steps; t++) {
        const inputs: { slot: number; tokens: number[] }[] = [];
        const targets: number[] = [];
        for (let s = 0; s < group.length; s++) {
          if (t + 1 < group[s].length) {
            inputs.push({ slot: s, tokens: [group[s][t]] });
            targets.push(group[s][t + 1]);
          }
        }
        const out = await session.forward(inputs, { logits: 'all' });
        accumulateNll(out.logits!, vocab, 0, targets, acc);
      }
    }
    spent += (performance.now() - t0) / 1000;
    return Math.exp(acc.nll / acc.count);
  };
  return { evaluate, tokens, seconds: () => spent, dispose: () => session.dispose() };
}

/**
 * A faster evaluator for configurations with the MLP dense (the head sweep): windows run as prefill, several
 * per call. Per-token head selection makes this exact: each token keeps its own heads whether it is decoded
 * alone or prefilled with its predecessors (Q/K/V stay dense, so the KV cache is the same).
 */
export function prefillEvaluator(input: Omit<DecodeEvaluatorInput, 'batch'>): DecodeEvaluator {
  const { rt, windows } = input;
  const vocab = rt.spec.vocab;
  const maxLen = Math.max(...windows.map((w) => w.length));
  const per = Math.max(1, Math.min(16, windows.length, Math.floor((256 << 20) / (4 * vocab * maxLen))));
  const session = rt.session({ maxSeqs: per, maxLen });
  const tokens = windows.reduce((a, w) => a + w.length - 1, 0);
  let spent = 0;
  const evaluate: PplEvaluator = async (cfg) => {
    if (cfg.mlp !== null) throw new Error('prefill evaluator: head configurations only (the MLP union of a prefill call is not that of decoding)');
    const t0 = performance.now();
    session.setSparsePlan(planFor(cfg, input));
    const acc = { nll: 0, count: 0 };
    for (let g = 0; g < windows.length; g += per) {
      if (input.shouldStop?.()) throw new Error('head calibration interrupted');
      const group = windows.slice(g, g + per);
      session.reset();
      const out = await session.forward(group.map((w, slot) => ({ slot, tokens: w })), { logits: 'all' });
      let row = 0;
      for (const w of group) {
        accumulateNll(out.logits!, vocab, row, w.subarray(1), acc);
        row += w.length;
      }
    }
    spent += (performance.now() - t0) / 1000;
    return Math.exp(acc.nll / acc.count);
  };
  return { evaluate, tokens, seconds: () => spent, dispose: () => session.dispose() };
}
