// The DecodePair of src/validate/decode.ts over the runtime: two sessions of b slots on one model, the
// dense one capturing the MLP activity and head norms of the sparse layers (the recall references), the
// sparse one running the plan (routers, the MLP k of batch size b, the heads per layer).
import type { RuntimeModel, RuntimeSession, SparsePlan } from '../runtime/index.ts';
import type { DecodePair, DenseStepOut, SparseStepOut, StepToken } from './decode.ts';

export interface RuntimePair extends DecodePair {
  dispose(): void;
}

export function runtimePair(rt: RuntimeModel, plan: SparsePlan, maxSeqs: number, maxLen: number): RuntimePair {
  const L = rt.spec.layers;
  const sparseLayers = plan.layers.map((l) => l.layer).sort((a, b) => a - b);
  const dense: RuntimeSession = rt.session({ maxSeqs, maxLen });
  let sparse: RuntimeSession | null = null;
  try {
    sparse = rt.session({ maxSeqs, maxLen });
    sparse.setSparsePlan(plan);
  } catch (e) {
    dense.dispose();
    sparse?.dispose();
    throw e;
  }
  const sp = sparse;
  const toInputs = (step: StepToken[]) => step.map((s) => ({ slot: s.slot, tokens: [s.token] }));
  return {
    reset() {
      dense.reset();
      sp.reset();
    },
    async dense(step): Promise<DenseStepOut> {
      const out = await dense.forward(toInputs(step), {
        logits: 'all',
        sparse: false,
        capture: sparseLayers.length ? { mlpAct: rt.spec.gated ? false : true, headNorm: true, layers: sparseLayers } : undefined,
      });
      const mlpAct: (Float32Array | null)[] = new Array(L).fill(null);
      const headNorm: (Float32Array | null)[] = new Array(L).fill(null);
      for (const c of out.captures) {
        mlpAct[c.layer] = c.mlpAct ?? null;
        headNorm[c.layer] = c.headNorm ?? null;
      }
      return { logits: out.logits!, mlpAct, headNorm };
    },
    async sparse(step): Promise<SparseStepOut> {
      const out = await sp.forward(toInputs(step), { logits: 'all', sparse: true });
      const layers: SparseStepOut['layers'] = Array.from({ length: L }, () => ({ mlpIndex: null, heads: null }));
      for (const r of out.sparse ?? []) layers[r.layer] = { mlpIndex: r.mlpIndex, heads: r.heads };
      return { logits: out.logits!, layers };
    },
    dispose() {
      dense.dispose();
      sp.dispose();
    },
  };
}
