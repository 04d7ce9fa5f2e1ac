// `polar validate`: the sparse runtime driven by an exported artifact, against the dense model, as
// decoding runs at each batch size; exits non-zero when a threshold is exceeded.
import type { Command } from 'commander';
import { loadModel } from '../model/index.ts';
import { PolarError } from '../errors.ts';
import { createProgress } from '../progress/index.ts';
import { DEFAULT_MAX_TOKENS, failures, validateArtifact, validateJson, validateWindow, validationText, type BatchResult, type Thresholds } from '../validate/index.ts';
import { action, backendOption, floatOption, intListOption, intOption, log } from './common.ts';

interface ValidateCliOptions {
  model: string;
  text?: string;
  textField: string;
  batchSizes: number[];
  maxTokens: number;
  window?: number;
  maxPplIncrease: number;
  minTop1?: number;
  maxKl?: number;
  threads?: number;
  backend: 'cpu' | 'cuda';
  json?: boolean;
}

const pct = (v: number, d = 2) => `${(100 * v).toFixed(d)}%`;

/** The human-readable tables (stderr). */
export function formatValidation(results: BatchResult[], heads: number): string {
  const lines: string[] = [];
  lines.push('batch  dense ppl  sparse ppl  increase   top-1       KL');
  for (const r of results) {
    lines.push(
      `${String(r.batch_size).padStart(5)}  ${r.dense_ppl.toFixed(3).padStart(9)}  ${r.sparse_ppl.toFixed(3).padStart(10)}  ${((r.ppl_increase >= 0 ? '+' : '') + pct(r.ppl_increase, 3)).padStart(8)}  ${pct(r.top1_agreement).padStart(6)}  ${r.kl.toFixed(5).padStart(7)}`,
    );
  }
  for (const r of results) {
    lines.push('');
    lines.push(`batch ${r.batch_size}: layer  MLP density  MLP recall  heads kept  head recall`);
    for (const l of r.layers) {
      lines.push(
        `${' '.repeat(String(r.batch_size).length + 7)}${String(l.layer).padStart(5)}  ${pct(l.mlp_density, 1).padStart(11)}  ${l.mlp_recall.toFixed(4).padStart(10)}  ${`${l.heads_kept.toFixed(2)}/${heads}`.padStart(10)}  ${l.head_recall.toFixed(4).padStart(11)}`,
      );
    }
  }
  return lines.join('\n');
}

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('validate a router artifact: sparse vs dense perplexity, top-1 agreement, KL and per-layer density/recall, measured as decoding runs')
    .argument('<artifact>', 'artifact folder written by `polar export` (manifest.json, routers.safetensors)')
    .requiredOption('--model <dir>', 'the Hugging Face model folder the artifact was made for')
    .option('--text <file>', 'validation text: .txt (paragraphs at blank lines), .jsonl/.arrow/.parquet with a text column, or default:eval (default: default:eval, the default corpus\'s eval split)')
    .option('--text-field <name>', 'text column of .jsonl/.arrow/.parquet files', 'text')
    .option('--batch-sizes <list>', 'batch sizes to decode at, comma-separated', intListOption('--batch-sizes', 1), [1, 16])
    .option('--max-tokens <n>', 'use the first N tokens of the text (0: all of it)', intOption('--max-tokens', 0), DEFAULT_MAX_TOKENS)
    .option('--window <n>', 'tokens per window (default 256, at most the model\'s positions)', intOption('--window', 2))
    .option('--max-ppl-increase <x>', 'fail when sparse perplexity exceeds dense by more than this fraction at any batch size', floatOption('--max-ppl-increase', 0), 0.01)
    .option('--min-top1 <x>', 'fail when top-1 agreement falls below this fraction', floatOption('--min-top1', 0, 1))
    .option('--max-kl <x>', 'fail when the mean KL(dense||sparse) exceeds this', floatOption('--max-kl', 0))
    .option('--threads <n>', 'CPU threads of the runtime (default: all cores, or POLAR_THREADS)', intOption('--threads', 1, 1024))
    .option('--backend <name>', 'runtime backend: cpu, or cuda (NVIDIA GPU; needs the CUDA build)', backendOption, 'cpu')
    .option('--json', 'print {"results": [...]} on stdout and nothing else there (progress and verdict on stderr)')
    .addHelpText(
      'after',
      `
How it measures: the text becomes the token stream of the perplexity protocol (paragraphs at blank lines,
each followed by </s>, one <s> first; as \`polar eval\`), cut into windows of 256 tokens. For each batch size
b the windows are grouped b at a time and decoded one position per step, with a KV cache, by the dense model
and by the sparse runtime in lockstep. At every step the sparse MLP computes one union of neurons for the b
tokens decoded together (the router's top-k of their summed scores, with the artifact's k for batch size b:
that of the smallest calibrated batch size >= b), and each token keeps its own heads. Layer 0 stays dense.

Output per batch size: dense_ppl, sparse_ppl, ppl_increase (sparse/dense - 1), top1_agreement (argmax equal),
kl (mean KL(dense||sparse) per predicted token), and per layer:
  mlp_density  mean share of MLP neurons computed per step
  heads_kept   mean heads computed per token (a kept KV group counts all its heads)
  mlp_recall   mean share of the step's true active-neuron union (dense run, act > 0) that was kept
  head_recall  mean share of a token's top-m heads by dense output norm that were kept (m = heads it kept)

Exit status: 0 when every threshold holds, 3 when one is exceeded (the results are printed first), 2 for bad
input (e.g. an artifact made for another model), 1 for runtime failures.

--json prints exactly:
  {"results":[{"batch_size","dense_ppl","sparse_ppl","ppl_increase","top1_agreement","kl",
               "layers":[{"layer","mlp_density","heads_kept","mlp_recall","head_recall"}]}]}

Examples:
  polar validate checkpoints/small-opt/artifact --model data/models/small-opt
  polar validate art --model my-opt --text valid.txt --batch-sizes 1,8,32 --max-tokens 0 --json
`,
    )
    .action(
      action(async (artifactDir: string, opts: ValidateCliOptions) => {
        const model = loadModel(opts.model);
        const window = opts.window !== undefined ? Math.min(opts.window, model.spec.maxPositions) : validateWindow(model.spec.maxPositions);
        const text = await validationText(opts.text ?? 'default:eval', model, opts.maxTokens === 0 ? null : opts.maxTokens, opts.textField);
        const thresholds: Thresholds = { maxPplIncrease: opts.maxPplIncrease, minTop1: opts.minTop1, maxKl: opts.maxKl };
        const display = createProgress();
        log(
          `validate: ${artifactDir} on ${model.dir}: ${text.tokens.length} tokens of ${text.name}` +
            (text.tokens.length < text.totalTokens ? ` (first ${text.tokens.length} of ${text.totalTokens}; --max-tokens 0 for all)` : '') +
            `, windows of ${window}, batch sizes ${opts.batchSizes.join(', ')}`,
        );
        const tasks = new Map<number, ReturnType<typeof display.task>>();
        let out;
        try {
          out = await validateArtifact({
            artifact: artifactDir,
            model,
            tokens: text.tokens,
            batchSizes: opts.batchSizes,
            window,
            threads: opts.threads,
            backend: opts.backend,
            onProgress: (b, p) => {
              let t = tasks.get(b);
              if (!t) {
                for (const other of tasks.values()) other.end();
                tasks.set(b, (t = display.task(`validate b=${b}`, 'tok')));
                t.start(p.total);
              }
              t.set(p.done);
            },
          });
        } finally {
          for (const t of tasks.values()) t.end();
          display.close();
        }
        const results = out.results;
        if (opts.json) process.stdout.write(JSON.stringify(validateJson(results)) + '\n');
        else process.stdout.write(formatValidation(results, model.spec.heads) + '\n');
        const failed = failures(results, thresholds);
        log(`validate: ${out.tokens} predicted tokens per batch size in ${out.seconds.toFixed(1)} s`);
        if (failed.length) throw new PolarError('threshold', `validation failed: ${failed.join('; ')}`);
        log(`validate: passed (perplexity increase <= ${pct(thresholds.maxPplIncrease)} at every batch size${thresholds.minTop1 !== undefined ? `, top-1 >= ${pct(thresholds.minTop1)}` : ''}${thresholds.maxKl !== undefined ? `, KL <= ${thresholds.maxKl}` : ''})`);
      }),
    );
}
