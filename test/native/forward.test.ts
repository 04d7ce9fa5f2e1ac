// Dense native forward against the transformers goldens (tiny-opt, tiny-llama): logits and every captured
// intermediate, KV-cache decode vs full forward, mixed-length batches, and argument errors.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/model/index.ts';
import { readSafetensorsHeader, readTensorF32, readTensorInt } from '../../src/formats/safetensors.ts';
import { native, openRuntimeModel, type RuntimeModel } from '../../src/runtime/index.ts';
import { nativeModelConfig } from '../../src/runtime/model.ts';
import { models, maxAbsDiff } from '../helpers.ts';

interface Golden {
  ids: number[][];
  logits: Float32Array;
  t: (name: string) => Float32Array;
}

function golden(dir: string): Golden {
  const h = readSafetensorsHeader(join(dir, 'reference/golden.safetensors'));
  const ids = readTensorInt(h.tensors.get('input_ids')!);
  const [B, S] = h.tensors.get('input_ids')!.shape;
  return {
    ids: Array.from({ length: B }, (_, b) => ids.slice(b * S, (b + 1) * S)),
    logits: readTensorF32(h.tensors.get('logits')!),
    t: (name) => readTensorF32(h.tensors.get(name)!),
  };
}

/** rows [r0, r1) of a [rows, width] matrix */
const rows = (a: Float32Array, width: number, r0: number, r1: number) => a.subarray(r0 * width, r1 * width);

for (const [name, dir] of [['tiny-opt', models.tinyOpt], ['tiny-llama', models.tinyLlama]] as const) {
  describe(`dense forward: ${name}`, () => {
    let rt: RuntimeModel;
    let g: Golden;
    beforeAll(() => {
      rt = openRuntimeModel(loadModel(dir), { backend: 'cpu' });
      g = golden(dir);
    });
    afterAll(() => rt?.dispose());

    it('matches the golden logits and every captured intermediate within 1e-3', async () => {
      const spec = rt.spec;
      const s = rt.session({ maxSeqs: 2, maxLen: 64 });
      const out = await s.forward(
        g.ids.map((tokens, slot) => ({ slot, tokens })),
        { capture: { attnIn: true, mlpIn: true, mlpAct: true, headNorm: true } },
      );
      expect(out.tokens).toBe(64);
      expect(maxAbsDiff(out.logits!, g.logits)).toBeLessThan(1e-3);
      expect(out.captures.map((c) => c.layer)).toEqual(Array.from({ length: spec.layers }, (_, l) => l));
      for (const c of out.captures) {
        const l = c.layer;
        expect(maxAbsDiff(c.attnIn!, g.t(`attn_in.${l}`)), `attn_in.${l}`).toBeLessThan(1e-3);
        expect(maxAbsDiff(c.mlpIn!, g.t(`mlp_in.${l}`)), `mlp_in.${l}`).toBeLessThan(1e-3);
        expect(maxAbsDiff(c.mlpAct!, g.t(`mlp_act.${l}`)), `mlp_act.${l}`).toBeLessThan(1e-3);
        expect(maxAbsDiff(c.headNorm!, g.t(`attn_head_norm.${l}`)), `attn_head_norm.${l}`).toBeLessThan(1e-3);
      }
      expect(s.length(0)).toBe(32);
      expect(s.length(1)).toBe(32);
      s.dispose();
    });

    it('decoding token by token with the KV cache gives the full-forward logits', async () => {
      const V = rt.spec.vocab;
      const s = rt.session({ maxSeqs: 1, maxLen: 32 });
      const full = await s.forward([{ slot: 0, tokens: g.ids[1] }]);
      s.reset(0);
      expect(s.length(0)).toBe(0);
      // prefill 5, then one token per step
      const pre = await s.forward([{ slot: 0, tokens: g.ids[1].slice(0, 5) }], { logits: 'last' });
      expect(maxAbsDiff(pre.logits!, rows(full.logits!, V, 4, 5))).toBeLessThan(1e-4);
      for (let t = 5; t < 32; t++) {
        const o = await s.forward([{ slot: 0, tokens: [g.ids[1][t]] }]);
        expect(maxAbsDiff(o.logits!, rows(full.logits!, V, t, t + 1)), `position ${t}`).toBeLessThan(1e-4);
        expect(maxAbsDiff(o.logits!, rows(g.logits, V, 32 + t, 33 + t)), `position ${t} vs golden`).toBeLessThan(1e-3);
      }
      s.dispose();
    });

    it('a batch of sequences of different lengths gives the logits of each alone', async () => {
      const V = rt.spec.vocab;
      const s = rt.session({ maxSeqs: 3, maxLen: 32 });
      // slot 2 <- sequence 0 cut to 19 tokens, slot 0 <- sequence 1 cut to 27 tokens
      const out = await s.forward([
        { slot: 2, tokens: Int32Array.from(g.ids[0].slice(0, 19)) },
        { slot: 0, tokens: g.ids[1].slice(0, 27) },
      ]);
      expect(out.tokens).toBe(46);
      const alone = rt.session({ maxSeqs: 1, maxLen: 32 });
      const a0 = await alone.forward([{ slot: 0, tokens: g.ids[0].slice(0, 19) }]);
      alone.reset();
      const a1 = await alone.forward([{ slot: 0, tokens: g.ids[1].slice(0, 27) }]);
      expect(maxAbsDiff(rows(out.logits!, V, 0, 19), a0.logits!)).toBeLessThan(1e-5);
      expect(maxAbsDiff(rows(out.logits!, V, 19, 46), a1.logits!)).toBeLessThan(1e-5);
      expect(maxAbsDiff(rows(out.logits!, V, 0, 19), rows(g.logits, V, 0, 19))).toBeLessThan(1e-3);
      // mixed step: prefill continues on one slot while the other decodes one token; 'last' logits
      const step = await s.forward(
        [
          { slot: 0, tokens: g.ids[1].slice(27, 28) },
          { slot: 2, tokens: g.ids[0].slice(19, 32) },
        ],
        { logits: 'last' },
      );
      expect(step.logits!.length).toBe(2 * V);
      expect(maxAbsDiff(rows(step.logits!, V, 0, 1), rows(g.logits, V, 32 + 27, 32 + 28))).toBeLessThan(1e-3);
      expect(maxAbsDiff(rows(step.logits!, V, 1, 2), rows(g.logits, V, 31, 32))).toBeLessThan(1e-3);
      expect([s.length(0), s.length(1), s.length(2)]).toEqual([28, 0, 32]);
      s.dispose();
      alone.dispose();
    });
  });
}

describe('forward argument errors', () => {
  let rt: RuntimeModel;
  beforeAll(() => {
    rt = openRuntimeModel(loadModel(models.tinyOpt));
  });
  afterAll(() => rt?.dispose());

  it('rejects bad calls with clear messages, and the session stays usable', async () => {
    const s = rt.session({ maxSeqs: 2, maxLen: 8 });
    await expect(s.forward([{ slot: 2, tokens: [1] }])).rejects.toThrow(/forward inputs\[0\]\.slot: expected an integer slot in 0\.\.1, received 2/);
    await expect(s.forward([{ slot: -1, tokens: [1] }])).rejects.toThrow(/slot/);
    await expect(s.forward([{ slot: 0, tokens: [1, 8192] }])).rejects.toThrow(/tokens\[1\]: expected a token id in 0\.\.8191, received 8192/);
    await expect(s.forward([{ slot: 0, tokens: [1.5] }])).rejects.toThrow(/token id/);
    await expect(s.forward([{ slot: 0, tokens: new Array(9).fill(1) }])).rejects.toThrow(/tokens: expected at most 8 tokens \(slot 0 holds 0 of maxLen 8\), received 9$/);
    await expect(s.forward([{ slot: 0, tokens: [] }])).rejects.toThrow(/at least one token/);
    await expect(s.forward([{ slot: 0, tokens: [1] }, { slot: 0, tokens: [2] }])).rejects.toThrow(/not used by another input/);
    await expect(s.forward([])).rejects.toThrow(/non-empty array/);
    await expect(s.forward([{ slot: 0, tokens: [1] }], { capture: { attnIn: true, layers: [5] } })).rejects.toThrow(/capture\.layers/);
    await expect(s.forward([{ slot: 0, tokens: [1] }], { logits: 'some' as never })).rejects.toThrow(/opts\.logits/);
    expect(() => s.length(3)).toThrow(/slot in 0\.\.1/);
    // nothing above advanced the cache
    expect(s.length(0)).toBe(0);
    await s.forward([{ slot: 0, tokens: [1, 2, 3, 4, 5, 6] }], { logits: 'none' });
    await expect(s.forward([{ slot: 0, tokens: [1, 2, 3] }])).rejects.toThrow(/at most 2 tokens \(slot 0 holds 6 of maxLen 8\)/);
    // a second forward while one runs
    const p = s.forward([{ slot: 1, tokens: [1] }]);
    await expect(s.forward([{ slot: 0, tokens: [1] }])).rejects.toThrow(/previous forward/);
    await p;
    expect(s.length(1)).toBe(1);
    s.dispose();
    await expect(s.forward([{ slot: 0, tokens: [1] }])).rejects.toThrow(/disposed/);
    expect(() => rt.session({ maxSeqs: 0, maxLen: 8 })).toThrow(/maxSeqs/);
    expect(() => rt.session({ maxSeqs: 1, maxLen: 513 })).toThrow(/maxLen: expected an integer in 1\.\.512/);
    expect(() => openRuntimeModel(loadModel(models.tinyOpt), { backend: 'cuda' })).toThrow(/CUDA/);
  });
});

describe('native failures come back as JS errors', () => {
  it('bad weights and a bad request reaching the addon directly throw, never crash', async () => {
    const m = loadModel(models.tinyOpt);
    const past = { ...m, weights: m.weights.map((w) => (w.name === 'layers.1.up.weight' ? { ...w, offset: w.offset + 10_000_000 } : w)) };
    expect(() => openRuntimeModel(past)).toThrow(/layers\.1\.up\.weight": expected bytes \[\d+, \d+\) within the file/);
    const shape = { ...m, weights: m.weights.map((w) => (w.name === 'layers.0.q.weight' ? { ...w, shape: [128, 64] } : w)) };
    expect(() => openRuntimeModel(shape)).toThrow(/layers\.0\.q\.weight"\.shape: expected \[128, 128\], received \[128, 64\]/);
    const missing = { ...m, weights: m.weights.filter((w) => w.name !== 'final_norm.bias') };
    expect(() => openRuntimeModel(missing)).toThrow(/final_norm\.bias": expected a tensor of shape \[128\], received none/);
    // the raw binding, past the TypeScript checks: the kernels' own checks answer
    const nb = native();
    const h = nb.modelCreate(nativeModelConfig(m.spec), m.weights);
    const s = nb.sessionCreate(h, 1, 8);
    const req = (slot: number, tok: number) => ({
      slots: Int32Array.of(slot), counts: Int32Array.of(1), tokens: Int32Array.of(tok), logitsMode: 0 as const, logits: null, captures: null, sparse: null,
    });
    await expect(nb.sessionForward(s, req(3, 1))).rejects.toThrow(/slot: expected 0\.\.0, received 3/);
    await expect(nb.sessionForward(s, req(0, 99999))).rejects.toThrow(/expected an id in 0\.\.8191, received 99999/);
    expect(() => nb.sessionForward(s, { ...req(0, 1), tokens: new Int32Array(0) })).toThrow(/req\.tokens: expected at least 1 elements/);
    expect(() => nb.sessionCreate(h, 1, 100000)).toThrow(/maxLen: expected at most 512/);
    await nb.sessionForward(s, req(0, 1));
    expect(nb.sessionLength(s, 0)).toBe(1);
    nb.sessionFree(s);
    nb.modelFree(h);
    expect(() => nb.sessionCreate(h, 1, 8)).toThrow(/disposed/);
  });
});

describe('small models run (smoke)', () => {
  for (const [name, dir] of [['small-opt', models.smallOpt], ['small-llama', models.smallLlama]] as const) {
    it(`${name}: prefill + decode, finite logits, decode matches prefill`, async () => {
      const rt = openRuntimeModel(loadModel(dir));
      const V = rt.spec.vocab;
      const s = rt.session({ maxSeqs: 2, maxLen: 64 });
      const toks = Array.from({ length: 24 }, (_, i) => (i * 97 + 5) % V);
      toks[0] = 1;
      const full = await s.forward([{ slot: 0, tokens: toks }]);
      expect(full.logits!.every(Number.isFinite)).toBe(true);
      await s.forward([{ slot: 1, tokens: toks.slice(0, 20) }], { logits: 'none' });
      for (let t = 20; t < 24; t++) {
        const o = await s.forward([{ slot: 1, tokens: [toks[t]] }]);
        expect(maxAbsDiff(o.logits!, rows(full.logits!, V, t, t + 1))).toBeLessThan(1e-3);
      }
      rt.dispose();
    });
  }
});
