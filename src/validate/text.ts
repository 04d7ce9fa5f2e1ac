// The validation text: the default corpus's eval split (default:eval) or a user's file, turned into the
// token stream of the perplexity protocol (src/eval/protocol.ts) and capped.
import { PolarError } from '../errors.ts';
import { openCorpus } from '../corpus/index.ts';
import { protocolTokens } from '../eval/protocol.ts';
import type { LoadedModel } from '../model/index.ts';

/** Default cap on validation tokens: about 1/4 of small-opt's eval split, ~1 min for batch sizes 1 and 16 on 2 cores. */
export const DEFAULT_MAX_TOKENS = 16384;

export interface ValidationText {
  /** "default:eval" or the file's absolute path */
  name: string;
  sha256: string;
  /** the protocol's token stream, capped */
  tokens: Int32Array;
  /** tokens before the cap */
  totalTokens: number;
}

/**
 * Documents are joined with a blank line, so each document's paragraphs stay paragraphs (the protocol
 * splits at blank lines): a .txt file gives exactly the tokens of `polar eval --text` on it.
 */
export async function validationText(source: string, model: LoadedModel, maxTokens: number | null, textField = 'text'): Promise<ValidationText> {
  const corpus = openCorpus(source, { textField });
  const docs: string[] = [];
  for await (const item of corpus.items()) {
    if ('ids' in item) {
      throw new PolarError('unsupported', `${corpus.name}: validation needs text (the perplexity protocol tokenizes paragraphs), received pre-tokenized input_ids`, { file: corpus.name });
    }
    docs.push(item.text);
  }
  const all = protocolTokens(docs.join('\n\n'), model.tokenizer(), model.spec, corpus.name);
  const tokens = maxTokens !== null && all.length > maxTokens ? all.subarray(0, maxTokens) : all;
  return { name: corpus.name, sha256: corpus.sha256, tokens, totalTokens: all.length };
}
