// `polar run`: the whole pipeline (collect -> train -> calibrate -> export -> validate -> report) through
// the pipeline runner (src/pipeline): cached stages are skipped, an interrupted stage resumes, one
// progress display, and a final summary table. Exits 3 when validation failed (after the report is written).
import { Argument, type Command } from 'commander';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PolarError } from '../errors.ts';
import { defaultOutDir, loadPipeline, runPipeline, type PipelineResult, type StageReport } from '../pipeline/index.ts';
import { createProgress, formatDuration } from '../progress/index.ts';
import { action, log } from './common.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_PIPELINE = join(root, 'pipelines', 'small-opt.yaml');

interface RunCliOptions {
  out?: string;
  model?: string;
  trainText?: string;
  evalText?: string;
  until?: string;
  force?: string[];
  json?: boolean;
}

const pct = (v: number, d = 2) => `${(100 * v).toFixed(d)}%`;
/** A path relative to the current directory when it lies below it, else absolute. */
const show = (p: string) => {
  const r = relative(process.cwd(), p);
  return r && !r.startsWith('..') ? r : p;
};
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** One line of what a stage produced, from its summary (known stages; nothing for others). */
export function stageResultLine(r: StageReport): string {
  const s = r.summary as Record<string, any>;
  switch (r.stage) {
    case 'collect':
      return num(s.tokens) !== null ? `${s.tokens} tokens x ${Array.isArray(s.layers) ? s.layers.length : '?'} layers, ${s.shards ?? '?'} shards` : '';
    case 'train': {
      const layers = Array.isArray(s.layers) ? s.layers : [];
      return `${layers.length} layer(s) of routers${s.backend ? `, backend ${s.backend}` : ''}`;
    }
    case 'calibrate': {
      const heads = s.heads_kept && typeof s.heads_kept === 'object' ? Object.entries(s.heads_kept).map(([l, k]) => `${l}:${k}`).join(' ') : '';
      const mlp = s.mlp_k && typeof s.mlp_k === 'object' && Array.isArray(s.batch_sizes) && s.batch_sizes.length ? Object.entries(s.mlp_k as Record<string, number[]>).map(([l, k]) => `${l}:${k[0]}`).join(' ') : '';
      return [mlp && `MLP k at b=${s.batch_sizes[0]} ${mlp}`, heads && `heads ${heads}/${s.units ?? '?'}`].filter(Boolean).join(', ');
    }
    case 'export':
      return s.artifact_dir ? show(String(s.artifact_dir)) : '';
    case 'validate': {
      const res = Array.isArray(s.results) ? s.results : [];
      return res.map((x: any) => `b=${x.batch_size} ${x.ppl_increase >= 0 ? '+' : ''}${pct(x.ppl_increase)}`).join(', ') + (s.passed === true ? ' - passed' : s.passed === false ? ' - FAILED' : '');
    }
    case 'report':
      return s.html ? show(String(s.html)) : '';
    default:
      return '';
  }
}

export function summaryTable(res: PipelineResult): string {
  const rows = res.stages.map((r) => [r.stage, r.cached ? 'cached' : 'ran', r.cached ? '-' : formatDuration(r.seconds), stageResultLine(r)]);
  const head = ['stage', 'status', 'time', 'result'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line), '', `total ${formatDuration(res.seconds)} (${res.stages.filter((r) => !r.cached).length} stage(s) ran, ${res.stages.filter((r) => r.cached).length} cached); output: ${res.out}`].join('\n');
}

/** Per-layer MLP density and heads kept at batch 1 (from the validate summary). */
export function validationLayers(res: PipelineResult): string {
  const v = res.stages.find((r) => r.stage === 'validate');
  const layers = v && Array.isArray((v.summary as any).layers_b1) ? ((v.summary as any).layers_b1 as any[]) : [];
  if (!layers.length) return '';
  const b1 = ((v!.summary as any).results ?? [])[0];
  return (
    `validation at batch ${b1?.batch_size ?? 1}: ` +
    layers.map((l) => `layer ${l.layer} MLP ${pct(l.mlp_density, 1)} heads ${Number(l.heads_kept).toFixed(2)}`).join(', ')
  );
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run a whole pipeline: collect -> train -> calibrate -> export -> validate -> report, with caching and resume')
    .addArgument(new Argument('[pipeline]', 'pipeline YAML file (pipelines/*.yaml)').default(DEFAULT_PIPELINE, 'pipelines/small-opt.yaml of polar'))
    .option('--out <dir>', 'output folder (default: checkpoints/<pipeline name>/ in the current directory)')
    .option('--model <dir>', 'model folder (overrides the pipeline file\'s `model:`)')
    .option('--train-text <file>', 'training corpus (overrides corpus.train): .txt/.jsonl/.arrow/.parquet or default:train')
    .option('--eval-text <file>', 'validation text (overrides corpus.eval): .txt/.jsonl/.arrow/.parquet or default:eval')
    .option('--until <stage>', 'stop after this stage')
    .option('--force <stages>', 'rerun these stages (comma-separated) even when cached', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--json', 'print a JSON summary on stdout (progress on stderr)')
    .addHelpText(
      'after',
      `
The output folder holds one folder per stage (collect/, train/, calibrate/, artifact/, validate/, report/),
each with a .stage.json record, and report.html + report.json. A stage is skipped when its record says
"done" with the same key: a hash of the tool version, the stage's options, the model's identity, its
inputs' keys and external inputs (corpus hashes). So a second run with the same inputs does no work, and a
change reruns the stages it affects. A run killed at any point (Ctrl-C, SIGKILL, power loss) resumes where
it stopped when rerun: collect after its last complete shard, train after its last finished layer, the
others from the start of the interrupted stage; the artifact is the same as an uninterrupted run's.

Exit status: 0 when the pipeline finished and validation passed, 3 when a validation threshold was
exceeded (report.html is still written), 2 for bad input, 1 for runtime failures, 130 when interrupted.

Pipelines: pipelines/small-opt.yaml (default, the bundled 4-layer OPT model), pipelines/small-llama.yaml,
and pipelines for real checkpoints a user brings (give the model with --model). Schema: docs/pipeline.md.

Examples:
  polar run
  polar run pipelines/small-llama.yaml --out /tmp/run
  polar run pipelines/opt-6.7b.yaml --model ~/models/opt-6.7b
  polar run --until calibrate            (then inspect checkpoints/small-opt/calibrate/calibration.json)
  polar run --force validate,report
`,
    )
    .action(
      action(async (file: string, opts: RunCliOptions) => {
        const cfg = loadPipeline(file, { model: opts.model, trainText: opts.trainText, evalText: opts.evalText });
        const out = resolve(opts.out ?? defaultOutDir(cfg));
        const ac = new AbortController();
        let interrupts = 0;
        const onSignal = () => {
          interrupts++;
          if (interrupts > 1) {
            process.stderr.write('\npolar run: interrupted again, exiting now (rerun to resume)\n');
            process.exit(130);
          }
          process.stderr.write('\npolar run: interrupt: stopping at the next safe point (Ctrl-C again to exit now; rerun to resume)\n');
          ac.abort();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        const display = createProgress();
        log(`polar run: ${cfg.name} (${show(cfg.file)}): ${cfg.stages.map((s) => s.name).join(' -> ')}; model ${cfg.model}; output ${out}`);
        let res: PipelineResult;
        try {
          res = await runPipeline(cfg, { out, until: opts.until, force: opts.force, progress: display, signal: ac.signal });
        } catch (e) {
          display.close();
          if (ac.signal.aborted) throw new PolarError('interrupted', `pipeline ${cfg.name} interrupted (rerun the same command to resume): ${(e as Error).message}`, { exitCode: 130 });
          throw e;
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
        display.close();
        const v = res.stages.find((r) => r.stage === 'validate');
        const passed = v ? (v.summary as any).passed !== false : null;
        if (opts.json) {
          process.stdout.write(
            JSON.stringify({
              pipeline: cfg.name,
              out: res.out,
              seconds: res.seconds,
              stages: res.stages.map((r) => ({ stage: r.stage, cached: r.cached, seconds: r.seconds, key: r.key, dir: r.dir, summary: r.summary })),
              validation_passed: passed,
            }) + '\n',
          );
        } else {
          process.stdout.write(summaryTable(res) + '\n');
          const layers = validationLayers(res);
          if (layers) process.stdout.write(layers + '\n');
        }
        if (passed === false) {
          const f = (v!.summary as any).failures;
          throw new PolarError('threshold', `validation failed: ${Array.isArray(f) ? f.join('; ') : 'see the validate stage'} (report: ${join(res.out, 'report.html')})`);
        }
      }),
    );
}
