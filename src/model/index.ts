// A Hugging Face model folder, loaded: spec (from config.json), checked weight references, tokenizer.
import { resolve } from 'node:path';
import { readModelConfig, type ModelSpec } from './config.ts';
import { resolveWeights, type WeightRef } from './weights.ts';
import { loadTokenizer, type TextTokenizer } from './tokenizer.ts';
import { modelIdentity, type ModelIdentity } from './identity.ts';

export type { ModelSpec, Family, RopeSpec } from './config.ts';
export type { WeightRef, WeightDtype } from './weights.ts';
export type { TextTokenizer } from './tokenizer.ts';
export type { ModelIdentity } from './identity.ts';

export interface LoadedModel {
  dir: string;
  spec: ModelSpec;
  weights: WeightRef[];
  /** dtype of most weight bytes (what `inspect-model` reports) */
  dtype: string;
  parameters: number;
  tokenizer(): TextTokenizer;
  identity(): ModelIdentity;
}

export function loadModel(dirIn: string): LoadedModel {
  const dir = resolve(dirIn);
  const spec = readModelConfig(dir);
  const weights = resolveWeights(dir, spec);
  let tok: TextTokenizer | null = null;
  let id: ModelIdentity | null = null;
  const bytesBy: Record<string, number> = {};
  let parameters = 0;
  const seen = new Set<string>();
  for (const w of weights) {
    const key = `${w.file}@${w.offset}`;
    if (seen.has(key)) continue; // tied lm_head
    seen.add(key);
    bytesBy[w.dtype] = (bytesBy[w.dtype] ?? 0) + w.nbytes;
    parameters += w.shape.reduce((a, d) => a * d, 1);
  }
  const dtype = Object.entries(bytesBy).sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'F32';
  return {
    dir,
    spec,
    weights,
    dtype,
    parameters,
    tokenizer: () => (tok ??= loadTokenizer(dir)),
    identity: () => (id ??= modelIdentity(dir)),
  };
}
