// tokenizer.json through Hugging Face's maintained pure-JS tokenizers library.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { badInput, notFound } from '../errors.ts';

export interface TextTokenizer {
  /** ids of `text`; specials (BOS) added only when asked */
  encode(text: string, addSpecial?: boolean): number[];
  decode(ids: number[], skipSpecial?: boolean): string;
  vocabSize: number;
}

export function loadTokenizer(dir: string): TextTokenizer {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw notFound(file, 'tokenizer.json', 'the model folder must hold the Hugging Face fast-tokenizer file tokenizer.json');
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw badInput(file, '(file)', 'valid JSON', (e as Error).message, true);
  }
  if (typeof j.model !== 'object' || j.model === null) throw badInput(file, 'model', 'a tokenizer model object (BPE, WordPiece, ...)', j.model);
  const cfgFile = join(dir, 'tokenizer_config.json');
  let cfg: Record<string, unknown> = {};
  if (existsSync(cfgFile)) {
    try {
      cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    } catch (e) {
      throw badInput(cfgFile, '(file)', 'valid JSON', (e as Error).message, true);
    }
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(j, cfg);
  } catch (e) {
    throw badInput(file, 'model', 'a tokenizer supported by @huggingface/tokenizers', (e as Error).message, true);
  }
  const vocab = (j.model as { vocab?: Record<string, number> | unknown[] }).vocab;
  const added = Array.isArray(j.added_tokens) ? j.added_tokens.length : 0;
  const vocabSize = vocab ? (Array.isArray(vocab) ? vocab.length : Object.keys(vocab).length) : added;
  return {
    encode: (text, addSpecial = false) => tok.encode(text, { add_special_tokens: addSpecial }).ids,
    decode: (ids, skipSpecial = false) => tok.decode(ids, { skip_special_tokens: skipSpecial }),
    vocabSize,
  };
}
