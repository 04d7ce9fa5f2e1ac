// `polar report`: report.html + report.json from a run folder (or from files given one by one), e.g. to
// add benchmark results to a finished run without rerunning it.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { CALIBRATION_FILE } from '../artifact/index.ts';
import { notFound } from '../errors.ts';
import { loadModel } from '../model/index.ts';
import { toolVersion } from '../pipeline/index.ts';
import { writeReport } from '../report/index.ts';
import { assembleReport, benchFilesIn, runStageDirs, VALIDATE_FILE } from '../report/assemble.ts';
import { action, log } from './common.ts';

interface ReportCliOptions {
  out?: string;
  model?: string;
  calibration?: string;
  validate?: string;
  artifact?: string;
  bench?: string[];
  title?: string;
  json?: boolean;
}

export function registerReport(program: Command): void {
  program
    .command('report')
    .description('write report.html (self-contained, plots) and report.json from a pipeline run folder')
    .argument('[runDir]', 'a `polar run` output folder (e.g. checkpoints/small-opt)')
    .option('--out <dir>', 'where to write report.html and report.json (default: the run folder)')
    .option('--model <dir>', 'model folder (default: the model dims recorded in calibration.json)')
    .option('--calibration <file>', 'calibration.json (default: <runDir>/calibrate/calibration.json, or the artifact\'s)')
    .option('--validate <file>', 'validate.json of the validate stage (default: <runDir>/validate/validate.json)')
    .option('--artifact <dir>', 'artifact folder (default: <runDir>/artifact)')
    .option('--bench <files...>', 'benchmark output (JSON, or JSON lines as `npm run bench:cpu` prints), one speed table per file')
    .option('--title <text>', 'report title')
    .option('--json', 'print report.json on stdout too')
    .addHelpText(
      'after',
      `
Plots (vega-lite, inlined with the vega libraries: the file opens offline): MLP union density vs batch size
per layer (true union, calibrated k, realised when validating), router recall vs k per layer, heads kept per
layer, perplexity vs work skipped (calibration candidates and validated points, Pareto front marked),
perplexity cost of removing heads per layer; tables: validation per batch size and per layer, speed (when
benchmark output is given or a bench stage ran), stage timings, artifact checksums. report.json holds the
data of every plot.

Examples:
  polar report checkpoints/small-opt
  polar report checkpoints/small-opt --bench bench-cpu.jsonl --out /tmp/report
`,
    )
    .action(
      action(async (runDirIn: string | undefined, opts: ReportCliOptions) => {
        const runDir = runDirIn ? resolve(runDirIn) : null;
        if (runDir && !existsSync(runDir)) throw notFound(runDir, 'run folder');
        const stages = runDir ? runStageDirs(runDir) : new Map<string, string>();
        const pick = (explicit: string | undefined, fallback: string | null): string | null => (explicit ? resolve(explicit) : fallback);
        const calibrationFile = pick(opts.calibration, stages.has('calibrate') ? join(stages.get('calibrate')!, CALIBRATION_FILE) : null);
        const validateFile = pick(opts.validate, stages.has('validate') ? join(stages.get('validate')!, VALIDATE_FILE) : null);
        const artifactDir = pick(opts.artifact, stages.get('export') ?? (runDir && existsSync(join(runDir, 'artifact')) ? join(runDir, 'artifact') : null));
        for (const [what, f] of [['--calibration', opts.calibration], ['--validate', opts.validate], ['--artifact', opts.artifact], ...(opts.bench ?? []).map((b) => ['--bench', b])] as const) {
          if (f && !existsSync(f)) throw notFound(resolve(f), `${what} file`);
        }
        const out = resolve(opts.out ?? runDir ?? '.');
        let model;
        if (opts.model) {
          const m = loadModel(opts.model);
          const s = m.spec;
          model = { name: basename(m.dir), family: s.family, layers: s.layers, hidden: s.hidden, ffn: s.ffn, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim, gated: s.gated };
        }
        const report = assembleReport({
          title: opts.title,
          toolVersion: toolVersion(),
          model,
          calibrationFile,
          validateFile,
          artifactDir,
          stageDirs: [...stages.values()],
          benchFiles: [...(stages.has('bench') ? benchFilesIn(stages.get('bench')!) : []), ...(opts.bench ?? []).map((b) => resolve(b))],
        });
        const files = writeReport(out, report);
        if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
        log(`report: wrote ${files.html} and ${files.json}${report.notes.length ? ` (${report.notes.join('; ')})` : ''}`);
      }),
    );
}
