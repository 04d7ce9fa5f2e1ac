// report.html: one self-contained file (no network): the vega, vega-lite and vega-embed builds from
// node_modules are inlined, the specs (src/report/specs.ts) and report.json's tables are embedded. When
// every plot has rendered, the page sets `window.__polarReport = { done: true, plots, rendered, errors }`
// (what the headless-browser test reads).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PolarError } from '../errors.ts';
import { plotSpecs } from './specs.ts';
import type { ReportJson, SpeedTable } from './types.ts';
import type { BatchResult } from '../validate/metrics.ts';

interface Lib {
  name: string;
  version: string;
  code: string;
}

let libsCache: Lib[] | null = null;

/** The UMD builds of vega, vega-lite and vega-embed (in load order). */
export function chartLibraries(): Lib[] {
  if (libsCache) return libsCache;
  const require = createRequire(import.meta.url);
  const out: Lib[] = [];
  for (const [name, file] of [
    ['vega', 'vega.min.js'],
    ['vega-lite', 'vega-lite.min.js'],
    ['vega-embed', 'vega-embed.min.js'],
  ] as const) {
    let dir: string;
    try {
      dir = dirname(require.resolve(name)); // <pkg>/build
    } catch (e) {
      throw new PolarError('not-found', `report: the charting library ${name} is not installed (run \`npm install\` in the project root): ${(e as Error).message}`);
    }
    const pkgDir = dirname(dir);
    const version = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')).version as string;
    out.push({ name, version, code: readFileSync(join(dir, file), 'utf8') });
  }
  return (libsCache = out);
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside a <script> element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

function scriptCode(code: string): string {
  return code.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
}

function fmt(v: number | string | null | undefined, digits = 4): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return escapeHtml(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(digits);
}

function pct(v: number, digits = 2): string {
  return `${(v * 100).toFixed(digits)}%`;
}

function table(head: string[], rows: string[][], cls = ''): string {
  return `<table${cls ? ` class="${cls}"` : ''}><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

function validateTables(results: BatchResult[], maxIncrease: number, heads: number): string {
  const summary = table(
    ['batch size', 'dense ppl', 'sparse ppl', 'ppl increase', 'top-1 agreement', 'KL(dense‖sparse)', 'verdict'],
    results.map((r) => [
      String(r.batch_size),
      fmt(r.dense_ppl, 3),
      fmt(r.sparse_ppl, 3),
      pct(r.ppl_increase, 3),
      pct(r.top1_agreement, 2),
      fmt(r.kl, 5),
      r.ppl_increase <= maxIncrease ? '<span class="ok">pass</span>' : '<span class="bad">FAIL</span>',
    ]),
  );
  const perLayer = results
    .map(
      (r) =>
        `<div><h4>batch size ${r.batch_size}</h4>` +
        table(
          ['layer', 'MLP density', 'MLP recall', 'heads kept', 'head recall'],
          r.layers.map((l) => [String(l.layer), pct(l.mlp_density, 1), fmt(l.mlp_recall, 4), `${fmt(l.heads_kept, 2)} / ${heads}`, fmt(l.head_recall, 4)]),
          'narrow',
        ) +
        '</div>',
    )
    .join('');
  return summary + `<details open><summary>per layer</summary><div class="layers">${perLayer}</div></details>`;
}

function speedTable(s: SpeedTable): string {
  return `<p class="caption">${escapeHtml(s.source)}</p>` + table(s.columns.map(escapeHtml), s.rows.map((r) => r.map((c) => fmt(c as number | string | null, 3))));
}

export function renderReportHtml(r: ReportJson): string {
  const libs = chartLibraries();
  const plots = plotSpecs(r);
  const drawn = plots.filter((p) => p.spec);
  const v = r.validate;
  const verdict = v
    ? v.passed
      ? `<span class="ok">validation passed</span> (perplexity increase ≤ ${pct(v.thresholds.max_ppl_increase, 2)} at every batch size)`
      : `<span class="bad">validation FAILED</span> (a perplexity increase exceeds ${pct(v.thresholds.max_ppl_increase, 2)})`
    : '<span class="bad">not validated</span>';
  const m = r.model;
  const sections: string[] = [];
  sections.push(`<section><h2>Validation: sparse vs dense, decoding</h2>${
    v
      ? `<p class="caption">${v.tokens} predicted tokens of ${escapeHtml(v.text)}, windows grouped b at a time and decoded one position per step (${fmt(v.seconds, 1)} s).</p>` +
        validateTables(v.results, v.thresholds.max_ppl_increase, m.heads)
      : '<p>No validation results.</p>'
  }</section>`);
  sections.push(
    `<section><h2>Plots</h2><div class="plots">${plots
      .map(
        (p) =>
          `<figure class="plot" id="fig-${p.id}"><figcaption><b>${escapeHtml(p.title)}</b><br><span class="caption">${escapeHtml(p.caption)}</span></figcaption>${
            p.spec ? `<div class="chart" id="chart-${p.id}" data-plot="${p.id}"></div>` : `<p class="missing">Not shown: ${escapeHtml(p.missing ?? 'no data')}.</p>`
          }</figure>`,
      )
      .join('')}</div></section>`,
  );
  sections.push(
    `<section><h2>Speed</h2>${r.speed.length ? r.speed.map(speedTable).join('') : '<p class="missing">No benchmark results: give benchmark output (JSON or JSON lines) with <code>polar report &lt;runDir&gt; --bench &lt;file&gt;</code>, the report stage\'s <code>bench</code> option, or a bench stage in the pipeline.</p>'}</section>`,
  );
  if (r.stages.length) {
    sections.push(
      `<section><h2>Pipeline stages</h2>${table(
        ['stage', 'seconds', 'finished'],
        r.stages.map((s) => [escapeHtml(s.stage), fmt(s.seconds, 1), escapeHtml(s.finished_at ?? '')]),
        'narrow',
      )}</section>`,
    );
  }
  if (r.artifact) {
    sections.push(
      `<section><h2>Artifact</h2><p><code>${escapeHtml(r.artifact.dir)}</code></p>${table(
        ['file', 'sha256'],
        Object.entries(r.artifact.sha256).map(([f, h]) => [`<code>${escapeHtml(f)}</code>`, `<code>${escapeHtml(h)}</code>`]),
        'narrow',
      )}</section>`,
    );
  }
  if (r.notes.length) sections.push(`<section><h2>Notes</h2><ul>${r.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul></section>`);

  const specs = Object.fromEntries(drawn.map((p) => [p.id, p.spec]));
  const boot = `
(function () {
  var specs = JSON.parse(document.getElementById('polar-specs').textContent);
  var ids = Object.keys(specs);
  var state = { done: false, plots: ids.length, rendered: 0, errors: [] };
  window.__polarReport = state;
  Promise.all(ids.map(function (id) {
    return vegaEmbed('#chart-' + id, specs[id], { renderer: 'svg', actions: false })
      .then(function () { state.rendered++; })
      .catch(function (e) { state.errors.push(id + ': ' + (e && e.message ? e.message : String(e))); var el = document.getElementById('chart-' + id); if (el) el.textContent = 'plot failed: ' + e; });
  })).then(function () { state.done = true; });
})();`;

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="polar ${escapeHtml(r.tool_version)}; ${libs.map((l) => `${l.name} ${l.version}`).join(', ')}">
<title>${escapeHtml(r.title)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; padding: 0 16px; color: #1d1f21; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }
h4 { margin: 10px 0 4px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
.ok { color: #18794e; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
.caption { color: #555; font-size: 12.5px; } .missing { color: #777; font-style: italic; }
.plots { display: flex; flex-wrap: wrap; gap: 24px; } figure.plot { margin: 0; max-width: 100%; }
.layers { display: flex; flex-wrap: wrap; gap: 18px; } code { font-size: 12px; }
</style>
</head>
<body>
<h1>${escapeHtml(r.title)}</h1>
<p>${escapeHtml(m.name)}: ${escapeHtml(m.family)}, ${m.layers} layers, hidden ${m.hidden}, ffn ${m.ffn}, ${m.heads} heads (${m.kvHeads} KV). ${verdict}.<br>
<span class="caption">created ${escapeHtml(r.created)} by polar ${escapeHtml(r.tool_version)}; the data of every plot is in report.json.</span></p>
${sections.join('\n')}
<script type="application/json" id="polar-specs">${scriptJson(specs)}</script>
${libs.map((l) => `<script>/* ${l.name} ${l.version} */\n${scriptCode(l.code)}\n</script>`).join('\n')}
<script>${boot}</script>
</body>
</html>
`;
}
