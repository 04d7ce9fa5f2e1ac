import type { Command } from 'commander';
import { loadModel } from '../model/index.ts';
import { action } from './common.ts';

export function registerInspectModel(program: Command): void {
  program
    .command('inspect-model')
    .description('show a Hugging Face model folder: family, dims, parameter count, weight dtype')
    .argument('<modelDir>', 'folder with config.json, *.safetensors and tokenizer.json')
    .option('--json', 'print one JSON object on stdout')
    .addHelpText('after', '\nExample:\n  polar inspect-model data/models/small-opt\n')
    .action(
      action(async (dir: string, opts: { json?: boolean }) => {
        const m = loadModel(dir);
        const s = m.spec;
        const files = [...new Set(m.weights.map((w) => w.file))];
        const info = {
          dir: m.dir,
          family: s.family,
          architecture: s.architecture,
          layers: s.layers,
          hidden: s.hidden,
          heads: s.heads,
          kvHeads: s.kvHeads,
          headDim: s.headDim,
          ffn: s.ffn,
          vocab: s.vocab,
          maxPositions: s.maxPositions,
          activation: s.activation,
          tiedEmbeddings: s.tiedEmbeddings,
          rope: s.rope,
          parameters: m.parameters,
          dtype: m.dtype,
          files: files.length,
        };
        if (opts.json) {
          process.stdout.write(JSON.stringify(info) + '\n');
          return;
        }
        const p = m.parameters;
        const pretty = p >= 1e9 ? `${(p / 1e9).toFixed(2)}B` : p >= 1e6 ? `${(p / 1e6).toFixed(2)}M` : `${(p / 1e3).toFixed(1)}K`;
        const rows: [string, string][] = [
          ['model', `${s.architecture} (${s.family})`],
          ['layers', String(s.layers)],
          ['hidden', String(s.hidden)],
          ['heads', s.kvHeads !== s.heads ? `${s.heads} query, ${s.kvHeads} KV groups (GQA), head_dim ${s.headDim}` : `${s.heads}, head_dim ${s.headDim}`],
          ['ffn', `${s.ffn} (${s.gated ? 'SiLU gated' : 'ReLU'})`],
          ['vocab', String(s.vocab)],
          ['positions', `${s.maxPositions}${s.rope ? `, RoPE theta ${s.rope.theta}${s.rope.type === 'llama3' ? ` with llama3 scaling x${s.rope.factor}` : ''}` : ', learned'}`],
          ['embeddings', s.tiedEmbeddings ? 'tied' : 'untied lm_head'],
          ['parameters', `${pretty} (${p})`],
          ['weights', `${m.dtype}, ${files.length} file${files.length > 1 ? 's' : ''}`],
        ];
        const w = Math.max(...rows.map((r) => r[0].length));
        for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
      }),
    );
}
