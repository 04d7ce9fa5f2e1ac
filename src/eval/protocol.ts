// The perplexity protocol of the reference models (shared/models/README.md), one implementation for
// `polar eval` and `polar validate`: paragraphs at blank lines ("\n\n"), each tokenized without specials
// and followed by </s>, concatenated after one <s>; windows of `window` tokens with stride `window`.
import type { ModelSpec, TextTokenizer } from '../model/index.ts';
import { badInput } from '../errors.ts';

export function protocolTokens(text: string, tok: TextTokenizer, spec: ModelSpec, file = '<text>'): Int32Array {
  if (spec.bosTokenId === null || spec.eosTokenId === null) {
    throw badInput(file, 'bos_token_id/eos_token_id', 'both set in config.json (the protocol needs <s> and </s>)', { bos: spec.bosTokenId, eos: spec.eosTokenId });
  }
  const out: number[] = [spec.bosTokenId];
  for (const para of text.split('\n\n')) {
    if (para.trim().length === 0) continue;
    for (const id of tok.encode(para, false)) out.push(id);
    out.push(spec.eosTokenId);
  }
  if (out.length < 2) throw badInput(file, '(text)', 'at least one non-empty paragraph', '(empty text)', true);
  return Int32Array.from(out);
}

export function windows(tokens: Int32Array, window: number): Int32Array[] {
  const w: Int32Array[] = [];
  for (let s = 0; s < tokens.length; s += window) {
    const piece = tokens.subarray(s, Math.min(tokens.length, s + window));
    if (piece.length >= 2) w.push(piece);
  }
  return w;
}

/** Adds -log softmax(logits)[target] over rows to `acc`; logits row-major [rows, vocab]. */
export function accumulateNll(logits: Float32Array, vocab: number, rowStart: number, targets: ArrayLike<number>, acc: { nll: number; count: number }): void {
  for (let i = 0; i < targets.length; i++) {
    const base = (rowStart + i) * vocab;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (logits[base + v] > max) max = logits[base + v];
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(logits[base + v] - max);
    acc.nll += Math.log(sum) + max - logits[base + targets[i]];
    acc.count++;
  }
}
