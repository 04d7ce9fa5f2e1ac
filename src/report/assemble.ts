// Reads what a pipeline run left (calibration.json, validate.json, the artifact's manifest, the stages'
// .stage.json records, benchmark output) and builds report.json from it. Used by the report stage (from
// its inputs' folders) and by `polar report <runDir>` (from a run folder).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { readCalibration, readManifest, CALIBRATION_FILE, type CalibrationFile } from '../artifact/index.ts';
import { badInput } from '../errors.ts';
import { buildReport } from './index.ts';
import { calibrationView, reportModelOf } from './calibration.ts';
import { readSpeedFile } from './speed.ts';
import type { ReportJson, ReportModel, SpeedTable, StageTiming, ValidateSection } from './types.ts';

export const VALIDATE_FILE = 'validate.json';
const STAGE_RECORD = '.stage.json';

export interface AssembleInputs {
  title?: string;
  toolVersion: string;
  /** the model (else taken from calibration.json) */
  model?: ReportModel;
  calibrationFile?: string | null;
  validateFile?: string | null;
  artifactDir?: string | null;
  /** stage folders, in pipeline order, whose .stage.json give the timings */
  stageDirs?: string[];
  benchFiles?: string[];
  notes?: string[];
}

export function readValidateFile(file: string): ValidateSection {
  let j: ValidateSection;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw badInput(file, '(file)', 'JSON (validate.json of the validate stage)', (e as Error).message, true);
  }
  if (!j || !Array.isArray(j.results) || !j.thresholds) throw badInput(file, 'results', 'the validate stage\'s output ({ thresholds, passed, results: [...] })', j);
  return j;
}

function stageTiming(dir: string): StageTiming | null {
  const f = join(dir, STAGE_RECORD);
  if (!existsSync(f)) return null;
  try {
    const r = JSON.parse(readFileSync(f, 'utf8'));
    if (r.status !== 'done') return null;
    return { stage: String(r.stage), seconds: Number(r.seconds ?? 0), finished_at: r.finished_at ?? null };
  } catch {
    return null;
  }
}

export function assembleReport(inp: AssembleInputs): ReportJson {
  const notes = [...(inp.notes ?? [])];
  let cal: CalibrationFile | null = null;
  if (inp.calibrationFile && existsSync(inp.calibrationFile)) cal = readCalibration(inp.calibrationFile);
  else if (inp.artifactDir && existsSync(join(inp.artifactDir, CALIBRATION_FILE))) cal = readCalibration(join(inp.artifactDir, CALIBRATION_FILE));
  const model = inp.model ?? (cal ? reportModelOf(cal, cal.model.family === 'llama') : null);
  if (!model) throw badInput('report', 'model', 'a calibration.json (or --model) to take the model dims from', 'neither', true);
  let artifact: ReportJson['artifact'] = null;
  if (inp.artifactDir && existsSync(inp.artifactDir)) {
    const m = readManifest(inp.artifactDir);
    artifact = { dir: inp.artifactDir, sha256: Object.fromEntries(Object.entries(m.files).map(([f, e]) => [f, e.sha256])) };
  }
  const validate = inp.validateFile && existsSync(inp.validateFile) ? readValidateFile(inp.validateFile) : null;
  const speed: SpeedTable[] = (inp.benchFiles ?? []).map(readSpeedFile);
  const stages = (inp.stageDirs ?? [])
    .map(stageTiming)
    .filter((s): s is StageTiming => s !== null)
    .sort((a, b) => (a.finished_at ?? '').localeCompare(b.finished_at ?? ''));
  return buildReport({
    title: inp.title ?? `polar report: ${model.name}`,
    toolVersion: inp.toolVersion,
    model,
    calibration: cal ? calibrationView(cal) : null,
    validate,
    artifact,
    speed,
    stages,
    notes,
  });
}

/** Stage folders of a run folder (those with a .stage.json), by stage name. */
export function runStageDirs(runDir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(runDir)) return out;
  for (const d of readdirSync(runDir, { withFileTypes: true })) {
    if (!d.isDirectory()) continue;
    const f = join(runDir, d.name, STAGE_RECORD);
    if (!existsSync(f)) continue;
    try {
      const r = JSON.parse(readFileSync(f, 'utf8'));
      if (typeof r.stage === 'string') out.set(r.stage, join(runDir, d.name));
    } catch {
      // a damaged record: not a stage folder we can use
    }
  }
  return out;
}

/** Benchmark outputs in a folder (*.json, *.jsonl), sorted by name. */
export function benchFilesIn(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => (f.endsWith('.json') || f.endsWith('.jsonl')) && !f.startsWith('.'))
    .sort()
    .map((f) => join(dir, f));
}

export function modelName(dir: string): string {
  return basename(dir);
}
