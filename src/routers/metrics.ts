// Evaluation of a router on held-out rows: confusion counts at probability 0.5 (logit 0), and recall of
// each row's top-k units for a grid of k (what calibration and the runtime use). Native counts when the
// addon is available, the same definitions in JS otherwise.
import type { NativeOps, RouterEvalCounts } from '../runtime/ops.ts';

export interface TopKPoint {
  k: number;
  /** mean over rows (with >= 1 positive) of |top-k ∩ positives| / |positives| */
  recall: number;
  /** sum of hits / sum of positives */
  microRecall: number;
}

export interface EvalResult {
  rows: number;
  precision: number;
  recall: number;
  f1: number;
  /** fraction of units predicted on (logit > 0) */
  predDensity: number;
  /** fraction of units truly on */
  trueDensity: number;
  topk: TopKPoint[];
}

export type Labels = { f32: Float32Array } | { bits: Uint8Array; stride: number };

/** The k grid of the MLP router: `points` evenly spaced values up to cols. */
export function kGrid(cols: number, points = 64): Int32Array {
  const step = Math.max(1, Math.ceil(cols / points));
  const ks: number[] = [];
  for (let k = step; k < cols; k += step) ks.push(k);
  ks.push(cols);
  return Int32Array.from(ks);
}

export function routerEvalJs(logits: Float32Array, rows: number, cols: number, labels: Labels, threshold: number, ks: Int32Array): RouterEvalCounts {
  const r: RouterEvalCounts = { tp: 0, fp: 0, fn: 0, positives: 0, rowsWithPositives: 0, hits: new Float64Array(ks.length), recallSum: new Float64Array(ks.length) };
  const lab = new Uint8Array(cols);
  const order = new Int32Array(cols);
  for (let i = 0; i < rows; i++) {
    const z = logits.subarray(i * cols, (i + 1) * cols);
    let npos = 0;
    for (let j = 0; j < cols; j++) {
      lab[j] = 'bits' in labels ? (labels.bits[i * labels.stride + (j >> 3)] >> (j & 7)) & 1 : labels.f32[i * cols + j] > 0.5 ? 1 : 0;
      const on = z[j] > threshold;
      npos += lab[j];
      if (on && lab[j]) r.tp++;
      else if (on) r.fp++;
      else if (lab[j]) r.fn++;
    }
    r.positives += npos;
    if (npos > 0) r.rowsWithPositives++;
    if (!ks.length) continue;
    for (let j = 0; j < cols; j++) order[j] = j;
    const key = (j: number) => (Number.isNaN(z[j]) ? -Infinity : z[j]);
    order.sort((a, b) => key(b) - key(a) || a - b);
    let hits = 0, t = 0;
    for (let q = 0; q < ks.length; q++) {
      for (; t < ks[q]; t++) hits += lab[order[t]];
      r.hits[q] += hits;
      if (npos > 0) r.recallSum[q] += hits / npos;
    }
  }
  return r;
}

/** Accumulates evaluation counts over blocks of rows. */
export class EvalAccumulator {
  private c: RouterEvalCounts;
  rows = 0;
  constructor(readonly cols: number, readonly ks: Int32Array, private readonly ops: NativeOps | null) {
    this.c = { tp: 0, fp: 0, fn: 0, positives: 0, rowsWithPositives: 0, hits: new Float64Array(ks.length), recallSum: new Float64Array(ks.length) };
  }

  add(logits: Float32Array, rows: number, labels: Labels): void {
    if (rows === 0) return;
    const r = this.ops ? this.ops.routerEval(logits, rows, this.cols, labels, 0, this.ks) : routerEvalJs(logits, rows, this.cols, labels, 0, this.ks);
    const c = this.c;
    c.tp += r.tp;
    c.fp += r.fp;
    c.fn += r.fn;
    c.positives += r.positives;
    c.rowsWithPositives += r.rowsWithPositives;
    for (let q = 0; q < this.ks.length; q++) {
      c.hits[q] += r.hits[q];
      c.recallSum[q] += r.recallSum[q];
    }
    this.rows += rows;
  }

  result(): EvalResult {
    const c = this.c;
    const total = this.rows * this.cols;
    const precision = c.tp + c.fp > 0 ? c.tp / (c.tp + c.fp) : 0;
    const recall = c.tp + c.fn > 0 ? c.tp / (c.tp + c.fn) : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    return {
      rows: this.rows,
      precision,
      recall,
      f1,
      predDensity: total ? (c.tp + c.fp) / total : 0,
      trueDensity: total ? c.positives / total : 0,
      topk: Array.from(this.ks, (k, q) => ({
        k,
        recall: c.rowsWithPositives ? c.recallSum[q] / c.rowsWithPositives : 1,
        microRecall: c.positives ? c.hits[q] / c.positives : 1,
      })),
    };
  }
}

/** Smallest k of the grid whose mean recall reaches `target`, or null. */
export function kForRecall(topk: TopKPoint[], target: number): number | null {
  for (const p of topk) if (p.recall >= target) return p.k;
  return null;
}

/**
 * GQA: recall of the top `k` KV groups when a group is scored by the sum of its query heads' logits (as the
 * runtime scores groups) and its
 * truth is the L2 norm of its heads' output norms. Returns [sum of per-row recall, rows].
 */
export function groupRecall(logits: Float32Array, headNorm: Float32Array, rows: number, heads: number, groupSize: number, k: number): [number, number] {
  const groups = heads / groupSize;
  const score = new Float64Array(groups), truth = new Float64Array(groups);
  const top = (v: Float64Array) => {
    const idx = Array.from({ length: groups }, (_, g) => g);
    idx.sort((a, b) => v[b] - v[a] || a - b);
    return new Set(idx.slice(0, k));
  };
  let sum = 0;
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      let s = 0, t = 0;
      for (let h = g * groupSize; h < (g + 1) * groupSize; h++) {
        s += logits[r * heads + h];
        t += headNorm[r * heads + h] ** 2;
      }
      score[g] = s;
      truth[g] = Math.sqrt(t);
    }
    const want = top(truth), got = top(score);
    let hit = 0;
    for (const g of got) if (want.has(g)) hit++;
    sum += hit / k;
  }
  return [sum, rows];
}
