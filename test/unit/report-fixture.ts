// A synthetic report (shaped like small-opt's) shared by the report tests.
import { buildReport, type CalibrationView, type ReportJson } from '../../src/report/index.ts';
import type { BatchResult } from '../../src/validate/metrics.ts';

export function syntheticReport(): ReportJson {
  const batchSizes = [1, 2, 4, 8, 16, 32];
  const ffn = 1024;
  const cal: CalibrationView = {
    batchSizes,
    layers: [1, 2, 3].map((layer) => ({
      layer,
      mlp: {
        k: Object.fromEntries(batchSizes.map((b) => [b, Math.min(ffn, 128 * Math.ceil((0.25 + 0.12 * Math.log2(b)) * 8))])),
        unionDensity: Object.fromEntries(batchSizes.map((b) => [b, Math.min(1, 0.13 * (1 + 0.6 * Math.log2(b)))])),
        recallCurve: batchSizes.flatMap((b) => [128, 256, 384, 512, 768, 1024].map((k) => ({ batch_size: b, k, recall: Math.min(1, 1 - 0.5 * Math.exp(-k / (60 * (1 + Math.log2(b))))) }))),
      },
      headsKept: layer === 1 ? 4 : 3,
      headCost: [0, 1, 2, 3].map((h) => ({ heads_removed: h, ppl_increase: 0.004 * h * h * layer })),
    })),
    search: [
      { label: 'all heads, recall 0.99', work_skipped: 0.05, mlp_density: 0.33, heads_frac: 1, ppl_increase: 0.002 },
      { label: 'heads 4/3/3', work_skipped: 0.2, mlp_density: 0.33, heads_frac: 0.8125, ppl_increase: 0.008 },
      { label: 'heads 3/3/3', work_skipped: 0.25, mlp_density: 0.33, heads_frac: 0.75, ppl_increase: 0.02 },
      { label: 'heads 3/2/3', work_skipped: 0.3, mlp_density: 0.33, heads_frac: 0.6875, ppl_increase: 0.05 },
      { label: 'dominated', work_skipped: 0.1, mlp_density: null, heads_frac: 0.9, ppl_increase: 0.03 },
    ],
    reference: { batch: 16, context: 1024 },
  };
  const layers = (b: number) =>
    [0, 1, 2, 3].map((layer) => ({
      layer,
      mlp_density: layer === 0 ? 1 : Math.min(1, 0.25 * (1 + 0.3 * Math.log2(b))),
      heads_kept: layer === 0 || layer === 1 ? 4 : 3,
      mlp_recall: layer === 0 ? 1 : 0.99,
      head_recall: layer === 0 ? 1 : 0.93,
    }));
  const results: BatchResult[] = [1, 16].map((b) => ({ batch_size: b, dense_ppl: 105.56, sparse_ppl: 106.2, ppl_increase: 106.2 / 105.56 - 1, top1_agreement: 0.95, kl: 0.012, layers: layers(b) }));
  return buildReport({
    title: 'polar report: small-opt (synthetic)',
    toolVersion: '0.1.0',
    created: '2025-01-01T00:00:00.000Z',
    model: { name: 'small-opt', family: 'opt', layers: 4, hidden: 256, ffn, heads: 4, kvHeads: 4, headDim: 64, gated: false },
    calibration: cal,
    validate: { thresholds: { max_ppl_increase: 0.01 }, passed: true, text: 'eval split', tokens: 4096, seconds: 12.3, results },
    artifact: { dir: 'checkpoints/small-opt/artifact', sha256: { 'manifest.json': 'ab'.repeat(32), 'routers.safetensors': 'cd'.repeat(32) } },
    speed: [{ source: 'bench.json (synthetic)', columns: ['batch', 'dense ms', 'sparse ms', 'speedup'], rows: [[1, 1.5, 0.9, 1.67], [16, 3.1, 2.2, 1.41]] }],
    stages: [{ stage: 'collect', seconds: 60, finished_at: '2025-01-01T00:00:00.000Z' }],
  });
}
