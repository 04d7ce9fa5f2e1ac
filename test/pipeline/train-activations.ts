// Test helper: activations of a bundled model computed directly through the runtime (dense forward with
// captures), as an in-memory ActivationSet with the layout collect writes. Keeps the train tests
// independent of the collect stage's files.
import { readFileSync } from 'node:fs';
import type { ActivationBatch, ActivationSet, LayerActivations, ShardMeta } from '../../src/arrow/types.ts';
import { loadModel } from '../../src/model/index.ts';
import { openRuntimeModel } from '../../src/runtime/index.ts';

export interface RuntimeActivationOptions {
  modelDir: string;
  textFile: string;
  tokens: number;
  seqLen?: number;
  batchSeqs?: number;
}

export async function runtimeActivations(o: RuntimeActivationOptions): Promise<ActivationSet> {
  const model = loadModel(o.modelDir);
  const spec = model.spec;
  const ids = model.tokenizer().encode(readFileSync(o.textFile, 'utf8'));
  const seqLen = o.seqLen ?? 128;
  const nSeq = Math.min(Math.floor(o.tokens / seqLen), Math.floor(ids.length / seqLen));
  const rows = nSeq * seqLen;
  const L = spec.layers;
  const hidden = spec.hidden, ffn = spec.ffn, heads = spec.heads;
  const stride = Math.ceil(ffn / 8);
  const x = Array.from({ length: L }, () => new Float32Array(rows * hidden));
  const bits = Array.from({ length: L }, () => new Uint8Array(rows * stride));
  const hn = Array.from({ length: L }, () => new Float32Array(rows * heads));
  const rt = openRuntimeModel(model);
  const batch = o.batchSeqs ?? 8;
  const session = rt.session({ maxSeqs: batch, maxLen: seqLen });
  for (let s0 = 0; s0 < nSeq; s0 += batch) {
    const n = Math.min(batch, nSeq - s0);
    session.reset();
    const inputs = Array.from({ length: n }, (_, i) => ({ slot: i, tokens: ids.slice((s0 + i) * seqLen, (s0 + i + 1) * seqLen) }));
    const out = await session.forward(inputs, { logits: 'none', capture: { attnIn: true, mlpAct: true, headNorm: true } });
    for (const c of out.captures) {
      const r0 = s0 * seqLen;
      x[c.layer].set(c.attnIn!, r0 * hidden);
      hn[c.layer].set(c.headNorm!, r0 * heads);
      const act = c.mlpAct!;
      const b = bits[c.layer];
      for (let r = 0; r < n * seqLen; r++) {
        for (let j = 0; j < ffn; j++) if (act[r * ffn + j] > 0) b[(r0 + r) * stride + (j >> 3)] |= 1 << (j & 7);
      }
    }
  }
  session.dispose();
  rt.dispose();
  const id = model.identity();
  const layer = (l: number): LayerActivations => {
    const meta: ShardMeta = {
      schemaVersion: 1,
      configSha256: id.configSha256,
      weightsSha256: id.weightsSha256,
      family: spec.family,
      layer: l,
      hidden,
      ffn,
      heads,
      kvHeads: spec.kvHeads,
      mlpActivity: spec.family === 'opt' ? 'bits' : 'none',
      routerInputDtype: 'f32',
      corpusSha256: 'test',
      tokenStart: 0,
      tokenEnd: rows,
    };
    return {
      layer: l,
      meta,
      rows,
      async *batches(): AsyncIterable<ActivationBatch> {
        const block = 4096;
        for (let r0 = 0; r0 < rows; r0 += block) {
          const n = Math.min(block, rows - r0);
          const seqId = new Int32Array(n), position = new Int32Array(n);
          for (let i = 0; i < n; i++) {
            seqId[i] = Math.floor((r0 + i) / seqLen);
            position[i] = (r0 + i) % seqLen;
          }
          yield {
            rows: n,
            seqId,
            position,
            routerInput: x[l].subarray(r0 * hidden, (r0 + n) * hidden),
            mlpBits: spec.family === 'opt' ? bits[l].subarray(r0 * stride, (r0 + n) * stride) : null,
            mlpAct: null,
            headNorm: hn[l].subarray(r0 * heads, (r0 + n) * heads),
          };
        }
      },
    };
  };
  return { dir: `(runtime ${o.modelDir})`, layers: Array.from({ length: L }, (_, i) => i), layer };
}
