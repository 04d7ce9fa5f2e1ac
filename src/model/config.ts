// Hugging Face config.json -> ModelSpec: the one description of a model's shape that every other part
// (runtime, collect, routers, artifact identity) uses. OPT and LLaMA families.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { badInput, notFound, PolarError } from '../errors.ts';

export type Family = 'opt' | 'llama';

export interface RopeSpec {
  theta: number;
  /** 'default' or 'llama3' (frequency-dependent scaling of LLaMA 3.1+) */
  type: 'default' | 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositions: number;
}

export interface ModelSpec {
  family: Family;
  architecture: string;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  maxPositions: number;
  /** 'relu' (OPT) or 'silu' (LLaMA's gated MLP) */
  activation: 'relu' | 'silu';
  gated: boolean;
  normEps: number;
  tiedEmbeddings: boolean;
  /** OPT: pre-LN (true) or post-LN (false, OPT-350m) */
  normBefore: boolean;
  /** OPT: embedding width when it differs from hidden (project_in / project_out) */
  wordEmbedProjDim: number;
  /** OPT's learned positions start at this offset (2); 0 for LLaMA */
  positionOffset: number;
  rope: RopeSpec | null;
  attentionBias: boolean;
  mlpBias: boolean;
  bosTokenId: number | null;
  eosTokenId: number | null;
  padTokenId: number | null;
  /** dtype named in the config (the weights' own dtypes come from the safetensors headers) */
  configDtype: string | null;
}

type Json = Record<string, unknown>;

class Fields {
  constructor(readonly file: string, readonly j: Json) {}
  has(k: string): boolean {
    return this.j[k] !== undefined && this.j[k] !== null;
  }
  int(k: string, opts: { min?: number; fallback?: number } = {}): number {
    const v = this.j[k];
    if (v === undefined || v === null) {
      if (opts.fallback !== undefined) return opts.fallback;
      throw badInput(this.file, k, 'an integer', v);
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (opts.min ?? 1)) {
      throw badInput(this.file, k, `an integer >= ${opts.min ?? 1}`, v);
    }
    return v;
  }
  num(k: string, fallback?: number): number {
    const v = this.j[k];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw badInput(this.file, k, 'a number', v);
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw badInput(this.file, k, 'a finite number', v);
    return v;
  }
  bool(k: string, fallback: boolean): boolean {
    const v = this.j[k];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw badInput(this.file, k, 'true or false', v);
    return v;
  }
  str(k: string, fallback?: string): string {
    const v = this.j[k];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw badInput(this.file, k, 'a string', v);
    }
    if (typeof v !== 'string') throw badInput(this.file, k, 'a string', v);
    return v;
  }
  optTokenId(k: string): number | null {
    const v = this.j[k];
    if (Array.isArray(v)) return typeof v[0] === 'number' ? v[0] : null;
    return typeof v === 'number' ? v : null;
  }
}

export function readModelConfig(dir: string): ModelSpec {
  const file = join(dir, 'config.json');
  if (!existsSync(file)) throw notFound(file, 'config.json', 'a Hugging Face model folder holds config.json, *.safetensors and tokenizer.json');
  let j: unknown;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw badInput(file, '(file)', 'valid JSON', (e as Error).message, true);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw badInput(file, '(file)', 'a JSON object', j);
  return parseModelConfig(file, j as Json);
}

export function parseModelConfig(file: string, j: Json): ModelSpec {
  const f = new Fields(file, j);
  const modelType = f.str('model_type');
  const arch = Array.isArray(j.architectures) && typeof j.architectures[0] === 'string' ? (j.architectures[0] as string) : modelType;
  if (modelType === 'opt') return parseOpt(f, arch);
  if (modelType === 'llama') return parseLlama(f, arch);
  throw new PolarError('unsupported', `${file}: model_type: expected one of "opt", "llama", received ${JSON.stringify(modelType)} (architecture ${arch})`, { file, field: 'model_type' });
}

function common(f: Fields) {
  return {
    bosTokenId: f.optTokenId('bos_token_id'),
    eosTokenId: f.optTokenId('eos_token_id'),
    padTokenId: f.optTokenId('pad_token_id'),
    configDtype: f.has('torch_dtype') ? f.str('torch_dtype') : f.has('dtype') ? f.str('dtype') : null,
  };
}

function parseOpt(f: Fields, arch: string): ModelSpec {
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  if (hidden % heads !== 0) throw badInput(f.file, 'num_attention_heads', `a divisor of hidden_size ${hidden}`, heads);
  const act = f.str('activation_function', 'relu');
  if (act !== 'relu') {
    throw new PolarError('unsupported', `${f.file}: activation_function: expected "relu" (Polar Sparsity's MLP routers need ReLU OPT models), received ${JSON.stringify(act)}`, { file: f.file, field: 'activation_function' });
  }
  if (f.bool('_remove_final_layer_norm', false)) {
    throw new PolarError('unsupported', `${f.file}: _remove_final_layer_norm: expected false, received true`, { file: f.file });
  }
  if (!f.bool('layer_norm_elementwise_affine', true)) {
    throw new PolarError('unsupported', `${f.file}: layer_norm_elementwise_affine: expected true, received false`, { file: f.file });
  }
  const bias = f.bool('enable_bias', true);
  return {
    family: 'opt',
    architecture: arch,
    layers: f.int('num_hidden_layers'),
    hidden,
    heads,
    kvHeads: heads,
    headDim: hidden / heads,
    ffn: f.int('ffn_dim'),
    vocab: f.int('vocab_size'),
    maxPositions: f.int('max_position_embeddings'),
    activation: 'relu',
    gated: false,
    normEps: 1e-5,
    tiedEmbeddings: f.bool('tie_word_embeddings', true),
    normBefore: f.bool('do_layer_norm_before', true),
    wordEmbedProjDim: f.int('word_embed_proj_dim', { fallback: hidden }),
    positionOffset: 2,
    rope: null,
    attentionBias: bias,
    mlpBias: bias,
    ...common(f),
  };
}

function parseLlama(f: Fields, arch: string): ModelSpec {
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  const kvHeads = f.int('num_key_value_heads', { fallback: heads });
  if (heads % kvHeads !== 0) throw badInput(f.file, 'num_key_value_heads', `a divisor of num_attention_heads ${heads}`, kvHeads);
  const headDim = f.int('head_dim', { fallback: Math.floor(hidden / heads) });
  const act = f.str('hidden_act', 'silu');
  if (act !== 'silu') {
    throw new PolarError('unsupported', `${f.file}: hidden_act: expected "silu", received ${JSON.stringify(act)}`, { file: f.file, field: 'hidden_act' });
  }
  return {
    family: 'llama',
    architecture: arch,
    layers: f.int('num_hidden_layers'),
    hidden,
    heads,
    kvHeads,
    headDim,
    ffn: f.int('intermediate_size'),
    vocab: f.int('vocab_size'),
    maxPositions: f.int('max_position_embeddings'),
    activation: 'silu',
    gated: true,
    normEps: f.num('rms_norm_eps', 1e-6),
    tiedEmbeddings: f.bool('tie_word_embeddings', false),
    normBefore: true,
    wordEmbedProjDim: hidden,
    positionOffset: 0,
    rope: parseRope(f),
    attentionBias: f.bool('attention_bias', false),
    mlpBias: f.bool('mlp_bias', false),
    ...common(f),
  };
}

function parseRope(f: Fields): RopeSpec {
  // transformers 5 may nest theta inside rope_parameters; 4.x keeps rope_theta at the top level.
  const params = (f.j.rope_parameters ?? f.j.rope_scaling) as Json | null | undefined;
  const theta = f.has('rope_theta') ? f.num('rope_theta') : params && typeof params.rope_theta === 'number' ? params.rope_theta : 10000;
  const base: RopeSpec = { theta, type: 'default', factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };
  const rs = f.j.rope_scaling as Json | null | undefined;
  if (rs === undefined || rs === null) return base;
  if (typeof rs !== 'object') throw badInput(f.file, 'rope_scaling', 'an object or null', rs);
  const type = (rs.rope_type ?? rs.type) as unknown;
  if (type === 'default' || type === undefined) return base;
  if (type !== 'llama3') {
    throw new PolarError('unsupported', `${f.file}: rope_scaling.rope_type: expected "llama3" or "default", received ${JSON.stringify(type)}`, { file: f.file, field: 'rope_scaling.rope_type' });
  }
  const sub = new Fields(f.file, rs);
  const need = (k: string) => {
    if (!sub.has(k)) throw badInput(f.file, `rope_scaling.${k}`, 'a number (required by rope_type "llama3")', undefined);
    return sub.num(k);
  };
  return {
    theta,
    type: 'llama3',
    factor: need('factor'),
    lowFreqFactor: need('low_freq_factor'),
    highFreqFactor: need('high_freq_factor'),
    originalMaxPositions: need('original_max_position_embeddings'),
  };
}
