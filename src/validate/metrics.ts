// Validation metrics of a sparse decoding run against the dense one, on aligned rows of logits and on
// what each sparse step kept. Pure functions over typed arrays (unit-tested on synthetic inputs); the
// decoding loop that feeds them is src/validate/decode.ts.
//
// Definitions (per batch size b):
// - dense_ppl / sparse_ppl: exp(mean next-token NLL) over every predicted token (protocol of
//   src/eval/protocol.ts; the NLL is accumulateNll's, fused with the other metrics for speed).
// - top1_agreement: share of predicted positions where argmax(dense) == argmax(sparse).
// - kl: mean over predicted positions of KL(dense || sparse) = sum_v p_d(v) (log p_d(v) - log p_s(v)).
// - per layer, mlp_density: mean over decode steps of (neurons computed / ffn); a step is one forward
//   call of up to b tokens, whose MLP computes one union of neurons for all of them.
// - mlp_recall: mean over steps of |kept ∩ true union| / |true union|, the true union being the neurons
//   active (> 0) in the dense run for any token of the step (steps with an empty union are skipped).
// - heads_kept: mean over tokens of the attention heads computed (query heads; a kept KV group counts
//   all its heads).
// - head_recall: mean over tokens of |kept ∩ top-m| / m, with m the token's kept selection units (KV
//   groups; heads for MHA) and top-m the units with the largest dense output norm (a group's norm is the
//   L2 norm of its heads' norms). 1 when every unit is kept.

export interface LayerMetrics {
  layer: number;
  mlp_density: number;
  heads_kept: number;
  mlp_recall: number;
  head_recall: number;
}

export interface BatchResult {
  batch_size: number;
  dense_ppl: number;
  sparse_ppl: number;
  /** sparse_ppl / dense_ppl - 1 */
  ppl_increase: number;
  top1_agreement: number;
  kl: number;
  layers: LayerMetrics[];
}

export interface ValidateJson {
  results: BatchResult[];
}

/** Row-wise log-sum-exp and argmax of logits[row*vocab ...]. */
export function rowStats(logits: Float32Array, vocab: number, row: number): { lse: number; argmax: number } {
  const base = row * vocab;
  let max = -Infinity;
  let arg = 0;
  for (let v = 0; v < vocab; v++) {
    const x = logits[base + v];
    if (x > max) {
      max = x;
      arg = v;
    }
  }
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += Math.exp(logits[base + v] - max);
  return { lse: max + Math.log(sum), argmax: arg };
}

/** KL(p || q) of the softmaxes of two logit rows (natural log). */
export function klRow(p: Float32Array, q: Float32Array, vocab: number, rowP: number, rowQ: number): number {
  const sp = rowStats(p, vocab, rowP);
  const sq = rowStats(q, vocab, rowQ);
  const bp = rowP * vocab;
  const bq = rowQ * vocab;
  let kl = 0;
  for (let v = 0; v < vocab; v++) {
    const lp = p[bp + v] - sp.lse;
    const lq = q[bq + v] - sq.lse;
    kl += Math.exp(lp) * (lp - lq);
  }
  return Math.max(0, kl);
}

/** Accumulates the logit-level metrics over aligned dense/sparse rows. */
export class LogitMetrics {
  private dense = { nll: 0, count: 0 };
  private sparse = { nll: 0, count: 0 };
  private agree = 0;
  private klSum = 0;

  constructor(readonly vocab: number) {}

  /**
   * One predicted position: row `rowD` of `dense`, row `rowS` of `sparse`, next token `target`. One fused
   * pass per row pair (this runs for every token of every batch size): NLL = lse - logit[target] as in
   * accumulateNll of src/eval/protocol.ts (a test checks they agree), KL = sum_v p_d (d_v - s_v) - lse_d + lse_s.
   */
  add(dense: Float32Array, rowD: number, sparse: Float32Array, rowS: number, target: number): void {
    const V = this.vocab;
    const bd = rowD * V;
    const bs = rowS * V;
    let maxD = -Infinity;
    let maxS = -Infinity;
    let argD = 0;
    let argS = 0;
    for (let v = 0; v < V; v++) {
      const d = dense[bd + v];
      const x = sparse[bs + v];
      if (d > maxD) {
        maxD = d;
        argD = v;
      }
      if (x > maxS) {
        maxS = x;
        argS = v;
      }
    }
    let zD = 0;
    let zS = 0;
    let a = 0;
    for (let v = 0; v < V; v++) {
      const d = dense[bd + v];
      const x = sparse[bs + v];
      const e = Math.exp(d - maxD);
      zD += e;
      zS += Math.exp(x - maxS);
      a += e * (d - x);
    }
    const lseD = maxD + Math.log(zD);
    const lseS = maxS + Math.log(zS);
    this.dense.nll += lseD - dense[bd + target];
    this.dense.count++;
    this.sparse.nll += lseS - sparse[bs + target];
    this.sparse.count++;
    if (argD === argS) this.agree++;
    this.klSum += Math.max(0, a / zD - lseD + lseS);
  }

  get count(): number {
    return this.dense.count;
  }

  result(): { dense_ppl: number; sparse_ppl: number; ppl_increase: number; top1_agreement: number; kl: number; tokens: number } {
    const n = this.dense.count;
    const dense_ppl = Math.exp(this.dense.nll / n);
    const sparse_ppl = Math.exp(this.sparse.nll / n);
    return { dense_ppl, sparse_ppl, ppl_increase: sparse_ppl / dense_ppl - 1, top1_agreement: this.agree / n, kl: this.klSum / n, tokens: n };
  }
}

/** Accumulates one layer's realised sparsity and router recall over decode steps. */
export class LayerSparsityMetrics {
  private steps = 0;
  private densitySum = 0;
  private recallSteps = 0;
  private recallSum = 0;
  private tokens = 0;
  private headsSum = 0;
  private headRecallSum = 0;
  private headRecallTokens = 0;
  private readonly union: Uint8Array;
  private readonly kept: Uint8Array;
  private readonly groupSize: number;

  /**
   * @param ffn MLP width; @param heads query heads; @param kvHeads KV groups (= heads for MHA).
   */
  constructor(readonly layer: number, readonly ffn: number, readonly heads: number, readonly kvHeads: number) {
    this.union = new Uint8Array(ffn);
    this.kept = new Uint8Array(ffn);
    this.groupSize = heads / kvHeads;
  }

  /**
   * One step's MLP: `keptIndex` the neurons computed (null = all of them), `denseAct` the dense run's
   * MLP activations [tokens, ffn] of the same step (null = unknown: recall not counted).
   */
  addMlpStep(keptIndex: Int32Array | null, denseAct: Float32Array | null, tokens: number): void {
    const F = this.ffn;
    this.steps++;
    this.densitySum += keptIndex ? keptIndex.length / F : 1;
    if (!denseAct) return;
    const u = this.union;
    u.fill(0);
    let nu = 0;
    for (let t = 0; t < tokens; t++) {
      const base = t * F;
      for (let j = 0; j < F; j++) {
        if (denseAct[base + j] > 0 && !u[j]) {
          u[j] = 1;
          nu++;
        }
      }
    }
    if (nu === 0) return;
    let hit = nu;
    if (keptIndex) {
      hit = 0;
      for (let i = 0; i < keptIndex.length; i++) if (u[keptIndex[i]]) hit++;
    }
    this.recallSteps++;
    this.recallSum += hit / nu;
  }

  /**
   * One step's attention: `keptHeads` [tokens, heads] 1 = computed (null = all), `denseNorm` the dense
   * run's head output norms [tokens, heads] of the same step (null = unknown: recall counted only where
   * every unit or none is kept).
   */
  addHeadStep(keptHeads: Uint8Array | null, denseNorm: Float32Array | null, tokens: number): void {
    const H = this.heads;
    const G = this.kvHeads;
    const gs = this.groupSize;
    const unitNorm = new Float64Array(G);
    const keptUnit = new Uint8Array(G);
    for (let t = 0; t < tokens; t++) {
      this.tokens++;
      if (!keptHeads) {
        this.headsSum += H;
        this.headRecallSum += 1;
        this.headRecallTokens++;
        continue;
      }
      let m = 0;
      let headsOn = 0;
      for (let g = 0; g < G; g++) {
        let on = 0;
        for (let i = 0; i < gs; i++) if (keptHeads[t * H + g * gs + i]) on = 1;
        keptUnit[g] = on;
        m += on;
      }
      for (let h = 0; h < H; h++) if (keptHeads[t * H + h]) headsOn++;
      this.headsSum += headsOn;
      if (m === G || m === 0) {
        this.headRecallSum += 1;
        this.headRecallTokens++;
        continue;
      }
      if (!denseNorm) continue;
      for (let g = 0; g < G; g++) {
        let s = 0;
        for (let i = 0; i < gs; i++) {
          const x = denseNorm[t * H + g * gs + i];
          s += x * x;
        }
        unitNorm[g] = s;
      }
      // top-m units by dense norm (ties broken by lower index)
      const order = Array.from({ length: G }, (_, g) => g).sort((a, b) => unitNorm[b] - unitNorm[a] || a - b);
      let hit = 0;
      for (let i = 0; i < m; i++) if (keptUnit[order[i]]) hit++;
      this.headRecallSum += hit / m;
      this.headRecallTokens++;
    }
  }

  result(): LayerMetrics {
    return {
      layer: this.layer,
      mlp_density: this.steps ? this.densitySum / this.steps : 1,
      heads_kept: this.tokens ? this.headsSum / this.tokens : this.heads,
      mlp_recall: this.recallSteps ? this.recallSum / this.recallSteps : 1,
      head_recall: this.headRecallTokens ? this.headRecallSum / this.headRecallTokens : 1,
    };
  }
}
