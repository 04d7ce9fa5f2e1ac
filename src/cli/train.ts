// `polar train <activations> --out <dir>`: train the MLP and head routers of every collected layer (the
// train stage, usable alone). Progress and messages on stderr; the summary (train.json) path on stdout, or
// the summary itself with --json.
import type { Command } from 'commander';
import { Option } from 'commander';
import { join, resolve } from 'node:path';
import { action, floatOption, intListOption, intOption, log } from './common.ts';
import { BACKEND_CHOICES } from '../tfjs/backends.ts';
import { TRAIN_DEFAULTS } from '../routers/trainer.ts';
import { TRAIN_SUMMARY, trainRouters } from '../stages/train/index.ts';

interface TrainCliOptions {
  out: string;
  model?: string;
  layers?: number[];
  backend?: string;
  jobs: number;
  rank?: number;
  lr: number;
  weightDecay: number;
  batch: number;
  epochs: number;
  patience: number;
  minDelta: number;
  valFraction: number;
  seed: number;
  headTopFraction: number;
  routers: 'both' | 'mlp' | 'attn';
  shuffleBuffer: number;
  fresh?: boolean;
  json?: boolean;
}

export function registerTrain(program: Command): void {
  const d = TRAIN_DEFAULTS;
  program
    .command('train')
    .description(
      'train per layer the MLP router (ReLU models: d -> r -> ffn, weighted BCE, AdamW) and the head router (d -> heads) ' +
        'from collected activations; writes <out>/layer-NNN/{router.safetensors,metrics.jsonl}, <out>/train.json and <out>/metrics.jsonl. ' +
        'Finished layers are skipped and an interrupted one resumes after its last epoch.',
    )
    .argument('<activations>', 'folder of activation shards written by `polar collect`')
    .requiredOption('--out <dir>', 'output folder')
    .option('--model <dir>', 'model folder: refuse activations of another model')
    .option('--layers <list>', 'layers to train, e.g. 1,2,3 (default: every collected layer but 0, which stays dense)', intListOption('--layers', 0))
    .addOption(new Option('--backend <name>', 'force a TensorFlow.js backend (default: the first that loads, in this order)').choices([...BACKEND_CHOICES]))
    .option('--jobs <n>', 'layers trained in parallel processes (each gets cores/n threads)', intOption('--jobs', 1, 256), 1)
    .option('--rank <r>', 'MLP router rank r (default: min(1024, hidden))', intOption('--rank', 1))
    .option('--lr <x>', 'AdamW learning rate', floatOption('--lr', 0), d.lr)
    .option('--weight-decay <x>', 'AdamW weight decay', floatOption('--weight-decay', 0), d.weightDecay)
    .option('--batch <n>', 'batch size', intOption('--batch', 1), d.batch)
    .option('--epochs <n>', 'maximum epochs', intOption('--epochs', 1), d.epochs)
    .option('--patience <n>', 'early stopping: epochs without improvement of the selection metric (MLP: F1, heads: recall)', intOption('--patience', 1), d.patience)
    .option('--min-delta <x>', 'early stopping: smallest improvement of the selection metric that resets the patience', floatOption('--min-delta', 0, 1), d.minDelta)
    .option('--val-fraction <x>', 'fraction of sequences held out for validation', floatOption('--val-fraction', 0, 1), d.valFraction)
    .option('--seed <n>', 'seed of the initialisation, shuffles and validation split', intOption('--seed', 0), d.seed)
    .option('--head-top-fraction <x>', 'fraction of heads labelled important per token (by output norm)', floatOption('--head-top-fraction', 0, 1), d.headTopFraction)
    .addOption(new Option('--routers <which>', 'routers to train').choices(['both', 'mlp', 'attn']).default(d.routers))
    .option('--shuffle-buffer <MiB>', 'memory of the shuffle buffer (a full shuffle when every row fits)', floatOption('--shuffle-buffer', 1), d.shuffleBufferMiB)
    .option('--fresh', 'discard earlier results of these layers in --out')
    .option('--json', 'print the summary as JSON on stdout')
    .action(
      action(async (activations: string, o: TrainCliOptions) => {
        // Ctrl-C: stop between batches (the last completed epoch of each layer is on disk); twice: now.
        let interrupted = false;
        process.on('SIGINT', () => {
          if (interrupted) process.exit(130);
          interrupted = true;
          log('train: stopping (Ctrl-C again to quit at once)');
        });
        const summary = await trainRouters({
          shouldStop: () => interrupted,
          activations,
          out: o.out,
          model: o.model,
          layers: o.layers,
          backend: o.backend,
          jobs: o.jobs,
          rank: o.rank,
          lr: o.lr,
          weightDecay: o.weightDecay,
          batch: o.batch,
          epochs: o.epochs,
          patience: o.patience,
          minDelta: o.minDelta,
          valFraction: o.valFraction,
          seed: o.seed,
          headTopFraction: o.headTopFraction,
          routers: o.routers,
          shuffleBufferMiB: o.shuffleBuffer,
          fresh: o.fresh,
          log,
        });
        const file = join(resolve(o.out), TRAIN_SUMMARY);
        if (o.json) process.stdout.write(JSON.stringify(summary) + '\n');
        else {
          for (const l of summary.layers) {
            const mlp = l.mlp ? `mlp F1 ${fmt(l.mlp.metrics.f1)} k99 ${l.mlp.metrics.k99 ?? '-'} (epoch ${l.mlp.bestEpoch})` : 'mlp -';
            const attn = l.attn ? `heads recall ${fmt(l.attn.metrics.headRecall)} (epoch ${l.attn.bestEpoch})` : 'heads -';
            log(`layer ${l.layer}: ${mlp}; ${attn}`);
          }
          process.stdout.write(`${file}\n`);
        }
      }),
    );
}

function fmt(v: unknown): string {
  return typeof v === 'number' ? v.toFixed(4) : '-';
}
