// runValidation over the native runtime on tiny-opt with synthetic routers: with k = ffn and every head
// the sparse decode reproduces the dense one; with a small k the metrics move the right way.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadModel } from '../../src/model/index.ts';
import { nativeAvailable, openRuntimeModel, type SparsePlan } from '../../src/runtime/index.ts';
import { protocolTokens } from '../../src/eval/protocol.ts';
import { capTokens, runValidation } from '../../src/validate/index.ts';
import { evalText, models } from '../helpers.ts';

const na = nativeAvailable();
if (!na.ok) console.log(`validate-runtime: skipped: ${na.reason.split('\n')[0]}`);

function randomPlan(spec: { layers: number; hidden: number; ffn: number; kvHeads: number }, mlpK: number, heads: number): SparsePlan {
  let seed = 3;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
  const r = 8;
  return {
    layers: Array.from({ length: spec.layers - 1 }, (_, i) => ({
      layer: i + 1,
      mlp: { router: { rank: r, fc1: Float32Array.from({ length: r * spec.hidden }, rnd), fc2: Float32Array.from({ length: spec.ffn * r }, rnd) }, k: mlpK },
      attn: { router: { units: spec.kvHeads, weight: Float32Array.from({ length: spec.kvHeads * spec.hidden }, rnd), bias: null }, k: heads },
    })),
  };
}

describe.skipIf(!na.ok)('runValidation on tiny-opt', () => {
  const model = loadModel(models.tinyOpt);
  const tokens = capTokens(protocolTokens(readFileSync(evalText, 'utf8'), model.tokenizer(), model.spec), 600);

  it('k = ffn and every head: sparse decoding equals dense', async () => {
    const rt = openRuntimeModel(model);
    try {
      const s = model.spec;
      const out = await runValidation({ rt, tokens, window: 256, batchSizes: [1, 3], planFor: () => randomPlan(s, s.ffn, s.kvHeads) });
      expect(out.tokens).toBe(600 - 3);
      for (const r of out.results) {
        expect(Math.abs(r.ppl_increase)).toBeLessThan(1e-6);
        expect(r.kl).toBeLessThan(1e-9);
        expect(r.top1_agreement).toBe(1);
        for (const l of r.layers) expect(l).toEqual({ layer: l.layer, mlp_density: 1, heads_kept: s.heads, mlp_recall: 1, head_recall: 1 });
      }
      // the same dense perplexity at every batch size (same windows, decoded in different groups)
      expect(out.results[1].dense_ppl).toBeCloseTo(out.results[0].dense_ppl, 6);
    } finally {
      rt.dispose();
    }
  });

  it('a small k and fewer heads: realised density and heads as asked, perplexity worse', async () => {
    const rt = openRuntimeModel(model);
    try {
      const s = model.spec;
      const out = await runValidation({ rt, tokens, window: 256, batchSizes: [1, 4], planFor: (b) => randomPlan(s, b === 1 ? 128 : 256, 2) });
      const [b1, b4] = out.results;
      expect(b1.layers[0].mlp_density).toBe(1);
      expect(b1.layers[1].mlp_density).toBeCloseTo(128 / s.ffn, 12);
      expect(b4.layers[1].mlp_density).toBeCloseTo(256 / s.ffn, 12);
      expect(b1.layers[1].heads_kept).toBe(2);
      expect(b1.sparse_ppl).toBeGreaterThan(b1.dense_ppl);
      expect(b1.kl).toBeGreaterThan(0);
      expect(b1.layers[1].mlp_recall).toBeLessThan(1);
      expect(b1.layers[1].head_recall).toBeLessThan(1);
    } finally {
      rt.dispose();
    }
  });
});
