// `polar inspect <artifact> [--json] [--model <dir>]`: a readable summary of a router artifact (checksums
// verified; with --model, also refused unless it belongs to that model): per layer the MLP k for each
// calibrated batch size and the heads (KV groups) each token keeps, the targets and what was reached.
import type { Command } from 'commander';
import { action } from './common.ts';
import { loadArtifact, type Manifest } from '../artifact/index.ts';
import { loadModel } from '../model/index.ts';

interface InspectCliOptions {
  json?: boolean;
  model?: string;
}

export interface InspectLayer {
  layer: number;
  /** units kept per token, or null when attention runs dense */
  heads_kept: number | null;
  units: number;
  /** k per calibrated batch size, or null when the MLP runs dense */
  mlp_k: number[] | null;
  mlp_density: number[] | null;
  recall: number[] | null;
  recall_check: (number | null)[] | null;
  union_density: number[] | null;
  score: string | null;
}

export function inspectJson(dir: string, m: Manifest) {
  const units = m.calibration.attention.unit === 'kv-group' ? m.model.kvHeads : m.model.heads;
  const byLayer = new Map(m.layers.map((e) => [e.layer, e]));
  const layers: InspectLayer[] = [];
  for (let l = 0; l < m.model.layers; l++) {
    const e = byLayer.get(l);
    layers.push({
      layer: l,
      heads_kept: e?.attn?.kept ?? null,
      units,
      mlp_k: e?.mlp?.k ?? null,
      mlp_density: e?.mlp ? e.mlp.k.map((k) => k / m.model.ffn) : null,
      recall: e?.mlp?.recall ?? null,
      recall_check: e?.mlp?.recallCheck ?? null,
      union_density: e?.mlp?.unionDensity ?? null,
      score: e?.mlp?.score ?? null,
    });
  }
  return { dir, verified: true, format: m.format, version: m.version, tool: m.tool, created_at: m.createdAt, model: m.model, corpus: m.corpus, calibration: m.calibration, files: m.files, layers };
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const short = (h: string) => h.slice(0, 12);

export function inspectText(dir: string, m: Manifest): string {
  const j = inspectJson(dir, m);
  const c = m.calibration;
  const a = c.attention;
  const md = m.model;
  const lines: string[] = [];
  lines.push(`artifact  ${dir}`);
  lines.push(`format    ${m.format} v${m.version}, written by ${m.tool.name} ${m.tool.version} at ${m.createdAt}`);
  lines.push(`model     ${md.name ?? '?'} (${md.family}): ${md.layers} layers, hidden ${md.hidden}, ffn ${md.ffn}, ${md.heads} heads / ${md.kvHeads} KV, vocab ${md.vocab}`);
  lines.push(`          config sha256 ${short(md.configSha256)}…, weights sha256 ${short(md.weightsSha256)}…`);
  lines.push(`corpus    sha256 ${short(m.corpus.sha256)}…, ${m.corpus.tokens} tokens`);
  lines.push(`files     ${Object.entries(m.files).map(([n, f]) => `${n} (${f.bytes} B, sha256 ${short(f.sha256)}…)`).join(', ')}: checksums verified`);
  lines.push(`MLP       ${c.mlpTarget === null ? 'dense (no MLP calibration)' : `top-k of summed router scores recalls >= ${c.mlpTarget} of the batch's active neurons; k rounded up to ${c.granule}`}`);
  const ppl =
    a.densePpl !== null && a.sparsePpl !== null ? `: perplexity ${a.densePpl.toFixed(3)} dense -> ${a.sparsePpl.toFixed(3)} sparse (${a.sparsePpl >= a.densePpl ? '+' : ''}${pct(a.sparsePpl / a.densePpl - 1)}) on ${a.tokens} tokens, decoded ${a.evalBatch} at a time` : '';
  const mode = a.mode === 'fidelity' ? `searched against a perplexity budget of +${pct(a.maxPplIncrease ?? 0)}` : a.mode === 'fixed' ? `fixed fraction ${a.fraction}` : 'dense';
  lines.push(`attention ${a.unit === 'kv-group' ? 'KV groups' : 'heads'} kept per token ${mode}${ppl}`);
  lines.push('');
  const bs = c.batchSizes;
  const head = ['layer', a.unit === 'kv-group' ? 'groups' : 'heads', ...bs.map((b) => `k@${b}`), 'recall (min)', 'check (min)'];
  const rows: string[][] = [head];
  for (const l of j.layers) {
    const recMin = l.recall ? Math.min(...l.recall) : null;
    const chk = l.recall_check?.filter((v): v is number => v !== null) ?? [];
    rows.push([
      String(l.layer),
      l.heads_kept === null ? `${l.units}/${l.units}` : `${l.heads_kept}/${l.units}`,
      ...bs.map((_, i) => (l.mlp_k ? String(l.mlp_k[i]) : 'dense')),
      recMin === null ? '-' : recMin.toFixed(4),
      chk.length ? Math.min(...chk).toFixed(4) : '-',
    ]);
  }
  const w = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) lines.push(r.map((v, i) => (i < 2 ? v.padEnd(w[i]) : v.padStart(w[i]))).join('  ').trimEnd());
  lines.push('');
  lines.push(
    bs.length
      ? `k@b: MLP neurons kept (of ${md.ffn}) for a batch of b tokens; above ${bs[bs.length - 1]} tokens the MLP runs dense. Layer 0 stays dense.`
      : 'The MLP runs dense on every layer. Layer 0 stays dense.',
  );
  return lines.join('\n') + '\n';
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('summarise a router artifact (checksums verified): per layer the MLP k for each batch size and the heads kept, targets and recall reached')
    .argument('<artifact>', 'artifact folder written by `polar export` (or the pipeline\'s artifact/)')
    .option('--model <dir>', 'also refuse the artifact unless it was made for this model')
    .option('--json', 'print one JSON object on stdout')
    .action(
      action((dir: string, o: InspectCliOptions) => {
        const art = loadArtifact(dir, { tensors: false, model: o.model ? loadModel(o.model) : undefined });
        process.stdout.write(o.json ? JSON.stringify(inspectJson(art.dir, art.manifest), null, 2) + '\n' : inspectText(art.dir, art.manifest));
      }),
    );
}
