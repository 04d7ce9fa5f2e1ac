// The validate metrics and decoding loop on synthetic logits and a fake model pair (no native addon).
import { describe, expect, it } from 'vitest';
import { klRow, LayerSparsityMetrics, LogitMetrics } from '../../src/validate/metrics.ts';
import { accumulateNll } from '../../src/eval/protocol.ts';
import { decodeValidate, predictedPositions, type DecodePair, type StepToken } from '../../src/validate/decode.ts';

describe('validate metrics', () => {
  it('KL, perplexity and top-1 of identical and known distributions', () => {
    const V = 4;
    const d = Float32Array.from([0, 0, 0, 0, 1, 2, 3, 4]);
    expect(klRow(d, d, V, 1, 1)).toBeCloseTo(0, 12);
    // KL(uniform || softmax([1,2,3,4])) = sum 1/4 (log 1/4 - log q)
    const q = [1, 2, 3, 4].map((x) => Math.exp(x));
    const Z = q.reduce((a, b) => a + b);
    const want = q.reduce((a, qi) => a + 0.25 * (Math.log(0.25) - Math.log(qi / Z)), 0);
    expect(klRow(d, d, V, 0, 1)).toBeCloseTo(want, 6);
    const m = new LogitMetrics(V);
    m.add(d, 0, d, 1, 3); // dense uniform: nll log 4; sparse argmax 3
    m.add(d, 1, d, 1, 3);
    const r = m.result();
    expect(r.dense_ppl).toBeCloseTo(Math.exp((Math.log(4) + (Math.log(Z) - 4)) / 2), 5);
    expect(r.sparse_ppl).toBeCloseTo(Math.exp(Math.log(Z) - 4), 5);
    expect(r.top1_agreement).toBe(0.5); // uniform argmax is 0, sparse is 3
    expect(r.kl).toBeCloseTo(want / 2, 6);
  });

  it('fused NLL and KL agree with accumulateNll and klRow on random logits', () => {
    const V = 1000;
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 8 - 4;
    const d = Float32Array.from({ length: 3 * V }, rnd);
    const s = Float32Array.from({ length: 3 * V }, rnd);
    const m = new LogitMetrics(V);
    const accD = { nll: 0, count: 0 };
    const accS = { nll: 0, count: 0 };
    let kl = 0;
    for (let r = 0; r < 3; r++) {
      m.add(d, r, s, r, 10 * r);
      accumulateNll(d, V, r, [10 * r], accD);
      accumulateNll(s, V, r, [10 * r], accS);
      kl += klRow(d, s, V, r, r);
    }
    const out = m.result();
    expect(out.dense_ppl).toBeCloseTo(Math.exp(accD.nll / 3), 8);
    expect(out.sparse_ppl).toBeCloseTo(Math.exp(accS.nll / 3), 8);
    expect(out.kl).toBeCloseTo(kl / 3, 8);
  });

  it('MLP density and recall of the union of a step', () => {
    const F = 8;
    const m = new LayerSparsityMetrics(1, F, 4, 4);
    const act = new Float32Array(2 * F);
    act[1] = 1; // token 0: neuron 1
    act[F + 2] = 0.5; // token 1: neuron 2
    act[F + 5] = -1; // inactive
    m.addMlpStep(Int32Array.from([0, 1]), act, 2); // union {1,2}, kept {0,1} -> recall 1/2, density 2/8
    m.addMlpStep(null, act, 2); // dense: density 1, recall 1
    const r = m.result();
    expect(r.mlp_density).toBeCloseTo((0.25 + 1) / 2, 12);
    expect(r.mlp_recall).toBeCloseTo(0.75, 12);
  });

  it('heads kept and head recall against the dense top-m (MHA and GQA)', () => {
    const mha = new LayerSparsityMetrics(1, 4, 4, 4);
    const kept = Uint8Array.from([1, 1, 0, 0, 1, 1, 1, 1]);
    const norm = Float32Array.from([5, 1, 3, 0, 1, 1, 1, 1]);
    mha.addHeadStep(kept, norm, 2); // token 0: top-2 {0,2}, kept {0,1} -> 1/2; token 1: all kept -> 1
    let r = mha.result();
    expect(r.heads_kept).toBe(3);
    expect(r.head_recall).toBe(0.75);
    const gqa = new LayerSparsityMetrics(1, 4, 4, 2); // groups {0,1}, {2,3}
    gqa.addHeadStep(Uint8Array.from([0, 0, 1, 1]), Float32Array.from([3, 0, 2, 2.5]), 1); // group norms 3 vs 3.2 -> top-1 = group 1
    r = gqa.result();
    expect(r.heads_kept).toBe(2);
    expect(r.head_recall).toBe(1);
  });
});

/** A fake "model": logits one-hot-ish on (token + slot) mod V; sparse differs by a bias on token 0. */
function fakePair(V: number, layers: number, ffn: number, heads: number) {
  const calls: { kind: 'dense' | 'sparse'; step: StepToken[] }[] = [];
  let resets = 0;
  const logits = (step: StepToken[], shift: number) => {
    const out = new Float32Array(step.length * V);
    step.forEach((s, i) => {
      out[i * V + ((s.token + 1) % V)] = 3;
      out[i * V] += shift;
    });
    return out;
  };
  const pair: DecodePair = {
    reset: () => void resets++,
    dense: async (step) => {
      calls.push({ kind: 'dense', step });
      const act = new Float32Array(step.length * ffn);
      step.forEach((s, i) => (act[i * ffn + (s.token % ffn)] = 1));
      return { logits: logits(step, 0), mlpAct: Array(layers).fill(act), headNorm: Array(layers).fill(new Float32Array(step.length * heads).fill(1)) };
    },
    sparse: async (step) => {
      calls.push({ kind: 'sparse', step });
      return {
        logits: logits(step, 0.5),
        layers: Array.from({ length: layers }, (_, l) => (l === 0 ? { mlpIndex: null, heads: null } : { mlpIndex: Int32Array.from([0, 1]), heads: new Uint8Array(step.length * heads).fill(1) })),
      };
    },
  };
  return { pair, calls, resets: () => resets };
}

describe('decodeValidate', () => {
  it('groups windows b at a time and feeds one position per step to both models', async () => {
    const V = 8, L = 2, F = 4, H = 2;
    const f = fakePair(V, L, F, H);
    const ws = [Int32Array.from([1, 2, 3, 4]), Int32Array.from([5, 6, 7]), Int32Array.from([1, 2])];
    expect(predictedPositions(ws)).toBe(3 + 2 + 1);
    const r = await decodeValidate(f.pair, ws, 2, { layers: L, ffn: F, heads: H, kvHeads: H, vocab: V });
    expect(f.resets()).toBe(2);
    const sparse = f.calls.filter((c) => c.kind === 'sparse').map((c) => c.step.map((s) => `${s.slot}:${s.token}`).join(','));
    // group 1: windows 0 and 1 decoded together until window 1 runs out; group 2: window 2 alone
    expect(sparse).toEqual(['0:1,1:5', '0:2,1:6', '0:3', '0:1']);
    expect(f.calls.filter((c) => c.kind === 'dense')).toHaveLength(4);
    // the fake predicts token+1 perfectly in argmax, and both agree
    expect(r.top1_agreement).toBe(1);
    expect(r.batch_size).toBe(2);
    expect(r.sparse_ppl).toBeGreaterThan(r.dense_ppl);
    expect(r.kl).toBeGreaterThan(0);
    expect(r.layers[0]).toEqual({ layer: 0, mlp_density: 1, heads_kept: H, mlp_recall: 1, head_recall: 1 });
    expect(r.layers[1].mlp_density).toBe(0.5);
    // step unions: {1,5%4=1}={1} -> kept {0,1}: 1; {2,2}: 0; {3}: 0; {1}: 1 -> mean 0.5
    expect(r.layers[1].mlp_recall).toBe(0.5);
  });
});
