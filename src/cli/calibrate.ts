// `polar calibrate --model <dir> --activations <dir> --routers <dir> --out <dir>`: the calibrate stage,
// usable alone. MLP top-k per layer and batch size (recall target on held-out tokens) and heads kept per
// layer (perplexity budget measured by decoding calibration text with the routers). Writes
// <out>/calibration.json; prints its path on stdout (or the file itself with --json).
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { action, floatOption, intListOption, intOption, log } from './common.ts';
import { MLP_DEFAULTS } from '../calibrate/mlp.ts';
import { calibrate, HEAD_DEFAULTS } from '../stages/calibrate/index.ts';

interface CalibrateCliOptions {
  model: string;
  activations: string;
  routers: string;
  out: string;
  batchSizes: number[];
  target: number;
  granule: number;
  draws: number;
  score: 'auto' | 'logit' | 'sigmoid';
  maxRows: number;
  checkFraction: number;
  seed: number;
  heads: 'fidelity' | 'fixed' | 'dense';
  headFraction: number;
  maxPplIncrease: number;
  mlpTargets?: number[];
  minUnits: number;
  corpus: string;
  textField: string;
  skipTokens?: number;
  tokens: number;
  window: number;
  evalBatch: number;
  sweepStop: number;
  workBatch: number;
  workContext: number;
  json?: boolean;
}

function floatListOption(name: string, min: number, max: number) {
  const one = floatOption(name, min, max);
  return (v: string): number[] => {
    const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
    if (!parts.length) throw new InvalidArgumentError(`${name}: expected a comma-separated list of numbers, received ${JSON.stringify(v)}`);
    return parts.map(one);
  };
}

export function registerCalibrate(program: Command): void {
  const h = HEAD_DEFAULTS;
  program
    .command('calibrate')
    .description(
      'calibrate the sparse runtime: per layer and batch size the MLP top-k whose summed router scores recall >= --target of the ' +
        "batch's true active neurons on held-out tokens, and per layer the heads (KV groups for GQA) each token keeps, searched against " +
        'a perplexity budget measured with the routers (layer 0 stays dense). Writes <out>/calibration.json.',
    )
    .requiredOption('--model <dir>', 'model folder (Hugging Face layout)')
    .requiredOption('--activations <dir>', 'activation shards written by `polar collect`')
    .requiredOption('--routers <dir>', 'router checkpoints written by `polar train`')
    .requiredOption('--out <dir>', 'output folder (calibration.json)')
    .option('--batch-sizes <list>', 'batch sizes to calibrate the MLP k for', intListOption('--batch-sizes', 1), MLP_DEFAULTS.batchSizes)
    .option('--target <x>', "recall of the batch's true active-neuron union the MLP top-k must reach", floatOption('--target', 0, 1), MLP_DEFAULTS.target)
    .option('--granule <n>', 'round k up to a multiple of this (0: 128, smaller for small MLPs: a power of two giving ~32 steps)', intOption('--granule', 0), 0)
    .option('--draws <n>', 'random batches per batch size', intOption('--draws', 1), MLP_DEFAULTS.draws)
    .addOption(new Option('--score <s>', 'how router scores are summed over a batch (auto: per layer, whichever needs fewer neurons)').choices(['auto', 'logit', 'sigmoid']).default('auto'))
    .option('--max-rows <n>', 'held-out rows read per layer', intOption('--max-rows', 2), 8192)
    .option('--check-fraction <x>', 'share of held-out sequences kept aside to check the recall reached', floatOption('--check-fraction', 0, 1), 0.5)
    .option('--seed <n>', 'seed of the random batches', intOption('--seed', 0), 0)
    .addOption(new Option('--heads <mode>', 'heads kept: fidelity (search against the perplexity budget), fixed (--head-fraction), dense').choices(['fidelity', 'fixed', 'dense']).default(h.mode))
    .option('--head-fraction <x>', 'fixed mode: share of heads (KV groups) each token keeps', floatOption('--head-fraction', 0, 1), h.fraction)
    .option('--max-ppl-increase <x>', 'perplexity budget: sparse <= (1 + x) dense on the calibration tokens', floatOption('--max-ppl-increase', 0), h.maxPplIncrease)
    .option('--mlp-targets <list>', 'MLP recall targets searched with the heads (default: --target and the stricter of 0.995, 0.999; list lower ones to allow them)', floatListOption('--mlp-targets', 0, 1))
    .option('--min-units <n>', 'fewest heads (KV groups) a layer keeps', intOption('--min-units', 0), h.minUnits)
    .option('--corpus <source>', 'calibration text: default:train, default:eval or a .txt/.jsonl/.arrow/.parquet file', h.corpus)
    .option('--text-field <name>', 'text column of .jsonl/.arrow/.parquet corpora', h.textField)
    .option('--skip-tokens <n>', 'corpus tokens skipped first (default: the collected token count, so the text follows it)', intOption('--skip-tokens', 0))
    .option('--tokens <n>', 'calibration tokens', intOption('--tokens', 2), h.tokens)
    .option('--window <n>', 'perplexity window', intOption('--window', 2), h.window)
    .option('--eval-batch <n>', 'windows decoded together (fidelity is judged with the MLP k of this batch size)', intOption('--eval-batch', 1), h.evalBatch)
    .option('--sweep-stop <x>', "stop a layer's head sweep once its perplexity increase passes this multiple of the budget", floatOption('--sweep-stop', 0), h.sweepStop)
    .option('--work-batch <n>', 'batch of the decode step the work model ranks feasible configurations at (KV bytes of kept heads + MLP weight bytes of kept neurons)', intOption('--work-batch', 1), h.workBatch)
    .option('--work-context <n>', 'context length of that decode step', intOption('--work-context', 1), h.workContext)
    .option('--json', 'print calibration.json on stdout')
    .action(
      action(async (o: CalibrateCliOptions) => {
        let interrupted = false;
        process.on('SIGINT', () => {
          if (interrupted) process.exit(130);
          interrupted = true;
          log('calibrate: stopping (Ctrl-C again to quit at once)');
        });
        const res = await calibrate({
          model: o.model,
          activations: o.activations,
          routers: o.routers,
          out: o.out,
          mlp: { batchSizes: o.batchSizes, target: o.target, granule: o.granule, draws: o.draws, score: o.score, seed: o.seed, maxRows: o.maxRows, checkFraction: o.checkFraction },
          heads: {
            mode: o.heads,
            fraction: o.headFraction,
            maxPplIncrease: o.maxPplIncrease,
            mlpTargets: o.mlpTargets ?? null,
            minUnits: o.minUnits,
            corpus: o.corpus,
            textField: o.textField,
            skipTokens: o.skipTokens ?? null,
            tokens: o.tokens,
            window: o.window,
            evalBatch: o.evalBatch,
            sweepStop: o.sweepStop,
            workBatch: o.workBatch,
            workContext: o.workContext,
          },
          log,
          shouldStop: () => interrupted,
        });
        process.stdout.write(o.json ? JSON.stringify(res.calibration, null, 2) + '\n' : `${res.file}\n`);
      }),
    );
}
