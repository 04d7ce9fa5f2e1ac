// calibration.json: what the calibrate stage writes and the export stage (and the report) reads. One
// schema, one writer (atomic), one reader. It is copied unchanged into the artifact folder, where the
// manifest's checksums cover it.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { badInput, notFound } from '../errors.ts';
import type { ModelIdentityDims } from './schema.ts';

export const CALIBRATION_FORMAT = 'polar-calibration';
export const CALIBRATION_VERSION = 1;

export interface CalibrationMlpLayer {
  layer: number;
  score: 'logit' | 'sigmoid';
  /** per batch size (mlp.batchSizes) */
  k: number[];
  recall: number[];
  /** recall at k on the held-out check split (null where it had fewer rows than the batch size) */
  recallCheck: (number | null)[];
  unionDensity: number[];
  /** sum over batch sizes of k at the primary target, per score measured */
  scoreComparison: Partial<Record<'logit' | 'sigmoid', number>>;
  /** recall-vs-k on the calibration split: k grid (multiples of the granule, and ffn), recall per batch size */
  curve: { k: number[]; recall: number[][] };
  rows: { calib: number; check: number; calibSeqs: number; checkSeqs: number };
}

export interface CalibrationHeadLayer {
  layer: number;
  /** units each token keeps, of `units` */
  kept: number;
  units: number;
  /** sweep of this layer alone: ppl with j units removed (j = 0..), and the marginal cost of each */
  sweep: { ppl: number[]; marginal: number[] } | null;
}

export interface CalibrationFile {
  format: typeof CALIBRATION_FORMAT;
  version: number;
  /** no timestamps or timings: the same inputs and options give the same bytes */
  tool: { name: string; version: string };
  model: ModelIdentityDims & { name: string };
  /** the corpus of the activations the routers were trained and calibrated on */
  corpus: { sha256: string; tokens: number };
  routers: { layers: number[]; fingerprints: Record<string, string>; split: { seed: number; valFraction: number } };
  mlp: null | {
    /** the recall target the tables are for (the search may pick it among candidates) */
    target: number;
    primaryTarget: number;
    granule: number;
    batchSizes: number[];
    draws: number;
    scoreMode: 'auto' | 'logit' | 'sigmoid';
    checkFraction: number;
    layers: CalibrationMlpLayer[];
  };
  heads: {
    unit: 'head' | 'kv-group';
    units: number;
    mode: 'fidelity' | 'fixed' | 'dense';
    maxPplIncrease: number | null;
    fraction: number | null;
    minUnits: number;
    evalBatch: number;
    window: number;
    /** calibration tokens (predicted positions) and where they came from */
    tokens: number;
    text: { corpus: string; sha256: string; skipTokens: number };
    densePpl: number | null;
    budgetPpl: number | null;
    sparsePpl: number | null;
    /** MLP target in force when sparsePpl was measured (null: MLP dense) */
    mlpTarget: number | null;
    layers: CalibrationHeadLayer[];
    candidates: { mlp: number | null; mlpPpl: number; feasible: boolean; heads: number[] | null; ppl: number | null; work: number | null; removals: number; predictedRemovals: number }[];
    evaluations: number;
  };
  /** shares of work skipped (1 - kept / total over every layer, layer 0 included) */
  work: {
    attention: number;
    /** per batch size of mlp.batchSizes (empty without MLP sparsity) */
    mlp: number[];
    /** the cost model's reference point and the relative decode-step bytes, dense vs chosen */
    reference: { batch: number; context: number; denseBytes: number; sparseBytes: number };
  };
}

export function writeCalibration(file: string, c: CalibrationFile): void {
  const tmp = `${file}.tmp`;
  const data = Buffer.from(JSON.stringify(c, null, 2) + '\n', 'utf8');
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

/** Reads calibration.json, refusing other formats and versions; checks what export relies on. */
export function readCalibration(file: string): CalibrationFile {
  if (!existsSync(file)) throw notFound(file, 'calibration file', 'run `polar calibrate` first');
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw badInput(file, '(file)', 'JSON', (e as Error).message, true);
  }
  if (j.format !== CALIBRATION_FORMAT) throw badInput(file, 'format', `"${CALIBRATION_FORMAT}"`, j.format);
  if (j.version !== CALIBRATION_VERSION) throw badInput(file, 'version', `${CALIBRATION_VERSION} (the calibration version this polar reads)`, j.version);
  const c = j as unknown as CalibrationFile;
  if (!c.model || typeof c.model.configSha256 !== 'string' || typeof c.model.weightsSha256 !== 'string') throw badInput(file, 'model', 'the model identity (configSha256, weightsSha256)', c.model);
  if (!c.heads || !Array.isArray(c.heads.layers)) throw badInput(file, 'heads.layers', 'an array', c.heads?.layers);
  if (c.mlp !== null) {
    if (!c.mlp || !Array.isArray(c.mlp.batchSizes) || !Array.isArray(c.mlp.layers)) throw badInput(file, 'mlp', 'null or { batchSizes, layers, ... }', c.mlp);
    for (const [i, l] of c.mlp.layers.entries()) {
      if (!Array.isArray(l.k) || l.k.length !== c.mlp.batchSizes.length) throw badInput(file, `mlp.layers[${i}].k`, `${c.mlp.batchSizes.length} values (one per batch size)`, l.k);
    }
  }
  return c;
}
