// The report stage: report.json and report.html (self-contained, vega-lite plots) from what the earlier
// stages wrote: calibrate's calibration.json, the artifact's manifest, validate's validate.json, the
// stages' timings, and benchmark output when there is some (a `bench` stage's *.json/*.jsonl, or files
// named in the options). Written in its folder and copied to the run folder (<out>/report.html, report.json).
// Options (pipelines/*.yaml, stages.report):
//   title   default "polar report: <pipeline name>"
//   bench   benchmark output files (JSON or JSON lines), relative to the pipeline file
import { copyFileSync, existsSync, renameSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { CALIBRATION_FILE } from '../../artifact/index.ts';
import { badInput, notFound } from '../../errors.ts';
import { optionReader } from '../../pipeline/options.ts';
import type { FingerprintContext, OptionsWhere, PipelineConfig, StageContext, StageResult } from '../../pipeline/types.ts';
import { writeReport } from '../../report/index.ts';
import { assembleReport, benchFilesIn, VALIDATE_FILE } from '../../report/assemble.ts';
import { sha256OfFile } from '../../artifact/index.ts';

export interface ReportStageOptions {
  title: string;
  bench: string[];
}

export const description = 'write report.html (plots) and report.json from the calibration, the artifact and the validation';
export const version = 1;
export const runFiles = ['report.html', 'report.json'] as const;

export function options(raw: Record<string, unknown>, where: OptionsWhere, pipeline: PipelineConfig): ReportStageOptions {
  const r = optionReader(raw, where);
  const base = pipeline.file === '<inline>' ? process.cwd() : dirname(pipeline.file);
  const benchRaw = r.raw('bench');
  let bench: string[] = [];
  if (benchRaw !== undefined && benchRaw !== null) {
    const list = typeof benchRaw === 'string' ? [benchRaw] : benchRaw;
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'string' && x.length)) throw badInput(where.file, `${where.field}.bench`, 'a file path or a list of file paths (benchmark output)', list);
    bench = list.map((f: string) => (isAbsolute(f) ? f : resolve(base, f)));
    for (const f of bench) if (!existsSync(f)) throw notFound(f, `benchmark output (${where.field}.bench)`);
  }
  const o = { title: r.str('title', `polar report: ${pipeline.name}`), bench };
  r.done();
  return o;
}

/** Benchmark files are inputs that are not options (their content). */
export function fingerprint(ctx: FingerprintContext<ReportStageOptions>): unknown {
  return { bench: ctx.options.bench.map((f) => sha256OfFile(f)) };
}

export async function run(ctx: StageContext<ReportStageOptions>): Promise<StageResult> {
  const task = ctx.progress('files');
  task.start(2);
  const inp = ctx.inputs;
  const model = ctx.model();
  const s = model.spec;
  const benchFiles = [...(inp.bench ? benchFilesIn(inp.bench.dir) : []), ...ctx.options.bench];
  const report = assembleReport({
    title: ctx.options.title,
    toolVersion: ctx.toolVersion,
    model: { name: basename(model.dir), family: s.family, layers: s.layers, hidden: s.hidden, ffn: s.ffn, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, gated: s.gated },
    calibrationFile: inp.calibrate ? join(inp.calibrate.dir, CALIBRATION_FILE) : null,
    validateFile: inp.validate ? join(inp.validate.dir, VALIDATE_FILE) : null,
    artifactDir: inp.export ? inp.export.dir : null,
    stageDirs: Object.values(inp).map((o) => o.dir),
    benchFiles,
  });
  const { json, html } = writeReport(ctx.dir, report);
  task.advance(1);
  for (const f of [json, html]) {
    const dest = join(ctx.runDir, basename(f));
    copyFileSync(f, `${dest}.tmp`);
    renameSync(`${dest}.tmp`, dest);
  }
  task.advance(1);
  task.end(`${join(ctx.runDir, 'report.html')}`);
  return {
    summary: {
      html: join(ctx.runDir, 'report.html'),
      json: join(ctx.runDir, 'report.json'),
      plots: report.union_density.length + report.recall_vs_k.length > 0,
      validated: report.validate?.passed ?? null,
      speed_tables: report.speed.length,
    },
  };
}
