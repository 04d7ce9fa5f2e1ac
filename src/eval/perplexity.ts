// Dense perplexity with the runtime: windows run as independent sequences, several per batched forward.
import type { LoadedModel } from '../model/index.ts';
import type { RuntimeModel } from '../runtime/types.ts';
import { accumulateNll, windows } from './protocol.ts';

export interface PerplexityResult {
  ppl: number;
  tokens: number;
  nll: number;
  windows: number;
  seconds: number;
}

/** Windows per forward call: bounded by the logits buffer (about 256 MB) and 16 sequences. */
function windowsPerCall(vocab: number, window: number): number {
  return Math.max(1, Math.min(16, Math.floor((256 << 20) / (4 * vocab * window))));
}

export async function perplexity(
  model: LoadedModel,
  rt: RuntimeModel,
  tokens: Int32Array,
  window: number,
  onProgress?: (done: number, total: number) => void,
): Promise<PerplexityResult> {
  const t0 = performance.now();
  const ws = windows(tokens, window);
  const per = windowsPerCall(model.spec.vocab, window);
  const session = rt.session({ maxSeqs: per, maxLen: window });
  const acc = { nll: 0, count: 0 };
  try {
    for (let i = 0; i < ws.length; i += per) {
      const group = ws.slice(i, i + per);
      session.reset();
      const out = await session.forward(group.map((w, slot) => ({ slot, tokens: w })), { logits: 'all' });
      let row = 0;
      for (const w of group) {
        accumulateNll(out.logits!, model.spec.vocab, row, w.subarray(1), acc);
        row += w.length;
      }
      onProgress?.(Math.min(ws.length, i + per), ws.length);
    }
  } finally {
    session.dispose();
  }
  return { ppl: Math.exp(acc.nll / acc.count), tokens: acc.count, nll: acc.nll / acc.count, windows: ws.length, seconds: (performance.now() - t0) / 1000 };
}
