// Calibration algorithms on synthetic data: recall curves against a direct computation, the binary search
// against a linear scan, k tables, and the head-budget search with synthetic perplexity evaluators.
import { describe, expect, it } from 'vitest';
import {
  defaultGranule,
  kTable,
  layerTable,
  measureLayer,
  recallCurve,
  resolveMlpOptions,
  routerLogits,
  smallestK,
  type ActivityRows,
} from '../../src/calibrate/mlp.ts';
import { allocateRemovals, fixedHeads, searchHeadBudgets, type EvalConfig } from '../../src/calibrate/heads.ts';
import { Rng } from '../../src/routers/rng.ts';

/** Rows whose true activity is noisy around a per-row latent score; the "router" sees the latent. */
function synthetic(rows: number, ffn: number, seed: number): { set: ActivityRows; logits: Float32Array } {
  const rng = new Rng(seed);
  const stride = Math.ceil(ffn / 8);
  const bits = new Uint8Array(rows * stride);
  const logits = new Float32Array(rows * ffn);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < ffn; j++) {
      const z = (rng.float() - 0.5) * 8 - 1.5 + (j % 7 === 0 ? 2 : 0);
      logits[r * ffn + j] = z;
      const p = 1 / (1 + Math.exp(-2 * z));
      if (rng.float() < p) bits[r * stride + (j >> 3)] |= 1 << (j & 7);
    }
  }
  const hidden = 1;
  return { set: { rows, hidden, ffn, x: new Float32Array(rows), bits, stride }, logits };
}

describe('MLP calibration', () => {
  it('recall curve of one draw of one row equals the direct top-k recall', () => {
    const ffn = 10;
    const logits = Float32Array.from([5, 1, 4, 0, 3, -1, 2, -2, 6, -3]);
    // active: neurons 0, 3, 9 (ranks by score: 8,0,2,4,6,1,3,5,7,9)
    const bits = new Uint8Array(2);
    for (const j of [0, 3, 9]) bits[j >> 3] |= 1 << (j & 7);
    const c = recallCurve({ rows: 1, hidden: 1, ffn, x: new Float32Array(1), bits, stride: 2 }, logits, 1, 3, 0, 'logit');
    const want = [0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3].map((h) => h / 3);
    expect(Array.from(c.recall).map((v) => +v.toFixed(9))).toEqual(want.map((v) => +v.toFixed(9)));
    expect(c.unionDensity).toBeCloseTo(0.3, 12);
  });

  it('mean curves are non-decreasing; unions grow with the batch; sigmoid and logit agree at b = 1', () => {
    const { set, logits } = synthetic(400, 96, 1);
    let prevU = 0;
    for (const b of [1, 4, 16, 64]) {
      const c = recallCurve(set, logits, b, 20, 7, 'logit');
      for (let k = 1; k <= 96; k++) expect(c.recall[k]).toBeGreaterThanOrEqual(c.recall[k - 1]);
      expect(c.recall[96]).toBeCloseTo(1, 12);
      expect(c.unionDensity).toBeGreaterThan(prevU);
      prevU = c.unionDensity;
    }
    const a = recallCurve(set, logits, 1, 30, 3, 'logit'), s = recallCurve(set, logits, 1, 30, 3, 'sigmoid');
    expect(Array.from(a.recall)).toEqual(Array.from(s.recall));
  });

  it('smallestK (binary search) equals a linear scan over granule multiples, capped at ffn', () => {
    const { set, logits } = synthetic(300, 100, 2);
    const c = recallCurve(set, logits, 8, 16, 1, 'logit');
    for (const g of [1, 8, 16, 48, 100]) {
      for (const t of [0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1]) {
        let lin = 100;
        for (let j = 1; j * g < 100 + g; j++) {
          const k = Math.min(100, j * g);
          if (c.recall[k] >= t) {
            lin = k;
            break;
          }
        }
        const k = smallestK(c.recall, t, g, 100);
        expect(k).toBe(lin);
        expect(k % g === 0 || k === 100).toBe(true);
        expect(c.recall[k]).toBeGreaterThanOrEqual(Math.min(t, c.recall[100]));
      }
    }
  });

  it('default granule: 128 for large MLPs, a power of two with ~32 steps for small ones', () => {
    expect(defaultGranule(16384)).toBe(128);
    expect(defaultGranule(4096)).toBe(128);
    expect(defaultGranule(1536)).toBe(32);
    expect(defaultGranule(1024)).toBe(32);
    expect(defaultGranule(512)).toBe(16);
    expect(defaultGranule(64)).toBe(8);
  });

  it('k tables are non-decreasing in batch size and reach the target on the calibration draws; check split near it', () => {
    const calib = synthetic(1500, 128, 3), check = synthetic(1500, 128, 4);
    const o = resolveMlpOptions({ batchSizes: [1, 2, 4, 8, 16, 32], draws: 64 }, 128);
    expect(o.granule).toBe(defaultGranule(128));
    const c = measureLayer(1, calib, check, o);
    expect(['logit', 'sigmoid']).toContain(c.score);
    expect(Object.keys(c.scoreComparison).sort()).toEqual(['logit', 'sigmoid']);
    const t = layerTable(c, 0.99, o.granule, 128);
    for (let i = 1; i < t.k.length; i++) expect(t.k[i]).toBeGreaterThanOrEqual(t.k[i - 1]);
    t.recall.forEach((r) => expect(r).toBeGreaterThanOrEqual(0.99));
    t.recallCheck.forEach((r) => expect(r).toBeGreaterThanOrEqual(0.98));
    expect(t.k[0]).toBeLessThan(128); // sparse at batch 1
    // a lower target never needs more neurons
    const lo = kTable(c.calib, 0.95, o.granule, 128);
    lo.forEach((k, i) => expect(k).toBeLessThanOrEqual(t.k[i]));
  });

  it('router logits: native-free path equals the definition fc2 (fc1 x)', () => {
    const hidden = 3, ffn = 4, rank = 2;
    const x = Float32Array.from([1, 2, 3, -1, 0, 1]);
    const fc1 = Float32Array.from([1, 0, 1, 0, 1, 0]); // h = [x0 + x2, x1]
    const fc2 = Float32Array.from([1, 0, 0, 1, 1, 1, 2, -1]);
    const s = routerLogits({ rows: 2, hidden, ffn, x, bits: new Uint8Array(2), stride: 1 }, { rank, fc1, fc2 }, null);
    expect(Array.from(s)).toEqual([4, 2, 6, 6, 0, 0, 0, 0]);
  });

  it('refuses batch sizes larger than the held-out rows, with the numbers', () => {
    const { set, logits } = synthetic(10, 16, 5);
    expect(() => measureLayer(1, { set, logits }, null, resolveMlpOptions({ batchSizes: [1, 32] }, 16))).toThrow(/at least the largest batch size \(32\).*received 10/);
  });
});

describe('head-budget search', () => {
  it('allocateRemovals matches brute force', () => {
    const cost = [
      [0, 0.001, 0.004, 0.02],
      [0, 0.003, 0.005],
      [0, 0.0005, 0.0007, 0.009, 0.05],
    ];
    const { best, pick } = allocateRemovals(cost);
    for (let R = 0; R < best.length; R++) {
      let bf = Infinity;
      for (let a = 0; a < 4; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 5; c++) if (a + b + c === R) bf = Math.min(bf, cost[0][a] + cost[1][b] + cost[2][c]);
      expect(best[R]).toBeCloseTo(bf, 12);
      expect(pick[R].reduce((s, v) => s + v, 0)).toBe(R);
      expect(cost[0][pick[R][0]] + cost[1][pick[R][1]] + cost[2][pick[R][2]]).toBeCloseTo(bf, 12);
    }
  });

  /** ppl = base * exp(mlp cost + sum of per-layer costs of the units removed (+ an interaction term)) */
  function syntheticEval(perUnit: number[][], mlpCost: (t: number | null) => number, interaction = 0) {
    let calls = 0;
    const f = async (cfg: EvalConfig) => {
      calls++;
      expect(cfg.heads[0]).toBe(4); // layer 0 always dense
      let c = mlpCost(cfg.mlp);
      let removed = 0;
      for (let l = 1; l < cfg.heads.length; l++) {
        const j = 4 - cfg.heads[l];
        removed += j;
        for (let u = 0; u < j; u++) c += perUnit[l][u];
      }
      c += interaction * removed * removed;
      return 20 * Math.exp(c);
    };
    return { f, calls: () => calls };
  }

  const perUnit = [[], [0.001, 0.002, 0.01], [0.0002, 0.0004, 0.003], [0.004, 0.02, 0.05]];
  const space = { layers: 4, sparseLayers: [1, 2, 3], units: 4, minUnits: 1 };
  const workOf = (mlpWork: (t: number | null) => number) => (cfg: EvalConfig) => cfg.heads.reduce((a, v) => a + v, 0) * 10 + mlpWork(cfg.mlp);

  it('finds the most removals that fit the budget with an additive evaluator, and records marginal costs', async () => {
    const ev = syntheticEval(perUnit, (t) => (t === null ? 0 : 0.002));
    const r = await searchHeadBudgets(ev.f, space, { maxPplIncrease: 0.01, mlpTargets: [0.99], work: workOf(() => 0), sweepStop: Infinity });
    // budget log(1.01) = 0.00995; MLP takes 0.002; best fit: layer 2 (0.0002+0.0004+0.003) + layer 1 (0.001+0.002) = 0.0066 -> 5 removals
    expect(r.chosen.heads).toEqual([4, 2, 1, 4]);
    expect(r.chosen.ppl).toBeLessThanOrEqual(r.budgetPpl);
    expect(r.densePpl).toBe(20);
    expect(r.sweep.map((s) => s.layer)).toEqual([1, 2, 3]);
    expect(r.sweep[0].ppl.length).toBe(4); // 0..3 removed
    r.sweep[0].marginal.forEach((m, j) => expect(m).toBeCloseTo(r.sweep[0].ppl[j + 1] - r.sweep[0].ppl[j], 12));
    // evaluations are cached: distinct configurations only
    expect(ev.calls()).toBe(r.evaluations);
    expect(r.trace.length).toBe(r.evaluations);
  });

  it('backs off by binary search when the additive prediction is optimistic, and never returns an over-budget configuration', async () => {
    const ev = syntheticEval(perUnit, (t) => (t === null ? 0 : 0.002), 0.0004);
    const r = await searchHeadBudgets(ev.f, space, { maxPplIncrease: 0.01, mlpTargets: [0.99], work: workOf(() => 0), sweepStop: Infinity });
    const c = r.candidates[0];
    expect(c.removals).toBeLessThan(c.predictedRemovals);
    expect(r.chosen.ppl).toBeLessThanOrEqual(r.budgetPpl);
    expect(await ev.f({ heads: r.chosen.heads, mlp: 0.99 })).toBeLessThanOrEqual(r.budgetPpl);
  });

  it('picks the MLP target with the least work among feasible ones; infeasible ones are recorded', async () => {
    const mlpCost = (t: number | null) => (t === null ? 0 : t === 0.9 ? 0.05 : t === 0.98 ? 0.006 : 0.002);
    const mlpWork = (t: number | null) => (t === null ? 1000 : t === 0.9 ? 100 : t === 0.98 ? 300 : 400);
    const ev = syntheticEval(perUnit, mlpCost);
    const r = await searchHeadBudgets(ev.f, space, { maxPplIncrease: 0.01, mlpTargets: [0.99, 0.98, 0.9], work: workOf(mlpWork) });
    const byT = new Map(r.candidates.map((c) => [c.mlp, c]));
    expect(byT.get(0.9)!.feasible).toBe(false);
    expect(byT.get(0.98)!.feasible).toBe(true);
    expect(byT.get(0.99)!.removals).toBeGreaterThan(byT.get(0.98)!.removals);
    const best = [...r.candidates].filter((c) => c.feasible).sort((a, b) => a.work! - b.work!)[0];
    expect(r.chosen.mlp).toBe(best.mlp);
    expect(r.chosen.work).toBe(best.work);
  });

  it('runs the sweep on a separate heads-only evaluator (MLP dense) when given one', async () => {
    const main = syntheticEval(perUnit, (t) => (t === null ? 0 : 0.002));
    const sweepCalls: EvalConfig[] = [];
    const sweepEval = async (cfg: EvalConfig) => {
      sweepCalls.push(cfg);
      return main.f(cfg);
    };
    const r = await searchHeadBudgets(main.f, space, { maxPplIncrease: 0.01, mlpTargets: [0.99], work: workOf(() => 0), sweepEvaluate: sweepEval, sweepStop: Infinity });
    expect(sweepCalls.every((c) => c.mlp === null)).toBe(true);
    expect(r.sweepMlp).toBeNull();
    expect(r.sweepEvaluations).toBe(1 + 3 * 3);
    expect(r.trace.every((t) => t.mlp === null || t.mlp === 0.99)).toBe(true);
    expect(r.chosen.heads).toEqual([4, 2, 1, 4]); // same answer: the costs are additive
  });

  it('stops a layer sweep early once it is far over budget', async () => {
    const ev = syntheticEval([[], [0.001, 0.002, 0.01], [0.0002, 0.0004, 0.003], [0.2, 0.2, 0.2]], () => 0);
    const r = await searchHeadBudgets(ev.f, space, { maxPplIncrease: 0.01, mlpTargets: [null], work: workOf(() => 0), sweepStop: 4 });
    expect(r.sweep[2].ppl.length).toBe(2); // one removal measured, then stopped
    expect(r.chosen.heads[3]).toBe(4);
  });

  it('keeps everything when nothing fits, and fixed fractions round per layer', async () => {
    const ev = syntheticEval(perUnit, (t) => (t === null ? 0 : 0.05));
    const r = await searchHeadBudgets(ev.f, space, { maxPplIncrease: 0.01, mlpTargets: [0.99], work: workOf(() => 0) });
    expect(r.candidates[0].feasible).toBe(false);
    expect(r.chosen).toMatchObject({ heads: [4, 4, 4, 4], mlp: null, ppl: 20 });
    expect(fixedHeads(space, 0.5)).toEqual([4, 2, 2, 2]);
    expect(fixedHeads({ ...space, minUnits: 3 }, 0.25)).toEqual([4, 3, 3, 3]);
    expect(() => fixedHeads(space, 0)).toThrow(/head fraction: expected a number in \(0, 1\]/);
    await expect(searchHeadBudgets(ev.f, { ...space, sparseLayers: [0, 1] }, { maxPplIncrease: 0.01, mlpTargets: [null], work: () => 0 })).rejects.toThrow(/layer 0 stays dense/);
  });
});

describe('calibrate and export stage options', () => {
  const pipeline = {
    file: '/p/small.yaml',
    version: 1,
    name: 'small',
    description: '',
    model: '/m',
    corpus: { train: 'default:train', eval: 'default:eval', text_field: 'text' },
    targets: { mlp_recall: 0.995, ppl_increase_max: 0.02, batch_sizes: [1, 8, 64], validate_batch_sizes: [1] },
    stages: [],
  };
  const where = { file: '/p/small.yaml', field: 'stages.calibrate' };

  it('take the pipeline targets as defaults and refuse unknown keys naming the file and field', async () => {
    const cal = await import('../../src/stages/calibrate/index.ts');
    const o = cal.options({}, where, pipeline);
    expect(o).toMatchObject({ target: 0.995, batch_sizes: [1, 8, 64], max_ppl_increase: 0.02, heads: 'fidelity', eval_batch: 1, mlp_targets: null });
    expect(cal.options({ heads: 'fixed', head_fraction: 0.75, mlp_targets: [0.98, 0.99] }, where, pipeline)).toMatchObject({ heads: 'fixed', head_fraction: 0.75, mlp_targets: [0.98, 0.99] });
    expect(() => cal.options({ tokns: 5 }, where, pipeline)).toThrow(/\/p\/small\.yaml: stages\.calibrate\.tokns/);
    expect(() => cal.options({ batch_sizes: [4, 2] }, where, pipeline)).toThrow(/stages\.calibrate\.batch_sizes: expected increasing batch sizes/);
    expect(() => cal.options({ heads: 'half' }, where, pipeline)).toThrow(/stages\.calibrate\.heads/);
    expect(cal.inputs).toEqual(['collect', 'train']);
    const exp = await import('../../src/stages/export/index.ts');
    expect(exp.options({}, { file: '/p/small.yaml', field: 'stages.export' })).toEqual({});
    expect(() => exp.options({ out: 'x' }, { file: '/p/small.yaml', field: 'stages.export' })).toThrow(/stages\.export\.out/);
    expect(exp.folder).toBe('artifact');
    expect(exp.inputs).toEqual(['train', 'calibrate']);
  });
});
