// report.json: what `polar run` measured, in one object that report.html is drawn from. One writer
// (src/report/index.ts). Every plot of the HTML reads one of the arrays below, so a reader of the JSON
// can redraw them elsewhere.
import type { BatchResult } from '../validate/metrics.ts';

export const REPORT_FORMAT = 'polar-report';
export const REPORT_VERSION = 1;

export interface ReportModel {
  name: string;
  family: string;
  layers: number;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** gated MLP (LLaMA: gate, up, down) */
  gated: boolean;
}

/** MLP union density vs batch size: the true union (calibration tokens) and the calibrated k / ffn. */
export interface UnionDensityPoint {
  layer: number;
  batch_size: number;
  /** 'true union' (share of neurons active in any token of a batch) or 'calibrated k' (k / ffn) */
  series: 'true union' | 'calibrated k' | 'realised (validate)';
  density: number;
}

/** Recall of the true union by the router's top-k, per layer and batch size. */
export interface RecallPoint {
  layer: number;
  batch_size: number;
  k: number;
  recall: number;
}

export interface HeadsKeptPoint {
  layer: number;
  /** 'calibrated' or 'validate b=<n>' */
  source: string;
  heads_kept: number;
  heads_total: number;
}

/** Marginal perplexity cost of removing heads from one layer (from the calibration search). */
export interface HeadCostPoint {
  layer: number;
  heads_removed: number;
  ppl_increase: number;
}

/**
 * One sparsity configuration and its perplexity cost. work_skipped = share of the bytes of a decode step
 * not read (src/report/work.ts: the KV cache of the skipped heads at the reference context, plus the MLP
 * weights of the skipped neurons; the cost model of the calibration's head search).
 */
export interface ParetoPoint {
  label: string;
  source: string;
  work_skipped: number;
  /** mean share of MLP neurons computed over layers (null: not known for this point) */
  mlp_density: number | null;
  /** mean share of attention heads computed over layers */
  heads_frac: number;
  ppl_increase: number;
  /** batch and context of the cost model */
  batch: number;
  context: number;
  /** on the Pareto front of its source (no other point skips more work at no more perplexity) */
  pareto: boolean;
}

export interface SpeedTable {
  /** where the numbers come from (file) and on what hardware */
  source: string;
  columns: string[];
  rows: (string | number | null)[][];
}

/** validate.json of the validate stage. */
export interface ValidateSection {
  thresholds: { max_ppl_increase: number; min_top1?: number | null; max_kl?: number | null };
  passed: boolean;
  /** the thresholds exceeded, as readable lines */
  failures?: string[];
  /** the validation text (default:eval or a file) */
  text: string;
  /** predicted positions per batch size */
  tokens: number;
  window?: number;
  seconds: number;
  results: BatchResult[];
}

export interface StageTiming {
  stage: string;
  /** how long the stage took when it ran (a cached stage keeps the time of the run that made it) */
  seconds: number;
  finished_at: string | null;
}

export interface ReportJson {
  format: typeof REPORT_FORMAT;
  version: typeof REPORT_VERSION;
  title: string;
  created: string;
  tool_version: string;
  model: ReportModel;
  artifact: { dir: string; sha256: Record<string, string> } | null;
  union_density: UnionDensityPoint[];
  recall_vs_k: RecallPoint[];
  heads_kept: HeadsKeptPoint[];
  head_cost: HeadCostPoint[];
  pareto: ParetoPoint[];
  validate: ValidateSection | null;
  speed: SpeedTable[];
  stages: StageTiming[];
  /** things the report could not show, and why (e.g. "no benchmark results found") */
  notes: string[];
}
