// Sparse forward (Polar Sparsity) of the native runtime: k = ffn and all heads equals dense; the realised
// sets are the routers' top-k; oracle index sets reproduce dense; head sparsity is consistent between
// prefill and KV-cache decode; bad plans and overrides fail with clear messages.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type ModelSpec } from '../../src/model/index.ts';
import { readSafetensorsHeader, readTensorInt } from '../../src/formats/safetensors.ts';
import { openRuntimeModel, type RuntimeModel, type SparsePlan } from '../../src/runtime/index.ts';
import { models, maxAbsDiff, lcg } from '../helpers.ts';

function goldenIds(dir: string): number[][] {
  const h = readSafetensorsHeader(join(dir, 'reference/golden.safetensors'));
  const info = h.tensors.get('input_ids')!;
  const ids = readTensorInt(info);
  const [B, S] = info.shape;
  return Array.from({ length: B }, (_, b) => ids.slice(b * S, (b + 1) * S));
}

function randF32(n: number, r: () => number, scale = 0.2) {
  return Float32Array.from({ length: n }, () => r() * scale);
}

function randomPlan(spec: ModelSpec, mlpK: number, attnK: number, units = spec.heads, rank = 16): SparsePlan {
  const r = lcg(42);
  const layers = [];
  for (let l = 1; l < spec.layers; l++) {
    layers.push({
      layer: l,
      mlp: { router: { rank, fc1: randF32(rank * spec.hidden, r), fc2: randF32(spec.ffn * rank, r) }, k: mlpK },
      attn: { router: { units, weight: randF32(units * spec.hidden, r), bias: randF32(units, r) }, k: attnK },
    });
  }
  return { layers };
}

// x [T, d] . W^T [n, d] + b
function linear(x: Float32Array, T: number, d: number, w: Float32Array, n: number, b?: Float32Array | null): Float64Array {
  const y = new Float64Array(T * n);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < n; j++) {
      let s = b ? b[j] : 0;
      for (let i = 0; i < d; i++) s += x[t * d + i] * w[j * d + i];
      y[t * n + j] = s;
    }
  return y;
}

function topkAscending(score: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: score.length }, (_, i) => i);
  idx.sort((a, b) => score[b] - score[a] || a - b);
  return idx.slice(0, k).sort((a, b) => a - b);
}

describe('sparse forward: tiny-opt', () => {
  let rt: RuntimeModel;
  let ids: number[][];
  beforeAll(() => {
    rt = openRuntimeModel(loadModel(models.tinyOpt));
    ids = goldenIds(models.tinyOpt);
  });
  afterAll(() => rt?.dispose());

  it('with k = ffn and all heads equals the dense logits within 1e-4', async () => {
    const spec = rt.spec;
    const dense = rt.session({ maxSeqs: 2, maxLen: 32 });
    const d = await dense.forward(ids.map((tokens, slot) => ({ slot, tokens })));
    const s = rt.session({ maxSeqs: 2, maxLen: 32 });
    s.setSparsePlan(randomPlan(spec, spec.ffn, spec.heads));
    const o = await s.forward(ids.map((tokens, slot) => ({ slot, tokens })));
    expect(maxAbsDiff(o.logits!, d.logits!)).toBeLessThan(1e-4);
    expect(o.sparse!.map((r) => r.layer)).toEqual([1]);
    expect(Array.from(o.sparse![0].mlpIndex!)).toEqual(Array.from({ length: spec.ffn }, (_, i) => i));
    expect(o.sparse![0].heads!.every((v) => v === 1)).toBe(true);
    // decode steps too
    const step = [{ slot: 0, tokens: [5] }, { slot: 1, tokens: [7] }];
    s.reset();
    dense.reset();
    await s.forward([{ slot: 0, tokens: ids[0].slice(0, 20) }, { slot: 1, tokens: ids[1].slice(0, 9) }], { logits: 'none' });
    await dense.forward([{ slot: 0, tokens: ids[0].slice(0, 20) }, { slot: 1, tokens: ids[1].slice(0, 9) }], { logits: 'none' });
    expect(maxAbsDiff((await s.forward(step)).logits!, (await dense.forward(step)).logits!)).toBeLessThan(1e-4);
    // sparse: false runs dense; a null plan removes sparsity
    const off = await s.forward([{ slot: 0, tokens: [9] }], { sparse: false });
    expect(off.sparse).toBeUndefined();
    s.setSparsePlan(null);
    expect((await s.forward([{ slot: 1, tokens: [9] }])).sparse).toBeUndefined();
    s.dispose();
    dense.dispose();
  });

  it('keeps the top-k of the batch-summed MLP router scores and each token its own top-k heads', async () => {
    const spec = rt.spec;
    const plan = randomPlan(spec, 100, 2);
    const s = rt.session({ maxSeqs: 2, maxLen: 32 });
    s.setSparsePlan(plan);
    const toks = [ids[0].slice(0, 7), ids[1].slice(0, 4)];
    const o = await s.forward(toks.map((tokens, slot) => ({ slot, tokens })), { capture: { attnIn: true, headNorm: true, mlpAct: true, layers: [1] } });
    const T = 11;
    const x = o.captures[0].attnIn!;
    const lp = plan.layers[0];
    const h = Float32Array.from(linear(x, T, spec.hidden, lp.mlp!.router.fc1, 16));
    const sc = linear(h, T, 16, lp.mlp!.router.fc2, spec.ffn);
    const sum = new Float64Array(spec.ffn);
    for (let t = 0; t < T; t++) for (let j = 0; j < spec.ffn; j++) sum[j] += sc[t * spec.ffn + j];
    const rep = o.sparse![0];
    const want = topkAscending(sum, 100);
    const got = Array.from(rep.mlpIndex!);
    // fp32 vs fp64 sums may swap near-ties at the k-th place: allow one
    expect(got.length).toBe(100);
    expect(got.filter((i) => !want.includes(i)).length).toBeLessThanOrEqual(1);
    // neurons outside the set have zero activation
    const act = o.captures[0].mlpAct!;
    const kept = new Set(got);
    for (let t = 0; t < T; t++) for (let j = 0; j < spec.ffn; j++) if (!kept.has(j)) expect(act[t * spec.ffn + j]).toBe(0);
    // heads: per token top-2 of the router's scores; dropped heads have zero output norm
    const hs = linear(x, T, spec.hidden, lp.attn!.router.weight, spec.heads, lp.attn!.router.bias);
    const norms = o.captures[0].headNorm!;
    for (let t = 0; t < T; t++) {
      const w = topkAscending(hs.subarray(t * spec.heads, (t + 1) * spec.heads), 2);
      const g = [0, 1, 2, 3].filter((hh) => rep.heads![t * spec.heads + hh] === 1);
      expect(g).toEqual(w);
      for (let hh = 0; hh < spec.heads; hh++) expect(norms[t * spec.heads + hh] > 0).toBe(g.includes(hh));
    }
    s.dispose();
  });

  it('an oracle index set (the truly active neurons) reproduces the dense logits', async () => {
    const spec = rt.spec;
    const dense = rt.session({ maxSeqs: 2, maxLen: 32 });
    const d = await dense.forward(ids.map((tokens, slot) => ({ slot, tokens })), { capture: { mlpAct: true } });
    const layers = [];
    for (let l = 1; l < spec.layers; l++) {
      const act = d.captures[l].mlpAct!;
      const active: number[] = [];
      for (let j = 0; j < spec.ffn; j++) {
        let on = false;
        for (let t = 0; t < 64 && !on; t++) on = act[t * spec.ffn + j] > 0;
        if (on) active.push(j);
      }
      expect(active.length).toBeLessThan(spec.ffn);
      layers.push({ layer: l, mlpIndex: active.reverse() }); // any order
    }
    const s = rt.session({ maxSeqs: 2, maxLen: 32 });
    const o = await s.forward(ids.map((tokens, slot) => ({ slot, tokens })), { sparse: { layers } });
    expect(maxAbsDiff(o.logits!, d.logits!)).toBeLessThan(1e-4);
    expect(Array.from(o.sparse![0].mlpIndex!)).toEqual([...layers[0].mlpIndex].sort((a, b) => a - b));
    expect(o.sparse![0].heads).toBeNull();
    // a strict subset changes the result
    s.reset();
    const half = layers.map((x) => ({ layer: x.layer, mlpIndex: x.mlpIndex.slice(0, x.mlpIndex.length >> 1) }));
    const o2 = await s.forward(ids.map((tokens, slot) => ({ slot, tokens })), { sparse: { layers: half } });
    expect(maxAbsDiff(o2.logits!, d.logits!)).toBeGreaterThan(1e-3);
    s.dispose();
    dense.dispose();
  });

  it('head sparsity: token-by-token decode gives the prefill logits (per-token heads, complete KV cache)', async () => {
    const spec = rt.spec;
    const plan = randomPlan(spec, spec.ffn, 2); // MLP dense-equivalent, heads sparse
    const s = rt.session({ maxSeqs: 1, maxLen: 32 });
    s.setSparsePlan(plan);
    const full = await s.forward([{ slot: 0, tokens: ids[0] }]);
    const mask = full.sparse![0].heads!;
    s.reset();
    for (let t = 0; t < 32; t++) {
      const o = await s.forward([{ slot: 0, tokens: [ids[0][t]] }]);
      expect(Array.from(o.sparse![0].heads!)).toEqual(Array.from(mask.subarray(t * spec.heads, (t + 1) * spec.heads)));
      expect(maxAbsDiff(o.logits!, full.logits!.subarray(t * spec.vocab, (t + 1) * spec.vocab))).toBeLessThan(1e-4);
    }
    // explicit heads override the router: all heads -> dense
    const dense = rt.session({ maxSeqs: 1, maxLen: 32 });
    const d = await dense.forward([{ slot: 0, tokens: ids[0] }]);
    s.reset();
    const all = await s.forward([{ slot: 0, tokens: ids[0] }], { sparse: { layers: [{ layer: 1, heads: new Uint8Array(32 * spec.heads).fill(1) }] } });
    expect(maxAbsDiff(all.logits!, d.logits!)).toBeLessThan(1e-4);
    s.dispose();
    dense.dispose();
  });

  it('rejects bad plans and overrides with clear messages', async () => {
    const spec = rt.spec;
    const s = rt.session({ maxSeqs: 1, maxLen: 32 });
    const good = randomPlan(spec, 64, 2);
    expect(() => s.setSparsePlan({ layers: [{ ...good.layers[0], layer: 0 }] })).toThrow(/layer 0 stays dense/);
    expect(() => s.setSparsePlan({ layers: [{ ...good.layers[0], layer: 2 }] })).toThrow(/layer/);
    expect(() => s.setSparsePlan({ layers: [{ layer: 1, mlp: { ...good.layers[0].mlp!, k: spec.ffn + 1 } }] })).toThrow(/mlp\.k: expected an integer in 0\.\.512/);
    expect(() => s.setSparsePlan({ layers: [{ layer: 1, mlp: { router: { rank: 16, fc1: new Float32Array(3), fc2: new Float32Array(16 * 512) }, k: 4 } }] })).toThrow(
      /mlp\.router\.fc1: expected a Float32Array of 2048 values, received 3/,
    );
    expect(() => s.setSparsePlan({ layers: [{ layer: 1, attn: { router: { units: 3, weight: new Float32Array(3 * 128) }, k: 1 } }] })).toThrow(/attn\.router\.units/);
    s.setSparsePlan({ layers: [{ layer: 1, mlp: { ...good.layers[0].mlp!, k: (t) => t * 1000 } }] });
    await expect(s.forward([{ slot: 0, tokens: [1] }])).rejects.toThrow(/from the k function at 1 tokens/);
    s.setSparsePlan(null);
    await expect(s.forward([{ slot: 0, tokens: [1] }], { sparse: { layers: [{ layer: 1, mlpK: 3 }] } })).rejects.toThrow(/mlpK: expected an MLP router/);
    await expect(s.forward([{ slot: 0, tokens: [1] }], { sparse: { layers: [{ layer: 1, mlpIndex: [1, 1] }] } })).rejects.toThrow(/distinct/);
    await expect(s.forward([{ slot: 0, tokens: [1] }], { sparse: { layers: [{ layer: 1, mlpIndex: [512] }] } })).rejects.toThrow(/0\.\.511/);
    await expect(s.forward([{ slot: 0, tokens: [1, 2] }], { sparse: { layers: [{ layer: 1, heads: new Uint8Array(4) }] } })).rejects.toThrow(/heads: expected a Uint8Array \[tokens \(2\), heads \(4\)\]/);
    expect(s.length(0)).toBe(0);
    s.dispose();
  });
});

describe('sparse forward: tiny-llama (GQA)', () => {
  let rt: RuntimeModel;
  let ids: number[][];
  beforeAll(() => {
    rt = openRuntimeModel(loadModel(models.tinyLlama));
    ids = goldenIds(models.tinyLlama);
  });
  afterAll(() => rt?.dispose());

  it('k = ffn and all KV groups equals dense; per-group selection keeps whole groups', async () => {
    const spec = rt.spec;
    const dense = rt.session({ maxSeqs: 2, maxLen: 32 });
    const d = await dense.forward(ids.map((tokens, slot) => ({ slot, tokens })));
    for (const units of [spec.heads, spec.kvHeads]) {
      const s = rt.session({ maxSeqs: 2, maxLen: 32 });
      s.setSparsePlan(randomPlan(spec, spec.ffn, spec.kvHeads, units));
      const o = await s.forward(ids.map((tokens, slot) => ({ slot, tokens })));
      expect(maxAbsDiff(o.logits!, d.logits!)).toBeLessThan(1e-4);
      s.setSparsePlan(randomPlan(spec, 200, 1, units));
      s.reset();
      const o1 = await s.forward(ids.map((tokens, slot) => ({ slot, tokens })));
      const heads = o1.sparse![0].heads!;
      const G = spec.heads / spec.kvHeads;
      for (let t = 0; t < 64; t++) {
        const row = Array.from(heads.subarray(t * spec.heads, (t + 1) * spec.heads));
        expect(row.reduce((a, b) => a + b, 0)).toBe(G);
        for (let g = 0; g < spec.kvHeads; g++) expect(new Set(row.slice(g * G, (g + 1) * G)).size).toBe(1);
      }
      expect(o1.sparse![0].mlpIndex!.length).toBe(200);
      s.dispose();
    }
    // explicit index set in any order covering every neuron = dense
    const s = rt.session({ maxSeqs: 2, maxLen: 32 });
    const all = Array.from({ length: spec.ffn }, (_, i) => spec.ffn - 1 - i);
    const o = await s.forward(ids.map((tokens, slot) => ({ slot, tokens })), { sparse: { layers: [{ layer: 1, mlpIndex: all }] } });
    expect(maxAbsDiff(o.logits!, d.logits!)).toBeLessThan(1e-4);
    s.dispose();
    dense.dispose();
  });
});
