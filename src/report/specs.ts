// The vega-lite specs of report.html, one per plot, each reading one array of report.json.
import type { ReportJson } from './types.ts';

export interface PlotSpec {
  id: string;
  title: string;
  /** what the plot shows, printed under its title */
  caption: string;
  spec: Record<string, unknown> | null;
  /** why the plot is absent (spec null) */
  missing?: string;
}

const WIDTH = 420;
const HEIGHT = 260;

function base(values: unknown[]): Record<string, unknown> {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    width: WIDTH,
    height: HEIGHT,
    config: { font: 'system-ui, sans-serif', axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 11 } },
  };
}

export function plotSpecs(r: ReportJson): PlotSpec[] {
  const plots: PlotSpec[] = [];
  const layerField = { field: 'layer', type: 'nominal', title: 'layer' };

  plots.push({
    id: 'union-density',
    title: 'MLP union density vs batch size',
    caption:
      'Share of MLP neurons a batch must compute: the true union of its tokens\' active neurons (calibration tokens), the calibrated top-k / ffn, and the density realised when validating. The union grows with the batch, so k is calibrated per batch size.',
    ...(r.union_density.length
      ? {
          spec: {
            ...base(r.union_density),
            mark: { type: 'line', point: true },
            encoding: {
              x: { field: 'batch_size', type: 'quantitative', scale: { type: 'log', base: 2 }, title: 'batch size', axis: { values: [...new Set(r.union_density.map((p) => p.batch_size))] } },
              y: { field: 'density', type: 'quantitative', scale: { domain: [0, 1] }, title: 'share of neurons computed' },
              color: layerField,
              strokeDash: { field: 'series', type: 'nominal', title: 'series' },
              shape: { field: 'series', type: 'nominal', title: 'series' },
              tooltip: [{ field: 'layer' }, { field: 'batch_size' }, { field: 'series' }, { field: 'density', format: '.3f' }],
            },
          },
        }
      : { spec: null, missing: 'no MLP calibration (model without ReLU MLP, or no calibration.json)' }),
  });

  plots.push({
    id: 'recall-vs-k',
    title: 'Router recall vs k, per layer',
    caption: 'Mean recall of the true active-neuron union of a batch by the router\'s top-k of summed scores, on held-out tokens; one line per batch size.',
    ...(r.recall_vs_k.length
      ? {
          spec: {
            ...base(r.recall_vs_k),
            width: 200,
            height: 160,
            mark: { type: 'line', point: { size: 18 } },
            encoding: {
              facet: { field: 'layer', type: 'ordinal', title: 'layer', columns: 3 },
              x: { field: 'k', type: 'quantitative', title: 'k (neurons kept)' },
              y: { field: 'recall', type: 'quantitative', scale: { zero: false }, title: 'recall' },
              color: { field: 'batch_size', type: 'ordinal', title: 'batch size', scale: { scheme: 'viridis' } },
              tooltip: [{ field: 'layer' }, { field: 'batch_size' }, { field: 'k' }, { field: 'recall', format: '.4f' }],
            },
          },
        }
      : { spec: null, missing: 'no recall-vs-k curves in calibration.json' }),
  });

  plots.push({
    id: 'heads-kept',
    title: 'Attention heads kept per layer',
    caption: 'Heads each sequence computes per layer: the calibrated budget and the mean realised when validating (layer 0 stays dense).',
    ...(r.heads_kept.length
      ? {
          spec: {
            ...base(r.heads_kept),
            mark: { type: 'bar' },
            encoding: {
              x: { field: 'layer', type: 'ordinal', title: 'layer' },
              xOffset: { field: 'source', type: 'nominal' },
              y: { field: 'heads_kept', type: 'quantitative', title: 'heads kept', scale: { domain: [0, Math.max(1, r.model.heads)] } },
              color: { field: 'source', type: 'nominal', title: 'source' },
              tooltip: [{ field: 'layer' }, { field: 'source' }, { field: 'heads_kept', format: '.2f' }, { field: 'heads_total' }],
            },
          },
        }
      : { spec: null, missing: 'no head budgets (no calibration.json and no validation)' }),
  });

  plots.push({
    id: 'pareto',
    title: 'Perplexity vs sparsity',
    caption:
      'Each point is one sparsity configuration: x = share of the bytes of a decode step not read (KV cache of the skipped heads at the reference context, MLP weights of the skipped neurons; batch of the point), y = perplexity increase over dense (calibration search: calibration tokens; validate: the validation text). Filled points are on the Pareto front of their source at their batch size.',
    ...(r.pareto.length
      ? {
          spec: {
            ...base(r.pareto),
            layer: [
              {
                mark: { type: 'point', size: 70 },
                encoding: {
                  x: { field: 'work_skipped', type: 'quantitative', title: 'work skipped (share of decode-step bytes)', axis: { format: '.1%' } },
                  y: { field: 'ppl_increase', type: 'quantitative', title: 'perplexity increase', axis: { format: '.2%' } },
                  color: { field: 'source', type: 'nominal', title: 'source' },
                  fill: { condition: { test: 'datum.pareto', field: 'source', type: 'nominal' }, value: 'transparent' },
                  tooltip: [
                    { field: 'label' },
                    { field: 'source' },
                    { field: 'work_skipped', format: '.3f' },
                    { field: 'mlp_density', format: '.3f' },
                    { field: 'heads_frac', format: '.3f' },
                    { field: 'ppl_increase', format: '.4%' },
                    { field: 'batch' },
                    { field: 'context' },
                  ],
                },
              },
              {
                transform: [{ filter: 'datum.pareto' }],
                mark: { type: 'line', strokeDash: [4, 3], opacity: 0.6 },
                encoding: {
                  x: { field: 'work_skipped', type: 'quantitative', sort: 'ascending' },
                  y: { field: 'ppl_increase', type: 'quantitative' },
                  color: { field: 'source', type: 'nominal' },
                  detail: { field: 'batch', type: 'nominal' },
                },
              },
            ],
          },
        }
      : { spec: null, missing: 'no sparsity configurations measured' }),
  });

  if (r.head_cost.length) {
    plots.push({
      id: 'head-cost',
      title: 'Perplexity cost of removing heads, per layer',
      caption: 'From the head-budget search (calibration tokens): perplexity increase when one layer alone loses heads (KV groups for GQA, counted in heads), every other layer keeping all heads, the MLP sparse.',
      spec: {
        ...base(r.head_cost),
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'heads_removed', type: 'quantitative', title: 'heads removed', axis: { tickMinStep: 1 } },
          y: { field: 'ppl_increase', type: 'quantitative', title: 'perplexity increase', axis: { format: '.1%' } },
          color: layerField,
          tooltip: [{ field: 'layer' }, { field: 'heads_removed' }, { field: 'ppl_increase', format: '.4%' }],
        },
      },
    });
  }
  return plots;
}
