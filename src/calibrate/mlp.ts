// MLP top-k calibration (ReLU models), one layer at a time.
//
// For a batch of b tokens decoded together, the MLP must compute the union of the neurons any of them
// activates. The runtime keeps the top k neurons of the router scores summed over the batch
// (src/runtime/sparse.ts). Here, on held-out tokens (never used to train the router) grouped into random
// batches of b tokens, we measure, for every k at once, the recall of the batch's true active-neuron union
// by that top-k:
//   recall_draw(k) = |top-k ∩ union| / |union|      (a draw whose union is empty counts as recall 1)
// and average over draws. The mean curve is non-decreasing in k, so the smallest k reaching the target is
// found by binary search over the multiples of the granule (k is then capped at ffn). Per batch size we keep
// the curve (for reports), the union density, and the recall reached; k is made non-decreasing in b
// (k(b) = max over b' <= b), which can only raise recall.
//
// Score: the runtime sums either the raw logits or their sigmoids ("logit" | "sigmoid"; it has no ReLU
// variant). At b = 1 both rank neurons identically; for b > 1 a sum of logits lets one very negative token
// cancel another token's positive evidence, while a sum of sigmoids counts the expected number of tokens
// that fire the neuron. "auto" (default) measures both and keeps, per layer, the one that needs fewer
// neurons summed over the calibrated batch sizes (ties: "logit").
//
// Batches are drawn without replacement within a draw, uniformly over the held-out tokens (tokens of one
// batch nearly always come from different sequences, as when decoding b sequences). Two disjoint splits of
// the held-out sequences are used: "calib" chooses k, "check" (never seen by the choice) reports the recall
// that the chosen k reaches on other tokens.
import { badArg } from '../errors.ts';
import { hash32, Rng } from '../routers/rng.ts';
import type { NativeOps } from '../runtime/ops.ts';

export type MlpScore = 'logit' | 'sigmoid';

/** Held-out rows of one layer: router inputs, bit-packed true MLP activity. */
export interface ActivityRows {
  rows: number;
  hidden: number;
  ffn: number;
  /** [rows, hidden] */
  x: Float32Array;
  /** [rows, stride] bit j of row r: (bits[r*stride + (j>>3)] >> (j&7)) & 1 */
  bits: Uint8Array;
  stride: number;
}

export interface MlpRouter {
  rank: number;
  /** [rank, hidden] */
  fc1: Float32Array;
  /** [ffn, rank] */
  fc2: Float32Array;
}

/** Router logits [rows, ffn] = (x fc1^T) fc2^T, with the native GEMM when given. */
export function routerLogits(rows: ActivityRows, r: MlpRouter, ops: NativeOps | null = null): Float32Array {
  const { hidden, ffn } = rows;
  const n = rows.rows;
  if (r.fc1.length !== r.rank * hidden) throw badArg('router fc1', `${r.rank} x ${hidden} values`, r.fc1.length);
  if (r.fc2.length !== ffn * r.rank) throw badArg('router fc2', `${ffn} x ${r.rank} values`, r.fc2.length);
  const h = new Float32Array(n * r.rank);
  const s = new Float32Array(n * ffn);
  if (ops) {
    ops.sgemm({ m: n, n: r.rank, k: hidden, a: rows.x, b: r.fc1, c: h, transB: true });
    ops.sgemm({ m: n, n: ffn, k: r.rank, a: h, b: r.fc2, c: s, transB: true });
    return s;
  }
  for (let i = 0; i < n; i++) {
    const xi = i * hidden;
    for (let j = 0; j < r.rank; j++) {
      let acc = 0;
      const wj = j * hidden;
      for (let t = 0; t < hidden; t++) acc += rows.x[xi + t] * r.fc1[wj + t];
      h[i * r.rank + j] = acc;
    }
    const hi = i * r.rank;
    for (let j = 0; j < ffn; j++) {
      let acc = 0;
      const wj = j * r.rank;
      for (let t = 0; t < r.rank; t++) acc += h[hi + t] * r.fc2[wj + t];
      s[i * ffn + j] = acc;
    }
  }
  return s;
}

export interface RecallCurve {
  batchSize: number;
  draws: number;
  /** mean recall of the union by the top-k, index k = 0..ffn (non-decreasing) */
  recall: Float64Array;
  /** mean |union| / ffn */
  unionDensity: number;
}

/**
 * Mean recall-vs-k curve of random batches of `b` rows (b <= rows). `logits` [rows, ffn] from routerLogits.
 */
export function recallCurve(set: ActivityRows, logits: Float32Array, b: number, draws: number, seed: number, score: MlpScore): RecallCurve {
  const { ffn, stride } = set;
  const n = set.rows;
  if (!Number.isInteger(b) || b < 1 || b > n) throw badArg('batch size', `an integer in 1..${n} (the held-out rows available)`, b);
  if (!Number.isInteger(draws) || draws < 1) throw badArg('draws', 'an integer >= 1', draws);
  const rng = Rng.for('mlp-calibration', seed);
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const sum = new Float64Array(ffn);
  const inUnion = new Uint8Array(ffn);
  const order = new Uint32Array(ffn);
  const acc = new Float64Array(ffn + 1);
  const sig = score === 'sigmoid';
  let densitySum = 0;
  for (let d = 0; d < draws; d++) {
    // partial Fisher-Yates: perm[0..b) is a uniform sample without replacement
    for (let i = 0; i < b; i++) {
      const j = i + rng.below(n - i);
      const t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    sum.fill(0);
    inUnion.fill(0);
    for (let i = 0; i < b; i++) {
      const r = perm[i];
      const base = r * ffn;
      if (sig) for (let j = 0; j < ffn; j++) sum[j] += 1 / (1 + Math.exp(-logits[base + j]));
      else for (let j = 0; j < ffn; j++) sum[j] += logits[base + j];
      const bb = r * stride;
      for (let j = 0; j < ffn; j++) if ((set.bits[bb + (j >> 3)] >> (j & 7)) & 1) inUnion[j] = 1;
    }
    let u = 0;
    for (let j = 0; j < ffn; j++) u += inUnion[j];
    densitySum += u / ffn;
    if (u === 0) {
      for (let k = 0; k <= ffn; k++) acc[k] += 1;
      continue;
    }
    for (let j = 0; j < ffn; j++) order[j] = j;
    order.sort((x, y) => sum[y] - sum[x] || x - y);
    let hits = 0;
    for (let k = 1; k <= ffn; k++) {
      hits += inUnion[order[k - 1]];
      acc[k] += hits / u;
    }
  }
  for (let k = 0; k <= ffn; k++) acc[k] /= draws;
  // guard against rounding: the mean of non-decreasing curves is non-decreasing
  for (let k = 1; k <= ffn; k++) if (acc[k] < acc[k - 1]) acc[k] = acc[k - 1];
  return { batchSize: b, draws, recall: acc, unionDensity: densitySum / draws };
}

/** Default granule: 128 (the kernels' tile), smaller for small MLPs so k keeps ~32 steps: a power of two in [8, 128]. */
export function defaultGranule(ffn: number): number {
  let g = 8;
  while (g * 2 <= 128 && g * 2 * 32 <= ffn) g *= 2;
  return g;
}

/**
 * Smallest k = min(ffn, j * granule) with curve[k] >= target, by binary search over j (the curve is
 * non-decreasing in k). Returns ffn when no smaller k reaches the target.
 */
export function smallestK(curve: Float64Array, target: number, granule: number, ffn: number): number {
  const steps = Math.ceil(ffn / granule);
  const kOf = (j: number) => Math.min(ffn, j * granule);
  if (curve[kOf(steps)] < target) return ffn;
  let lo = 0, hi = steps; // curve[kOf(hi)] >= target; lo: not known to reach (k = 0 never counts)
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (curve[kOf(mid)] >= target) hi = mid;
    else lo = mid;
  }
  return kOf(hi);
}

export interface MlpLayerCurves {
  layer: number;
  score: MlpScore;
  batchSizes: number[];
  /** curves on the calibration split (choose k) and on the check split (report), by batch size */
  calib: RecallCurve[];
  check: RecallCurve[] | null;
  /** sum over batch sizes of k at the primary target, per score measured ("auto" compares them) */
  scoreComparison: Partial<Record<MlpScore, number>>;
}

export interface MlpLayerTable {
  layer: number;
  score: MlpScore;
  target: number;
  granule: number;
  batchSizes: number[];
  k: number[];
  recall: number[];
  recallCheck: number[];
  unionDensity: number[];
}

export interface MlpCalibrationOptions {
  batchSizes: number[];
  target: number;
  granule: number;
  draws: number;
  seed: number;
  score: MlpScore | 'auto';
}

export const MLP_DEFAULTS: MlpCalibrationOptions = {
  batchSizes: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  target: 0.99,
  granule: 0, // 0: defaultGranule(ffn)
  draws: 128,
  seed: 0,
  score: 'auto',
};

/** Checks options; returns them with the granule resolved for this ffn. */
export function resolveMlpOptions(o: Partial<MlpCalibrationOptions>, ffn: number): MlpCalibrationOptions {
  const r: MlpCalibrationOptions = { ...MLP_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
  if (!Array.isArray(r.batchSizes) || !r.batchSizes.length || !r.batchSizes.every((b, i) => Number.isInteger(b) && b >= 1 && (i === 0 || b > r.batchSizes[i - 1]))) {
    throw badArg('batchSizes', 'increasing integers >= 1', r.batchSizes);
  }
  if (!(r.target > 0 && r.target <= 1)) throw badArg('target', 'a recall in (0, 1]', r.target);
  if (!Number.isInteger(r.granule) || r.granule < 0) throw badArg('granule', 'an integer >= 1 (0: automatic)', r.granule);
  if (r.granule === 0) r.granule = defaultGranule(ffn);
  if (r.granule > ffn) throw badArg('granule', `at most ffn (${ffn})`, r.granule);
  if (!Number.isInteger(r.draws) || r.draws < 1) throw badArg('draws', 'an integer >= 1', r.draws);
  if (!['logit', 'sigmoid', 'auto'].includes(r.score)) throw badArg('score', 'one of logit, sigmoid, auto', r.score);
  return r;
}

function curvesFor(set: ActivityRows, logits: Float32Array, o: MlpCalibrationOptions, score: MlpScore, seed: number): RecallCurve[] {
  return o.batchSizes.map((b) => recallCurve(set, logits, b, o.draws, hash32('calib', seed, b), score));
}

/** k per batch size at `target` from calibration curves, made non-decreasing in batch size. */
export function kTable(curves: RecallCurve[], target: number, granule: number, ffn: number): number[] {
  const k: number[] = [];
  for (const c of curves) k.push(Math.max(k.length ? k[k.length - 1] : 0, smallestK(c.recall, target, granule, ffn)));
  return k;
}

/**
 * Measures the recall curves of one layer on the calibration split (and the check split when given), for
 * the score(s) asked for, and keeps the better score under "auto".
 */
export function measureLayer(
  layer: number,
  calib: { set: ActivityRows; logits: Float32Array },
  check: { set: ActivityRows; logits: Float32Array } | null,
  o: MlpCalibrationOptions,
): MlpLayerCurves {
  const ffn = calib.set.ffn;
  const maxB = o.batchSizes[o.batchSizes.length - 1];
  if (calib.set.rows < maxB) throw badArg(`layer ${layer} held-out rows`, `at least the largest batch size (${maxB}); collect more tokens or lower --batch-sizes`, calib.set.rows);
  const scores: MlpScore[] = o.score === 'auto' ? ['logit', 'sigmoid'] : [o.score];
  const byScore = new Map<MlpScore, RecallCurve[]>();
  const comparison: Partial<Record<MlpScore, number>> = {};
  for (const s of scores) {
    const c = curvesFor(calib.set, calib.logits, o, s, hash32(o.seed, layer));
    byScore.set(s, c);
    comparison[s] = kTable(c, o.target, o.granule, ffn).reduce((a, v) => a + v, 0);
  }
  let best: MlpScore = scores[0];
  for (const s of scores) if (comparison[s]! < comparison[best]!) best = s;
  let checkCurves: RecallCurve[] | null = null;
  if (check && check.set.rows >= 1) {
    const usable = o.batchSizes.filter((b) => b <= check.set.rows);
    checkCurves = usable.map((b) => recallCurve(check.set, check.logits, b, o.draws, hash32('check', o.seed, layer, b), best));
  }
  return { layer, score: best, batchSizes: o.batchSizes.slice(), calib: byScore.get(best)!, check: checkCurves, scoreComparison: comparison };
}

/** The table of one layer at a recall target. */
export function layerTable(c: MlpLayerCurves, target: number, granule: number, ffn: number): MlpLayerTable {
  const k = kTable(c.calib, target, granule, ffn);
  return {
    layer: c.layer,
    score: c.score,
    target,
    granule,
    batchSizes: c.batchSizes.slice(),
    k,
    recall: k.map((v, i) => c.calib[i].recall[v]),
    recallCheck: k.map((v, i) => {
      const cc = c.check?.find((x) => x.batchSize === c.batchSizes[i]);
      return cc ? cc.recall[v] : NaN;
    }),
    unionDensity: c.calib.map((x) => x.unionDensity),
  };
}

/** A curve sampled at the multiples of `step` (and ffn), for calibration.json. */
export function sampleCurve(curve: Float64Array, step: number, ffn: number): { k: number[]; recall: number[] } {
  const k: number[] = [];
  for (let v = step; v < ffn; v += step) k.push(v);
  k.push(ffn);
  return { k, recall: k.map((v) => Math.round(curve[v] * 1e6) / 1e6) };
}
