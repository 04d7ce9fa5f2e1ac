// calibration.json (src/artifact/calibration.ts, written by the calibrate stage) in the report's terms.
import type { CalibrationFile } from '../artifact/index.ts';
import type { CalibrationView } from './index.ts';
import type { ReportModel } from './types.ts';

export function reportModelOf(c: CalibrationFile, gated: boolean): ReportModel {
  const m = c.model;
  return { name: m.name, family: m.family, layers: m.layers, hidden: m.hidden, ffn: m.ffn, heads: m.heads, kvHeads: m.kvHeads, headDim: m.headDim, gated };
}

export function calibrationView(c: CalibrationFile): CalibrationView {
  const m = c.model;
  const bs = c.mlp?.batchSizes ?? [];
  const byLayer = new Map<number, CalibrationView['layers'][number]>();
  const entry = (l: number) => {
    let e = byLayer.get(l);
    if (!e) byLayer.set(l, (e = { layer: l }));
    return e;
  };
  for (const l of c.mlp?.layers ?? []) {
    entry(l.layer).mlp = {
      k: Object.fromEntries(bs.map((b, i) => [b, l.k[i]])),
      unionDensity: Object.fromEntries(bs.map((b, i) => [b, l.unionDensity[i]])),
      recallCurve: l.curve.recall.flatMap((row, bi) => row.map((recall, ki) => ({ batch_size: bs[bi], k: l.curve.k[ki], recall }))),
    };
  }
  const units = c.heads.units;
  const group = m.heads / units;
  for (const h of c.heads.layers) {
    const e = entry(h.layer);
    e.headsKept = h.kept * group;
    if (h.sweep && h.sweep.ppl.length) {
      const base = h.sweep.ppl[0];
      e.headCost = h.sweep.ppl.map((p, j) => ({ heads_removed: j * group, ppl_increase: p / base - 1 }));
    }
  }
  const dense = c.heads.densePpl;
  const ref = c.work.reference;
  const search: CalibrationView['search'] = [];
  if (dense !== null && ref.denseBytes > 0) {
    search.push({ label: 'dense', work_skipped: 0, mlp_density: 1, heads_frac: 1, ppl_increase: 0 });
    for (const cand of c.heads.candidates) {
      if (!cand.feasible || cand.ppl === null || cand.work === null || !cand.heads) continue;
      const headsFrac = cand.heads.reduce((a, v) => a + v, 0) / (cand.heads.length * units);
      let mlpDensity: number | null = null;
      if (cand.mlp === null) mlpDensity = 1;
      else if (c.mlp && cand.mlp === c.mlp.target) {
        // k at the reference batch (the smallest calibrated batch size >= it), layers without a table dense
        const i = bs.findIndex((b) => b >= ref.batch);
        const ks = new Map(c.mlp.layers.map((l) => [l.layer, i >= 0 ? l.k[i] : m.ffn]));
        let sum = 0;
        for (let l = 0; l < m.layers; l++) sum += (ks.get(l) ?? m.ffn) / m.ffn;
        mlpDensity = sum / m.layers;
      }
      search.push({
        label: `MLP ${cand.mlp === null ? 'dense' : `recall ${cand.mlp}`}, heads ${cand.heads.join('/')}`,
        work_skipped: 1 - cand.work / ref.denseBytes,
        mlp_density: mlpDensity,
        heads_frac: headsFrac,
        ppl_increase: cand.ppl / dense - 1,
      });
    }
  }
  return {
    batchSizes: bs,
    layers: [...byLayer.values()].sort((a, b) => a.layer - b.layer),
    search,
    reference: { batch: ref.batch, context: ref.context },
  };
}
