import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { loadModel } from '../model/index.ts';
import { openRuntimeModel } from '../runtime/index.ts';
import { protocolTokens } from '../eval/protocol.ts';
import { perplexity } from '../eval/perplexity.ts';
import { notFound } from '../errors.ts';
import { action, backendOption, intOption, log } from './common.ts';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('dense perplexity of a model on a text file (protocol of the reference models)')
    .argument('<modelDir>', 'Hugging Face model folder')
    .requiredOption('--text <file>', 'UTF-8 text; paragraphs separated by blank lines')
    .option('--window <n>', 'tokens per window (stride = window)', intOption('--window', 2), 256)
    .option('--json', 'print {"ppl": ..., "tokens": ...} and nothing else on stdout')
    .option('--backend <name>', 'runtime backend: cpu, or cuda (NVIDIA GPU; needs the CUDA build)', backendOption, 'cpu')
    .addHelpText(
      'after',
      `
Protocol: the text is split into paragraphs at blank lines; each is tokenized without special tokens
and followed by </s>; all are concatenated after one <s>, cut into windows of --window tokens (the last
one shorter), and perplexity = exp(mean next-token NLL over every predicted token of every window).

Example:
  polar eval data/models/small-opt --text data/fixtures/corpus/eval.txt --json
`,
    )
    .action(
      action(async (dir: string, opts: { text: string; window: number; json?: boolean; backend: 'cpu' | 'cuda' }) => {
        if (!existsSync(opts.text)) throw notFound(opts.text, 'text file (--text)');
        const model = loadModel(dir);
        if (opts.window > model.spec.maxPositions) {
          log(`polar: --window ${opts.window} is longer than the model's ${model.spec.maxPositions} positions; using ${model.spec.maxPositions}`);
          opts.window = model.spec.maxPositions;
        }
        const tokens = protocolTokens(readFileSync(opts.text, 'utf8'), model.tokenizer(), model.spec, opts.text);
        const rt = openRuntimeModel(model, { backend: opts.backend });
        const total = Math.ceil(tokens.length / opts.window);
        const tty = process.stderr.isTTY;
        try {
          const r = await perplexity(model, rt, tokens, opts.window, (done) => {
            if (tty) process.stderr.write(`\reval: ${done}/${total} windows`);
          });
          if (tty) process.stderr.write('\n');
          if (opts.json) {
            process.stdout.write(JSON.stringify({ ppl: r.ppl, tokens: r.tokens }) + '\n');
          } else {
            process.stdout.write(`perplexity ${r.ppl.toFixed(4)} over ${r.tokens} predicted tokens (${r.windows} windows of ${opts.window}, ${(r.tokens / r.seconds).toFixed(0)} tokens/s, backend ${rt.backend})\n`);
          }
        } finally {
          rt.dispose();
        }
      }),
    );
}
