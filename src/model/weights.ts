// Finds a model's safetensors (single file, sharded with model.safetensors.index.json, or any *.safetensors),
// checks every tensor the architecture needs (name, dtype, shape) and maps Hugging Face names to the
// runtime's canonical names. No tensor data is read here: the native runtime maps the files.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { badInput, notFound } from '../errors.ts';
import { readSafetensorsHeader, type StDtype, type TensorInfo } from '../formats/safetensors.ts';
import type { ModelSpec } from './config.ts';

export type WeightDtype = 'F32' | 'F16' | 'BF16';

export interface WeightRef {
  /** runtime name, e.g. "layers.3.up.weight" */
  name: string;
  hfName: string;
  file: string;
  offset: number;
  nbytes: number;
  dtype: WeightDtype;
  shape: number[];
}

export function listSafetensorsFiles(dir: string): string[] {
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    let j: { weight_map?: Record<string, string> };
    try {
      j = JSON.parse(readFileSync(index, 'utf8'));
    } catch (e) {
      throw badInput(index, '(file)', 'valid JSON', (e as Error).message, true);
    }
    if (!j.weight_map || typeof j.weight_map !== 'object') throw badInput(index, 'weight_map', 'an object mapping tensor names to shard files', j.weight_map);
    const shards = [...new Set(Object.values(j.weight_map))].sort();
    for (const s of shards) {
      if (typeof s !== 'string' || s.includes('/') || s.includes('..')) throw badInput(index, 'weight_map', 'shard file names in the model folder', s);
      if (!existsSync(join(dir, s))) throw notFound(join(dir, s), 'shard named in model.safetensors.index.json');
    }
    return shards.map((s) => join(dir, s));
  }
  if (!existsSync(dir)) throw notFound(dir, 'model folder');
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (!files.length) throw notFound(join(dir, 'model.safetensors'), 'weights', 'expected model.safetensors or model.safetensors.index.json with shards; .bin (pickle) checkpoints are not supported: convert them with transformers save_pretrained(safe_serialization=True)');
  return files.map((f) => join(dir, f));
}

export function readAllTensorInfos(dir: string): Map<string, TensorInfo> {
  const all = new Map<string, TensorInfo>();
  for (const f of listSafetensorsFiles(dir)) {
    for (const [name, info] of readSafetensorsHeader(f).tensors) {
      if (all.has(name)) throw badInput(f, `tensor "${name}"`, 'each tensor in one shard only', `also in ${all.get(name)!.file}`, true);
      all.set(name, info);
    }
  }
  return all;
}

interface Want {
  name: string;
  hf: string[];
  shape: number[];
  optional?: boolean;
}

function optWants(s: ModelSpec): Want[] {
  const w: Want[] = [];
  const p = (n: string) => [`model.decoder.${n}`, `decoder.${n}`];
  const H = s.hidden, E = s.wordEmbedProjDim, F = s.ffn;
  w.push({ name: 'tok_emb.weight', hf: p('embed_tokens.weight'), shape: [s.vocab, E] });
  w.push({ name: 'pos_emb.weight', hf: p('embed_positions.weight'), shape: [s.maxPositions + s.positionOffset, H] });
  if (E !== H) {
    w.push({ name: 'proj_in.weight', hf: p('project_in.weight'), shape: [H, E] });
    w.push({ name: 'proj_out.weight', hf: p('project_out.weight'), shape: [E, H] });
  }
  if (s.normBefore) {
    w.push({ name: 'final_norm.weight', hf: p('final_layer_norm.weight'), shape: [H] });
    w.push({ name: 'final_norm.bias', hf: p('final_layer_norm.bias'), shape: [H] });
  }
  for (let l = 0; l < s.layers; l++) {
    const lp = (n: string) => p(`layers.${l}.${n}`);
    const L = `layers.${l}`;
    for (const [ours, theirs] of [['q', 'q_proj'], ['k', 'k_proj'], ['v', 'v_proj'], ['o', 'out_proj']] as const) {
      w.push({ name: `${L}.${ours}.weight`, hf: lp(`self_attn.${theirs}.weight`), shape: [H, H] });
      if (s.attentionBias) w.push({ name: `${L}.${ours}.bias`, hf: lp(`self_attn.${theirs}.bias`), shape: [H] });
    }
    w.push({ name: `${L}.attn_norm.weight`, hf: lp('self_attn_layer_norm.weight'), shape: [H] });
    w.push({ name: `${L}.attn_norm.bias`, hf: lp('self_attn_layer_norm.bias'), shape: [H] });
    w.push({ name: `${L}.mlp_norm.weight`, hf: lp('final_layer_norm.weight'), shape: [H] });
    w.push({ name: `${L}.mlp_norm.bias`, hf: lp('final_layer_norm.bias'), shape: [H] });
    w.push({ name: `${L}.up.weight`, hf: lp('fc1.weight'), shape: [F, H] });
    w.push({ name: `${L}.down.weight`, hf: lp('fc2.weight'), shape: [H, F] });
    if (s.mlpBias) {
      w.push({ name: `${L}.up.bias`, hf: lp('fc1.bias'), shape: [F] });
      w.push({ name: `${L}.down.bias`, hf: lp('fc2.bias'), shape: [H] });
    }
  }
  w.push({ name: 'lm_head.weight', hf: ['lm_head.weight'], shape: [s.vocab, E], optional: s.tiedEmbeddings });
  return w;
}

function llamaWants(s: ModelSpec): Want[] {
  const w: Want[] = [];
  const p = (n: string) => [`model.${n}`, n];
  const H = s.hidden, F = s.ffn, Q = s.heads * s.headDim, KV = s.kvHeads * s.headDim;
  w.push({ name: 'tok_emb.weight', hf: p('embed_tokens.weight'), shape: [s.vocab, H] });
  w.push({ name: 'final_norm.weight', hf: p('norm.weight'), shape: [H] });
  for (let l = 0; l < s.layers; l++) {
    const lp = (n: string) => p(`layers.${l}.${n}`);
    const L = `layers.${l}`;
    const proj: [string, string, number[]][] = [
      ['q', 'self_attn.q_proj', [Q, H]],
      ['k', 'self_attn.k_proj', [KV, H]],
      ['v', 'self_attn.v_proj', [KV, H]],
      ['o', 'self_attn.o_proj', [H, Q]],
    ];
    for (const [ours, theirs, shape] of proj) {
      w.push({ name: `${L}.${ours}.weight`, hf: lp(`${theirs}.weight`), shape });
      if (s.attentionBias) w.push({ name: `${L}.${ours}.bias`, hf: lp(`${theirs}.bias`), shape: [shape[0]] });
    }
    w.push({ name: `${L}.attn_norm.weight`, hf: lp('input_layernorm.weight'), shape: [H] });
    w.push({ name: `${L}.mlp_norm.weight`, hf: lp('post_attention_layernorm.weight'), shape: [H] });
    w.push({ name: `${L}.gate.weight`, hf: lp('mlp.gate_proj.weight'), shape: [F, H] });
    w.push({ name: `${L}.up.weight`, hf: lp('mlp.up_proj.weight'), shape: [F, H] });
    w.push({ name: `${L}.down.weight`, hf: lp('mlp.down_proj.weight'), shape: [H, F] });
    if (s.mlpBias) {
      w.push({ name: `${L}.gate.bias`, hf: lp('mlp.gate_proj.bias'), shape: [F] });
      w.push({ name: `${L}.up.bias`, hf: lp('mlp.up_proj.bias'), shape: [F] });
      w.push({ name: `${L}.down.bias`, hf: lp('mlp.down_proj.bias'), shape: [H] });
    }
  }
  w.push({ name: 'lm_head.weight', hf: ['lm_head.weight'], shape: [s.vocab, H], optional: s.tiedEmbeddings });
  return w;
}

const FLOAT_DTYPES: StDtype[] = ['F32', 'F16', 'BF16'];

/** Resolves and checks every weight of the model. Tied lm_head maps to the token embedding. */
export function resolveWeights(dir: string, spec: ModelSpec): WeightRef[] {
  const infos = readAllTensorInfos(dir);
  const wants = spec.family === 'opt' ? optWants(spec) : llamaWants(spec);
  const out: WeightRef[] = [];
  const anyFile = infos.values().next().value?.file ?? join(dir, 'model.safetensors');
  for (const want of wants) {
    const hf = want.hf.find((n) => infos.has(n));
    if (!hf) {
      if (want.optional) continue;
      throw badInput(anyFile, `tensor "${want.hf[0]}"`, `a tensor of shape [${want.shape.join(', ')}] (needed by ${spec.architecture})`, 'no such tensor (wrong architecture in config.json, or an incomplete checkpoint)', true);
    }
    const t = infos.get(hf)!;
    if (!FLOAT_DTYPES.includes(t.dtype)) throw badInput(t.file, `tensor "${hf}".dtype`, 'F32, F16 or BF16', t.dtype);
    if (t.shape.length !== want.shape.length || t.shape.some((d, i) => d !== want.shape[i])) {
      throw badInput(t.file, `tensor "${hf}".shape`, `[${want.shape.join(', ')}] (from config.json)`, `[${t.shape.join(', ')}]`, true);
    }
    out.push({ name: want.name, hfName: hf, file: t.file, offset: t.offset, nbytes: t.nbytes, dtype: t.dtype as WeightDtype, shape: t.shape });
  }
  if (!out.some((w) => w.name === 'lm_head.weight')) {
    const emb = out.find((w) => w.name === 'tok_emb.weight')!;
    out.push({ ...emb, name: 'lm_head.weight' });
  }
  return out;
}
