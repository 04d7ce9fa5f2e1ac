// `polar collect`: activations of a dense run over a corpus -> Arrow shards (the pipeline's first stage).
import { Option, type Command } from 'commander';
import { collect, COLLECT_DEFAULTS } from '../stages/collect/collect.ts';
import { createProgress, formatBytes } from '../progress/index.ts';
import { action, intListOption, intOption, log } from './common.ts';

interface CollectCliOptions {
  out: string;
  text?: string;
  textField: string;
  tokens: number;
  seqLen: number;
  batch: number;
  layers?: number[];
  routerDtype: 'f16' | 'f32';
  mlpActivity?: 'bits' | 'f16' | 'none';
  shardTokens?: number;
  threads?: number;
  force?: boolean;
  json?: boolean;
}

export function registerCollect(program: Command): void {
  program
    .command('collect')
    .description('run the dense model over a corpus and record, per layer and token, what the routers learn from (Arrow shards)')
    .argument('<modelDir>', 'Hugging Face model folder (config.json, *.safetensors, tokenizer.json)')
    .requiredOption('--out <dir>', 'output folder for the shards (*.arrow) and manifest.json')
    .option('--text <file>', 'corpus: a .txt, .jsonl, .arrow/.feather or .parquet file, or default:train / default:eval (default: default:train)')
    .option('--text-field <name>', 'text column of .jsonl/.arrow/.parquet corpora', COLLECT_DEFAULTS.textField)
    .option('--tokens <n>', 'tokens to collect (all sequences together)', intOption('--tokens', 1), COLLECT_DEFAULTS.tokens)
    .option('--seq-len <n>', 'tokens per sequence, <s> included (at most the model\'s positions)', intOption('--seq-len', 2), COLLECT_DEFAULTS.seqLen)
    .option('--batch <n>', 'sequences per forward call', intOption('--batch', 1, 4096), COLLECT_DEFAULTS.batch)
    .option('--layers <list>', 'layers to record, comma-separated, 0-based (default: all)', intListOption('--layers', 0))
    .addOption(new Option('--router-dtype <dtype>', 'storage of the router input').choices(['f16', 'f32']).default(COLLECT_DEFAULTS.routerDtype))
    .addOption(
      new Option('--mlp-activity <kind>', 'MLP record: bit-packed act > 0 (ReLU models), fp16 magnitudes, or nothing (default: bits for ReLU, none for gated)').choices([
        'bits',
        'f16',
        'none',
      ]),
    )
    .option(
      '--shard-tokens <n>',
      `tokens per shard file, rounded down to whole sequences: the unit of resume (default: ${COLLECT_DEFAULTS.shardTokens}, or fewer so that a range of all layers stays under ${COLLECT_DEFAULTS.shardMemory / 2 ** 20} MiB in memory)`,
      intOption('--shard-tokens', 1),
    )
    .option('--threads <n>', 'CPU threads of the runtime (default: all cores, or POLAR_THREADS)', intOption('--threads', 1, 1024))
    .option('--force', 'if --out holds a collection made with other inputs, delete its shards and start over')
    .option('--json', 'print a JSON summary on stdout (progress stays on stderr)')
    .addHelpText(
      'after',
      `
What is recorded, per layer and token (schema: data/README.md):
  router_input  output of the layer's pre-attention norm (what the routers see), fp16 (or --router-dtype f32)
  mlp_active    ReLU models: which MLP neurons are > 0, bit-packed (--mlp-activity bits)
  mlp_act       gated models, optional: SiLU(gate)*up as fp16 (--mlp-activity f16)
  head_norm     L2 norm of each attention head's output before the output projection, fp32
  seq_id, position  which sequence and where in it (training holds out whole sequences)

Corpus: paragraphs (split at blank lines) are tokenized and each followed by </s>; the token stream is cut
into sequences of --seq-len tokens that each start with <s>. A .jsonl may instead hold {"input_ids": [...]}
lines: token sequences used as they are. Without --text, the default corpus's training split is used
(State of the Union 1790-2009 and Moby-Dick 1-125, from npm packages; see data/README.md).

Resume and caching: shards are written as <name>.tmp, then renamed, then recorded in <out>/manifest.json.
Rerun the same command after an interruption to continue after the last complete shard range (the result
is byte-identical to an uninterrupted run); rerun it after completion and it does nothing.

Size: about 2*hidden + ffn/8 + 4*heads + 8 bytes per token and layer (fp16 router input, ReLU model).

Examples:
  polar collect data/models/small-opt --out checkpoints/small-opt/collect
  polar collect data/models/tiny-llama --out /tmp/acts --tokens 20000 --mlp-activity f16
  polar collect my-opt --out acts --text corpus.parquet --text-field content --layers 1,2,3
`,
    )
    .action(
      action(async (modelDir: string, opts: CollectCliOptions) => {
        const display = createProgress();
        try {
          const res = await collect({
            modelDir,
            out: opts.out,
            text: opts.text,
            textField: opts.textField,
            tokens: opts.tokens,
            seqLen: opts.seqLen,
            batch: opts.batch,
            layers: opts.layers,
            routerDtype: opts.routerDtype,
            mlpActivity: opts.mlpActivity,
            shardTokens: opts.shardTokens,
            threads: opts.threads,
            onMismatch: opts.force ? 'restart' : 'error',
            progress: display.task('collect', 'tok'),
            log: (m) => display.log(m),
          });
          display.close();
          const m = res.manifest;
          if (opts.json) {
            process.stdout.write(
              JSON.stringify({
                out: res.out,
                cached: res.cached,
                tokens: m.tokens,
                sequences: m.sequences,
                layers: m.settings.layers,
                shards: res.files.length,
                bytes: m.bytes,
                bytes_per_token: m.bytes_per_token,
                bytes_per_token_layer: m.bytes_per_token / m.settings.layers.length,
                new_tokens: res.newTokens,
                resumed_tokens: res.resumedTokens,
                seconds: res.seconds,
                tokens_per_second: res.tokensPerSecond,
              }) + '\n',
            );
          } else {
            log(
              `collect: ${res.out}: ${m.tokens} tokens (${m.sequences} sequences of <= ${m.settings.seq_len}) x ${m.settings.layers.length} layers in ${res.files.length} shards, ` +
                `${formatBytes(m.bytes)} = ${m.bytes_per_token.toFixed(1)} bytes/token (${(m.bytes_per_token / m.settings.layers.length).toFixed(1)} per layer)` +
                (res.cached ? '; already complete, nothing done' : `; ${res.newTokens} new tokens in ${res.seconds.toFixed(1)} s (${res.tokensPerSecond.toFixed(0)} tokens/s)`),
            );
          }
        } finally {
          display.close();
        }
      }),
    );
}
