// The cost model behind "work skipped": bytes a decode step reads, at a batch size and a context length.
// Per layer: the KV cache of the kept units (K and V, headDim each, per position and sequence) and the MLP
// weights of the kept neurons (fc1 and fc2 rows; gate, up and down for gated MLPs); fp16. Projections and
// embeddings are the same dense or sparse and left out. The same model as the calibrate stage's head
// search (src/stages/calibrate), so its candidates and the validated configurations share one axis.
import type { ReportModel } from './types.ts';

export function decodeStepBytes(m: ReportModel, batch: number, context: number, unitsKept: number[], mlpKept: number[]): number {
  let bytes = 0;
  for (let l = 0; l < m.layers; l++) {
    bytes += batch * context * 2 * m.headDim * (unitsKept[l] ?? m.kvHeads);
    bytes += (m.gated ? 3 : 2) * m.hidden * (mlpKept[l] ?? m.ffn);
  }
  return 2 * bytes;
}

/** 1 - sparse bytes / dense bytes. */
export function workSkipped(m: ReportModel, batch: number, context: number, unitsKept: number[], mlpKept: number[]): number {
  const dense = decodeStepBytes(m, batch, context, [], []);
  return 1 - decodeStepBytes(m, batch, context, unitsKept, mlpKept) / dense;
}
