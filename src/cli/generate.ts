import type { Command } from 'commander';
import { loadModel } from '../model/index.ts';
import { openRuntimeModel } from '../runtime/index.ts';
import { badArg } from '../errors.ts';
import { action, backendOption, intOption } from './common.ts';

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('greedy generation with the dense runtime, streaming tokens to stdout')
    .argument('<modelDir>', 'Hugging Face model folder')
    .requiredOption('--prompt <text>', 'prompt text (<s> is prepended)')
    .option('-n, --max-new-tokens <n>', 'tokens to generate', intOption('-n', 1), 32)
    .option('--no-stop', 'keep going after </s>')
    .option('--backend <name>', 'runtime backend: cpu, or cuda (NVIDIA GPU; needs the CUDA build)', backendOption, 'cpu')
    .addHelpText('after', '\nExample:\n  polar generate data/models/small-opt --prompt "The whale" -n 40\n')
    .action(
      action(async (dir: string, opts: { prompt: string; maxNewTokens: number; stop: boolean; backend: 'cpu' | 'cuda' }) => {
        const model = loadModel(dir);
        const tok = model.tokenizer();
        const ids = tok.encode(opts.prompt, true);
        if (!ids.length) throw badArg('--prompt', 'text that tokenizes to at least one token', opts.prompt);
        const total = Math.min(model.spec.maxPositions, ids.length + opts.maxNewTokens);
        if (ids.length >= total) throw badArg('--prompt', `at most ${model.spec.maxPositions - 1} tokens`, `${ids.length} tokens`);
        const rt = openRuntimeModel(model, { backend: opts.backend });
        const session = rt.session({ maxSeqs: 1, maxLen: total });
        try {
          process.stdout.write(opts.prompt);
          const generated: number[] = [];
          let printed = '';
          let next = Int32Array.from(ids);
          const t0 = performance.now();
          while (ids.length + generated.length < total) {
            const out = await session.forward([{ slot: 0, tokens: next }], { logits: 'last' });
            const logits = out.logits!;
            let best = 0;
            for (let v = 1; v < model.spec.vocab; v++) if (logits[v] > logits[best]) best = v;
            if (opts.stop && best === model.spec.eosTokenId) break;
            generated.push(best);
            // decode the whole continuation so multi-token characters print correctly
            const text = tok.decode(generated, true);
            process.stdout.write(text.slice(printed.length));
            printed = text;
            next = Int32Array.of(best);
          }
          const s = (performance.now() - t0) / 1000;
          process.stdout.write('\n');
          process.stderr.write(`polar: ${generated.length} tokens in ${s.toFixed(2)} s (${(generated.length / s).toFixed(1)} tokens/s, backend ${rt.backend})\n`);
        } finally {
          session.dispose();
          rt.dispose();
        }
      }),
    );
}
