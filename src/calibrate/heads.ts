// Head-budget calibration by fidelity. Recall of the "important" heads is a poor guide on small models
// (keeping the oracle top half of medium-opt's heads costs +24% perplexity), so the number of units (heads,
// or KV groups of GQA models) each token keeps per layer comes from a perplexity budget measured with the
// routers: sparse perplexity <= (1 + maxPplIncrease) x dense on calibration tokens (default 1%).
//
// The search only needs an evaluator: (units kept per layer, MLP recall target or dense) -> perplexity
// (src/calibrate/fidelity.ts decodes with the runtime; tests pass synthetic ones). Every evaluation is cached.
//
//  1. dense perplexity P0 and the budget P0 (1 + maxPplIncrease);
//  2. sweep: each sparse layer alone loses one unit at a time (the others keep all): ppl_l(j) for j units
//     removed, with the MLP sparse at the first candidate target — or, given a separate sweep evaluator
//     (heads only: prefill is exact for per-token head selection and much faster than decoding), dense. This gives the marginal perplexity cost of
//     each unit removed (recorded for the report); a layer's sweep stops once its increase passes
//     `sweepStop` x the budget (further removals cannot fit);
//  3. for each MLP target candidate t: P_t (MLP sparse at t, every unit kept); if P_t is over budget, t is
//     infeasible. Otherwise, modelling log-perplexity increases as additive over layers, a dynamic program
//     gives for every total number R of removed units the per-layer removals of least predicted cost; the
//     largest R predicted to fit is evaluated for real, then a binary search over R (real evaluations)
//     finds the largest R whose configuration meets the budget;
//  4. among the feasible candidates, the one with the least work (the caller's cost model) wins.
// Layer 0 always stays dense. Fixed fractions (no search) are a separate entry point.
import { badArg } from '../errors.ts';

export interface EvalConfig {
  /** units kept per layer, length = model layers (layer 0: all) */
  heads: number[];
  /** MLP recall target (sparse MLP with the k calibrated for it), or null: MLP dense */
  mlp: number | null;
}

export type PplEvaluator = (cfg: EvalConfig) => Promise<number>;

export interface HeadSpace {
  layers: number;
  /** layers whose attention may be sparse (never 0) */
  sparseLayers: number[];
  /** units per layer (heads, or KV groups) */
  units: number;
  /** fewest units a sparse layer keeps (default 1) */
  minUnits?: number;
}

export interface HeadSearchOptions {
  maxPplIncrease: number;
  /** MLP target candidates (the first is the sweep's); [null] for models without MLP sparsity */
  mlpTargets: (number | null)[];
  /** relative work of a configuration (lower is better): the objective between feasible candidates */
  work: (cfg: EvalConfig) => number;
  /**
   * evaluator of the sweep (configurations with the MLP dense, heads only), e.g. a faster prefill one: the
   * sweep then runs with the MLP dense. Default: the main evaluator, with the first candidate's MLP.
   */
  sweepEvaluate?: PplEvaluator;
  /** stop a layer's sweep once its increase exceeds this multiple of the budget (default 4; Infinity: full sweeps) */
  sweepStop?: number;
  log?: (line: string) => void;
  shouldStop?: () => boolean;
}

export interface LayerSweep {
  layer: number;
  /** ppl with j units removed from this layer alone (index j = 0 .. removed); the sweep's MLP setting */
  ppl: number[];
  /** ppl[j] - ppl[j - 1] for j >= 1: the marginal cost of the j-th unit removed */
  marginal: number[];
}

export interface CandidateResult {
  mlp: number | null;
  /** ppl with the MLP sparse at this target and every unit kept */
  mlpPpl: number;
  feasible: boolean;
  heads: number[] | null;
  ppl: number | null;
  work: number | null;
  /** R (units removed in all) predicted to fit, and the R kept after verification */
  predictedRemovals: number;
  removals: number;
}

export interface HeadSearchResult {
  densePpl: number;
  budgetPpl: number;
  sweepMlp: number | null;
  sweepBasePpl: number;
  sweep: LayerSweep[];
  candidates: CandidateResult[];
  /** the winning configuration (every unit kept and MLP dense when nothing fits) */
  chosen: { heads: number[]; mlp: number | null; ppl: number; work: number };
  /** distinct configurations evaluated by the main evaluator, and by the sweep evaluator when separate */
  evaluations: number;
  sweepEvaluations: number;
  /** every distinct configuration evaluated by the main evaluator, in order */
  trace: { heads: number[]; mlp: number | null; ppl: number }[];
}

/** Wraps an evaluator with a cache keyed by the configuration; counts distinct evaluations. */
export function cachedEvaluator(evaluate: PplEvaluator) {
  const cache = new Map<string, number>();
  const trace: { heads: number[]; mlp: number | null; ppl: number }[] = [];
  return {
    trace,
    get count() {
      return cache.size;
    },
    async eval(cfg: EvalConfig): Promise<number> {
      const key = `${cfg.mlp ?? 'dense'}|${cfg.heads.join(',')}`;
      const hit = cache.get(key);
      if (hit !== undefined) return hit;
      const v = await evaluate({ heads: cfg.heads.slice(), mlp: cfg.mlp });
      if (!Number.isFinite(v) || v <= 0) throw new Error(`head calibration: the evaluator returned perplexity ${v} for ${key}`);
      cache.set(key, v);
      trace.push({ heads: cfg.heads.slice(), mlp: cfg.mlp, ppl: v });
      return v;
    },
  };
}

function checkSpace(s: HeadSpace): Required<HeadSpace> {
  const minUnits = s.minUnits ?? 1;
  if (!Number.isInteger(s.units) || s.units < 1) throw badArg('units', 'an integer >= 1', s.units);
  if (!Number.isInteger(minUnits) || minUnits < 0 || minUnits > s.units) throw badArg('minUnits', `an integer in 0..${s.units}`, minUnits);
  for (const l of s.sparseLayers) if (!Number.isInteger(l) || l < 1 || l >= s.layers) throw badArg('sparse layers', `layers in 1..${s.layers - 1} (layer 0 stays dense)`, l);
  return { ...s, minUnits, sparseLayers: [...new Set(s.sparseLayers)].sort((a, b) => a - b) };
}

/**
 * Per-layer removals minimising the total predicted cost for each total R: cost[i][j] is layer i's cost of
 * j removals (cost[i][0] = 0). Returns best[R] and the removals per layer for each R.
 */
export function allocateRemovals(cost: number[][]): { best: number[]; pick: number[][] } {
  const maxR = cost.reduce((a, c) => a + c.length - 1, 0);
  let best = new Array<number>(maxR + 1).fill(Infinity);
  best[0] = 0;
  const choice: Int32Array[] = [];
  let reach = 0;
  for (const c of cost) {
    const next = new Array<number>(maxR + 1).fill(Infinity);
    const ch = new Int32Array(maxR + 1).fill(-1);
    for (let r = 0; r <= reach; r++) {
      if (best[r] === Infinity) continue;
      for (let j = 0; j < c.length; j++) {
        const v = best[r] + c[j];
        if (v < next[r + j]) {
          next[r + j] = v;
          ch[r + j] = j;
        }
      }
    }
    reach += c.length - 1;
    choice.push(ch);
    best = next;
  }
  const pick: number[][] = [];
  for (let R = 0; R <= maxR; R++) {
    const p = new Array<number>(cost.length).fill(0);
    if (best[R] === Infinity) {
      pick.push(p);
      continue;
    }
    let r = R;
    for (let i = cost.length - 1; i >= 0; i--) {
      const j = choice[i][r];
      p[i] = j;
      r -= j;
    }
    pick.push(p);
  }
  return { best, pick };
}

/** The fidelity search (see the top of the file). */
export async function searchHeadBudgets(evaluate: PplEvaluator, spaceIn: HeadSpace, o: HeadSearchOptions): Promise<HeadSearchResult> {
  const space = checkSpace(spaceIn);
  const log = o.log ?? (() => {});
  if (!(o.maxPplIncrease >= 0)) throw badArg('maxPplIncrease', 'a number >= 0', o.maxPplIncrease);
  if (!o.mlpTargets.length) throw badArg('mlpTargets', 'at least one candidate (a recall target, or null for a dense MLP)', o.mlpTargets);
  const sweepStop = o.sweepStop ?? 4;
  const ev = cachedEvaluator(evaluate);
  const stop = () => {
    if (o.shouldStop?.()) throw new Error('head calibration interrupted');
  };
  const full = () => new Array<number>(space.layers).fill(space.units);
  const L = space.sparseLayers;

  const densePpl = await ev.eval({ heads: full(), mlp: null });
  const budgetPpl = densePpl * (1 + o.maxPplIncrease);
  const budgetLog = Math.log(1 + o.maxPplIncrease);
  log(`heads: dense ppl ${densePpl.toFixed(4)}, budget ${budgetPpl.toFixed(4)} (+${(100 * o.maxPplIncrease).toFixed(2)}%)`);

  // 2. sweep with the first candidate's MLP setting
  const sweepMlp = o.sweepEvaluate ? null : o.mlpTargets[0];
  const sev = o.sweepEvaluate ? cachedEvaluator(o.sweepEvaluate) : ev;
  const sweepBase = await sev.eval({ heads: full(), mlp: sweepMlp });
  const sweep: LayerSweep[] = [];
  for (const l of L) {
    const ppl = [sweepBase];
    for (let j = 1; j <= space.units - space.minUnits; j++) {
      stop();
      const h = full();
      h[l] = space.units - j;
      const p = await sev.eval({ heads: h, mlp: sweepMlp });
      ppl.push(p);
      if (Math.log(p / sweepBase) > sweepStop * Math.max(budgetLog, 1e-6)) break;
    }
    sweep.push({ layer: l, ppl, marginal: ppl.slice(1).map((p, j) => p - ppl[j]) });
    log(`heads: layer ${l} sweep: ${ppl.map((p) => p.toFixed(3)).join(' -> ')}`);
  }
  // predicted cost (log-ppl increase) of j removals per layer
  const cost = sweep.map((s) => s.ppl.map((p) => Math.log(p / sweepBase)));
  const { best, pick } = allocateRemovals(cost);
  const configFor = (R: number): number[] => {
    const h = full();
    L.forEach((l, i) => (h[l] = space.units - pick[R][i]));
    return h;
  };

  // 3. candidates
  const candidates: CandidateResult[] = [];
  for (const t of o.mlpTargets) {
    stop();
    const mlpPpl = await ev.eval({ heads: full(), mlp: t });
    if (mlpPpl > budgetPpl) {
      log(`heads: MLP ${t === null ? 'dense' : `target ${t}`}: ppl ${mlpPpl.toFixed(4)} alone is over budget`);
      candidates.push({ mlp: t, mlpPpl, feasible: false, heads: null, ppl: null, work: null, predictedRemovals: 0, removals: 0 });
      continue;
    }
    const room = Math.log(budgetPpl / mlpPpl);
    let rHi = 0;
    for (let R = 0; R < best.length; R++) if (best[R] <= room) rHi = R;
    const predicted = rHi;
    let lo = 0, loPpl = mlpPpl;
    if (rHi > 0) {
      const p = await ev.eval({ heads: configFor(rHi), mlp: t });
      if (p <= budgetPpl) {
        lo = rHi;
        loPpl = p;
      } else {
        let hi = rHi;
        while (hi - lo > 1) {
          stop();
          const mid = (lo + hi) >> 1;
          const pm = await ev.eval({ heads: configFor(mid), mlp: t });
          if (pm <= budgetPpl) {
            lo = mid;
            loPpl = pm;
          } else hi = mid;
        }
      }
    }
    const heads = configFor(lo);
    const work = o.work({ heads, mlp: t });
    log(`heads: MLP ${t === null ? 'dense' : `target ${t}`}: ${lo} unit(s) removed (predicted ${predicted}), ppl ${loPpl.toFixed(4)}, work ${work.toPrecision(4)}`);
    candidates.push({ mlp: t, mlpPpl, feasible: true, heads, ppl: loPpl, work, predictedRemovals: predicted, removals: lo });
  }

  // 4. least work among the feasible candidates
  let chosen: HeadSearchResult['chosen'] = { heads: full(), mlp: null, ppl: densePpl, work: o.work({ heads: full(), mlp: null }) };
  for (const c of candidates) if (c.feasible && c.work! < chosen.work) chosen = { heads: c.heads!, mlp: c.mlp, ppl: c.ppl!, work: c.work! };
  return { densePpl, budgetPpl, sweepMlp, sweepBasePpl: sweepBase, sweep, candidates, chosen, evaluations: ev.count, sweepEvaluations: sev === ev ? 0 : sev.count, trace: ev.trace };
}

/** Fixed fraction of units per sparse layer (no search): max(minUnits, round(fraction x units)). */
export function fixedHeads(spaceIn: HeadSpace, fraction: number): number[] {
  const space = checkSpace(spaceIn);
  if (!(fraction > 0 && fraction <= 1)) throw badArg('head fraction', 'a number in (0, 1]', fraction);
  const h = new Array<number>(space.layers).fill(space.units);
  for (const l of space.sparseLayers) h[l] = Math.max(space.minUnits, Math.min(space.units, Math.round(fraction * space.units)));
  return h;
}
