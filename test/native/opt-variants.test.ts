// OPT variants that no bundled model covers: post-LN (do_layer_norm_before = false, OPT-350m) and
// project_in/project_out (word_embed_proj_dim != hidden_size). Synthetic fp32 checkpoints are written to a
// temp folder and the native forward is compared with a plain TypeScript reference written from
// transformers' OPTDecoder / OPTDecoderLayer.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/model/index.ts';
import { writeSafetensors, type TensorToWrite } from '../../src/formats/safetensors.ts';
import { openRuntimeModel } from '../../src/runtime/index.ts';
import { lcg } from '../helpers.ts';

const H = 32, NH = 4, HD = 8, F = 64, V = 50, L = 2, MAXPOS = 16;

type W = Record<string, Float32Array>;

function makeModel(dir: string, normBefore: boolean, E: number): W {
  const r = lcg(normBefore ? 7 : 11);
  const w: W = {};
  const shapes: Record<string, number[]> = {};
  const put = (name: string, shape: number[], scale = 0.3, base = 0) => {
    shapes[name] = shape;
    w[name] = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => base + r() * scale);
  };
  const p = 'model.decoder.';
  put(p + 'embed_tokens.weight', [V, E], 1);
  put(p + 'embed_positions.weight', [MAXPOS + 2, H], 1);
  if (E !== H) {
    put(p + 'project_in.weight', [H, E]);
    put(p + 'project_out.weight', [E, H]);
  }
  if (normBefore) {
    put(p + 'final_layer_norm.weight', [H], 0.5, 1);
    put(p + 'final_layer_norm.bias', [H], 0.2);
  }
  for (let l = 0; l < L; l++) {
    const q = `${p}layers.${l}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      put(`${q}self_attn.${n}.weight`, [H, H], 0.5);
      put(`${q}self_attn.${n}.bias`, [H], 0.2);
    }
    put(`${q}self_attn_layer_norm.weight`, [H], 0.5, 1);
    put(`${q}self_attn_layer_norm.bias`, [H], 0.2);
    put(`${q}final_layer_norm.weight`, [H], 0.5, 1);
    put(`${q}final_layer_norm.bias`, [H], 0.2);
    put(`${q}fc1.weight`, [F, H], 0.5);
    put(`${q}fc1.bias`, [F], 0.2);
    put(`${q}fc2.weight`, [H, F], 0.5);
    put(`${q}fc2.bias`, [H], 0.2);
  }
  const tensors: TensorToWrite[] = Object.keys(w).map((name) => ({ name, dtype: 'F32', shape: shapes[name], data: w[name] }));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      model_type: 'opt',
      architectures: ['OPTForCausalLM'],
      activation_function: 'relu',
      do_layer_norm_before: normBefore,
      enable_bias: true,
      ffn_dim: F,
      hidden_size: H,
      max_position_embeddings: MAXPOS,
      num_attention_heads: NH,
      num_hidden_layers: L,
      vocab_size: V,
      word_embed_proj_dim: E,
      tie_word_embeddings: true,
    }),
  );
  return w;
}

// ---- reference (float64) ----
function lin(x: number[], w: Float32Array, out: number, inn: number, b?: Float32Array): number[] {
  const y = new Array(out).fill(0);
  for (let j = 0; j < out; j++) {
    let s = b ? b[j] : 0;
    for (let i = 0; i < inn; i++) s += x[i] * w[j * inn + i];
    y[j] = s;
  }
  return y;
}
function ln(x: number[], g: Float32Array, b: Float32Array): number[] {
  const m = x.reduce((a, v) => a + v, 0) / x.length;
  const v = x.reduce((a, u) => a + (u - m) ** 2, 0) / x.length;
  return x.map((u, i) => ((u - m) / Math.sqrt(v + 1e-5)) * g[i] + b[i]);
}

function reference(w: W, normBefore: boolean, E: number, ids: number[]): number[][] {
  const p = 'model.decoder.';
  const T = ids.length;
  let h = ids.map((id, t) => {
    let e = Array.from(w[p + 'embed_tokens.weight'].subarray(id * E, (id + 1) * E));
    if (E !== H) e = lin(e, w[p + 'project_in.weight'], H, E);
    const pos = w[p + 'embed_positions.weight'].subarray((t + 2) * H, (t + 3) * H);
    return e.map((u, i) => u + pos[i]);
  });
  for (let l = 0; l < L; l++) {
    const q = (n: string) => w[`${p}layers.${l}.${n}`];
    const an = (x: number[]) => ln(x, q('self_attn_layer_norm.weight'), q('self_attn_layer_norm.bias'));
    const fn = (x: number[]) => ln(x, q('final_layer_norm.weight'), q('final_layer_norm.bias'));
    const xin = normBefore ? h.map(an) : h;
    const Q = xin.map((x) => lin(x, q('self_attn.q_proj.weight'), H, H, q('self_attn.q_proj.bias')));
    const K = xin.map((x) => lin(x, q('self_attn.k_proj.weight'), H, H, q('self_attn.k_proj.bias')));
    const Vv = xin.map((x) => lin(x, q('self_attn.v_proj.weight'), H, H, q('self_attn.v_proj.bias')));
    const att = Array.from({ length: T }, () => new Array(H).fill(0));
    for (let t = 0; t < T; t++)
      for (let hh = 0; hh < NH; hh++) {
        const s: number[] = [];
        for (let j = 0; j <= t; j++) {
          let d = 0;
          for (let i = 0; i < HD; i++) d += Q[t][hh * HD + i] * K[j][hh * HD + i];
          s.push(d / Math.sqrt(HD));
        }
        const mx = Math.max(...s);
        const e = s.map((u) => Math.exp(u - mx));
        const z = e.reduce((a, u) => a + u, 0);
        for (let j = 0; j <= t; j++) for (let i = 0; i < HD; i++) att[t][hh * HD + i] += (e[j] / z) * Vv[j][hh * HD + i];
      }
    h = h.map((r, t) => {
      const o = lin(att[t], q('self_attn.out_proj.weight'), H, H, q('self_attn.out_proj.bias'));
      const y = r.map((u, i) => u + o[i]);
      return normBefore ? y : an(y);
    });
    h = h.map((r) => {
      const x = normBefore ? fn(r) : r;
      const a = lin(x, q('fc1.weight'), F, H, q('fc1.bias')).map((u) => Math.max(0, u));
      const o = lin(a, q('fc2.weight'), H, F, q('fc2.bias'));
      const y = r.map((u, i) => u + o[i]);
      return normBefore ? y : fn(y);
    });
  }
  return h.map((r) => {
    let x = normBefore ? ln(r, w[p + 'final_layer_norm.weight'], w[p + 'final_layer_norm.bias']) : r;
    if (E !== H) x = lin(x, w[p + 'project_out.weight'], E, H);
    return lin(x, w[p + 'embed_tokens.weight'], V, E);
  });
}

describe('OPT variants against a reference forward', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  for (const [normBefore, E] of [[false, H], [true, 16], [false, 16]] as const) {
    it(`do_layer_norm_before=${normBefore}, word_embed_proj_dim=${E}`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'polar-opt-variant-'));
      dirs.push(dir);
      const w = makeModel(dir, normBefore, E);
      const ids = [1, 7, 3, 49, 22, 0, 15, 8, 30];
      const want = reference(w, normBefore, E, ids);
      const rt = openRuntimeModel(loadModel(dir));
      expect(rt.spec.normBefore).toBe(normBefore);
      const s = rt.session({ maxSeqs: 2, maxLen: MAXPOS });
      // one full prefill, and the same sequence as prefill + decode steps in another slot
      const full = await s.forward([{ slot: 0, tokens: ids }]);
      await s.forward([{ slot: 1, tokens: ids.slice(0, 4) }], { logits: 'none' });
      let err = 0;
      for (let t = 0; t < ids.length; t++) for (let v = 0; v < V; v++) err = Math.max(err, Math.abs(full.logits![t * V + v] - want[t][v]));
      expect(err).toBeLessThan(1e-4);
      for (let t = 4; t < ids.length; t++) {
        const o = await s.forward([{ slot: 1, tokens: [ids[t]] }]);
        for (let v = 0; v < V; v++) expect(Math.abs(o.logits![v] - want[t][v])).toBeLessThan(1e-4);
      }
      rt.dispose();
    });
  }
});
