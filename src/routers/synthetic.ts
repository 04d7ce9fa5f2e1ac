// Synthetic activations with the shape of a real layer, for benchmarks and tests that must not depend on
// the collect stage: router inputs x ~ N(0, 1), MLP activity from a random linear teacher (x A + c > 0,
// so a router of rank >= hidden can learn it exactly), head norms |x B_h| + noise. Deterministic for a seed,
// regenerated on every pass (nothing held in memory but one block).
import type { ActivationBatch, ActivationSet, LayerActivations, ShardMeta } from '../arrow/types.ts';
import { Rng } from './rng.ts';

export interface SyntheticSpec {
  layers: number[];
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads?: number;
  rows: number;
  /** tokens per sequence (the validation split is by sequence) */
  seqLen?: number;
  /** fraction of neurons active on average (sets the teacher's bias) */
  density?: number;
  /** rows per streamed block */
  block?: number;
  seed?: number;
  mlp?: boolean;
}

function gaussian(rng: Rng): number {
  const u = Math.max(rng.float(), 1e-12), v = rng.float();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Standard normal quantile (Acklam's approximation), for the teacher's bias at a target density. */
function probit(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const q = p < 0.5 ? p : 1 - p;
  let x: number;
  if (q < 0.02425) {
    const t = Math.sqrt(-2 * Math.log(q));
    x = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1);
  } else {
    const t = q - 0.5, r = t * t;
    x = ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * t) / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    return p < 0.5 ? x : -x;
  }
  return p < 0.5 ? -x : x;
}

export function syntheticActivations(spec: SyntheticSpec): ActivationSet {
  const { hidden, ffn, heads } = spec;
  const kvHeads = spec.kvHeads ?? heads;
  const seqLen = spec.seqLen ?? 64;
  const block = spec.block ?? 512;
  const seed = spec.seed ?? 1;
  const density = spec.density ?? 0.1;
  const mlp = spec.mlp ?? true;
  const layer = (l: number): LayerActivations => {
    // teacher weights (scaled so that x A has unit variance)
    const tr = Rng.for('synthetic-teacher', seed, l);
    const A = new Float32Array(hidden * ffn);
    for (let i = 0; i < A.length; i++) A[i] = gaussian(tr) / Math.sqrt(hidden);
    // x A ~ N(0, ~1), so x A + c > 0 with probability `density` for c = -probit(1 - density)
    const c = new Float32Array(ffn).fill(-probit(1 - density));
    const B = new Float32Array(hidden * heads);
    for (let i = 0; i < B.length; i++) B[i] = gaussian(tr) / Math.sqrt(hidden);
    const meta: ShardMeta = {
      schemaVersion: 1,
      configSha256: 'synthetic',
      weightsSha256: `synthetic-${seed}`,
      family: mlp ? 'opt' : 'llama',
      layer: l,
      hidden,
      ffn,
      heads,
      kvHeads,
      mlpActivity: mlp ? 'bits' : 'none',
      routerInputDtype: 'f32',
      corpusSha256: 'synthetic',
      tokenStart: 0,
      tokenEnd: spec.rows,
    };
    return {
      layer: l,
      meta,
      rows: spec.rows,
      async *batches(): AsyncIterable<ActivationBatch> {
        const rng = Rng.for('synthetic-rows', seed, l);
        const stride = Math.ceil(ffn / 8);
        for (let r0 = 0; r0 < spec.rows; r0 += block) {
          const rows = Math.min(block, spec.rows - r0);
          const x = new Float32Array(rows * hidden);
          for (let i = 0; i < x.length; i++) x[i] = gaussian(rng);
          const bits = mlp ? new Uint8Array(rows * stride) : null;
          const hn = new Float32Array(rows * heads);
          const seqId = new Int32Array(rows), position = new Int32Array(rows);
          const act = new Float32Array(ffn);
          for (let r = 0; r < rows; r++) {
            seqId[r] = Math.floor((r0 + r) / seqLen);
            position[r] = (r0 + r) % seqLen;
            const xr = x.subarray(r * hidden, (r + 1) * hidden);
            if (bits) {
              act.set(c);
              for (let i = 0; i < hidden; i++) {
                const xi = xr[i];
                const row = A.subarray(i * ffn, (i + 1) * ffn);
                for (let j = 0; j < ffn; j++) act[j] += xi * row[j];
              }
              for (let j = 0; j < ffn; j++) if (act[j] > 0) bits[r * stride + (j >> 3)] |= 1 << (j & 7);
            }
            for (let h = 0; h < heads; h++) {
              let s = 0;
              for (let i = 0; i < hidden; i++) s += xr[i] * B[i * heads + h];
              hn[r * heads + h] = Math.exp(0.5 * s + 0.05 * gaussian(rng));
            }
          }
          yield { rows, seqId, position, routerInput: x, mlpBits: bits, mlpAct: null, headNorm: hn };
        }
      },
    };
  };
  const cache = new Map<number, LayerActivations>();
  return {
    dir: '(synthetic)',
    layers: spec.layers.slice(),
    layer: (l: number) => {
      if (!spec.layers.includes(l)) throw new Error(`synthetic activations: no layer ${l}`);
      let v = cache.get(l);
      if (!v) cache.set(l, (v = layer(l)));
      return v;
    },
  };
}
