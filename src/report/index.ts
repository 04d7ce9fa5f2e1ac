// The report: report.json (the one writer) and report.html drawn from it.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderReportHtml } from './html.ts';
import { workSkipped } from './work.ts';
import {
  REPORT_FORMAT,
  REPORT_VERSION,
  type HeadCostPoint,
  type HeadsKeptPoint,
  type ParetoPoint,
  type RecallPoint,
  type ReportJson,
  type ReportModel,
  type SpeedTable,
  type StageTiming,
  type UnionDensityPoint,
  type ValidateSection,
} from './types.ts';

export * from './types.ts';
export { renderReportHtml, chartLibraries } from './html.ts';
export { plotSpecs } from './specs.ts';
export { decodeStepBytes, workSkipped } from './work.ts';
export { readSpeedFile, speedTableOf } from './speed.ts';
export { calibrationView, reportModelOf } from './calibration.ts';

/** What the calibrate stage measured, in the report's terms (from calibration.json: src/report/calibration.ts). */
export interface CalibrationView {
  batchSizes: number[];
  layers: {
    layer: number;
    /** MLP: calibrated k and true union density per batch size; recall-vs-k curves */
    mlp?: { k: Record<number, number>; unionDensity: Record<number, number>; recallCurve: { batch_size: number; k: number; recall: number }[] };
    /** query heads each sequence keeps */
    headsKept?: number;
    /** perplexity increase with j units removed from this layer alone */
    headCost?: { heads_removed: number; ppl_increase: number }[];
  }[];
  /** configurations the calibration measured (perplexity on calibration tokens), on the work axis */
  search: { label: string; work_skipped: number; mlp_density: number | null; heads_frac: number; ppl_increase: number }[];
  /** the cost model's reference decode step */
  reference: { batch: number; context: number } | null;
}

export interface ReportInputs {
  title: string;
  toolVersion: string;
  model: ReportModel;
  calibration?: CalibrationView | null;
  validate?: ValidateSection | null;
  artifact?: { dir: string; sha256: Record<string, string> } | null;
  speed?: SpeedTable[];
  stages?: StageTiming[];
  notes?: string[];
  /** fixed creation time (tests, reproducible reports) */
  created?: string;
}

/** Context of the cost model when the calibration gives none. */
export const DEFAULT_WORK_CONTEXT = 1024;

/**
 * Marks the Pareto front within each source and batch size (the cost model depends on the batch): no
 * other point skips at least as much work at no more perplexity, and strictly better in one.
 */
export function markPareto(points: Omit<ParetoPoint, 'pareto'>[]): ParetoPoint[] {
  return points.map((p) => ({
    ...p,
    pareto: !points.some(
      (q) => q !== p && q.source === p.source && q.batch === p.batch && q.work_skipped >= p.work_skipped && q.ppl_increase <= p.ppl_increase && (q.work_skipped > p.work_skipped || q.ppl_increase < p.ppl_increase),
    ),
  }));
}

export function buildReport(inp: ReportInputs): ReportJson {
  const m = inp.model;
  const notes = [...(inp.notes ?? [])];
  const union: UnionDensityPoint[] = [];
  const recall: RecallPoint[] = [];
  const heads: HeadsKeptPoint[] = [];
  const headCost: HeadCostPoint[] = [];
  const pareto: Omit<ParetoPoint, 'pareto'>[] = [];
  const cal = inp.calibration ?? null;
  if (cal) {
    for (const l of cal.layers) {
      if (l.mlp) {
        for (const b of cal.batchSizes) {
          if (l.mlp.unionDensity[b] !== undefined) union.push({ layer: l.layer, batch_size: b, series: 'true union', density: l.mlp.unionDensity[b] });
          if (l.mlp.k[b] !== undefined) union.push({ layer: l.layer, batch_size: b, series: 'calibrated k', density: l.mlp.k[b] / m.ffn });
        }
        for (const c of l.mlp.recallCurve) recall.push({ layer: l.layer, ...c });
      }
      if (l.headsKept !== undefined) heads.push({ layer: l.layer, source: 'calibrated', heads_kept: l.headsKept, heads_total: m.heads });
      for (const c of l.headCost ?? []) headCost.push({ layer: l.layer, ...c });
    }
    const ref = cal.reference ?? { batch: 1, context: DEFAULT_WORK_CONTEXT };
    for (const s of cal.search) pareto.push({ ...s, source: 'calibration search', batch: ref.batch, context: ref.context });
  } else {
    notes.push('no calibration results: the union-density, recall and head-cost plots are empty');
  }
  const mlpLayers = new Set((cal?.layers ?? []).filter((l) => l.mlp).map((l) => l.layer));
  const v = inp.validate ?? null;
  if (v) {
    for (const r of v.results) {
      for (const l of r.layers) {
        // realised density only where the MLP is routed (layers with a calibration table; dense layers stay at 1)
        const routed = cal ? mlpLayers.has(l.layer) : l.layer >= 1 && l.mlp_density < 1;
        if (routed) union.push({ layer: l.layer, batch_size: r.batch_size, series: 'realised (validate)', density: l.mlp_density });
        heads.push({ layer: l.layer, source: `validate b=${r.batch_size}`, heads_kept: l.heads_kept, heads_total: m.heads });
      }
      const n = r.layers.length || 1;
      const mlp = r.layers.reduce((a, l) => a + l.mlp_density, 0) / n;
      const hf = r.layers.reduce((a, l) => a + l.heads_kept, 0) / n / m.heads;
      const context = cal?.reference?.context ?? DEFAULT_WORK_CONTEXT;
      const group = m.heads / m.kvHeads;
      const ws = workSkipped(m, r.batch_size, context, r.layers.map((l) => l.heads_kept / group), r.layers.map((l) => l.mlp_density * m.ffn));
      pareto.push({ label: `validate, batch ${r.batch_size}`, source: 'validate (decoding)', work_skipped: ws, mlp_density: mlp, heads_frac: hf, ppl_increase: r.ppl_increase, batch: r.batch_size, context });
    }
  } else {
    notes.push('no validation results');
  }
  if (!(inp.speed ?? []).length) notes.push('no benchmark results: the speed table is empty');
  return {
    format: REPORT_FORMAT,
    version: REPORT_VERSION,
    title: inp.title,
    created: inp.created ?? new Date().toISOString(),
    tool_version: inp.toolVersion,
    model: m,
    artifact: inp.artifact ?? null,
    union_density: union,
    recall_vs_k: recall,
    heads_kept: heads,
    head_cost: headCost,
    pareto: markPareto(pareto),
    validate: v,
    speed: inp.speed ?? [],
    stages: inp.stages ?? [],
    notes,
  };
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** Writes report.json and report.html into `dir`; returns their paths. */
export function writeReport(dir: string, report: ReportJson): { json: string; html: string } {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, 'report.json');
  const html = join(dir, 'report.html');
  writeAtomic(json, JSON.stringify(report, null, 2) + '\n');
  writeAtomic(html, renderReportHtml(report));
  return { json, html };
}
