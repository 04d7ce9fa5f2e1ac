// The export stage: the train stage's routers and the calibrate stage's calibration.json -> the router
// artifact (src/artifact), in the run's `artifact/` folder: manifest.json, routers.safetensors,
// calibration.json. No options. Read it with loadArtifact(ctx.inputs.export.dir) from src/artifact.
import { join } from 'node:path';
import { CALIBRATION_FILE, MANIFEST_FILE, ROUTERS_FILE } from '../../artifact/index.ts';
import { PolarError } from '../../errors.ts';
import { optionReader } from '../../pipeline/options.ts';
import type { OptionsWhere, StageContext, StageResult } from '../../pipeline/types.ts';
import { exportArtifact } from './export.ts';

export { exportArtifact, createdTime, type ExportOptions } from './export.ts';

export type ExportStageOptions = Record<string, never>;

export const description = 'package the routers and calibration tables as a checksummed, versioned artifact (manifest.json + routers.safetensors)';
export const inputs = ['train', 'calibrate'] as const;
export const folder = 'artifact';
export const version = 1;

export function options(raw: Record<string, unknown>, where: OptionsWhere): ExportStageOptions {
  optionReader(raw, where).done();
  return {};
}

export async function run(ctx: StageContext<ExportStageOptions>): Promise<StageResult> {
  const train = ctx.inputs.train, cal = ctx.inputs.calibrate;
  if (!train || !cal) throw new PolarError('bad-input', `stage ${ctx.stage}: expected the outputs of the train and calibrate stages before it in the pipeline, received ${Object.keys(ctx.inputs).join(', ') || 'none'}`);
  const task = ctx.progress('files');
  task.start(1);
  const m = exportArtifact({ model: ctx.model(), routers: train.dir, calibration: join(cal.dir, CALIBRATION_FILE), out: ctx.dir, mode: 'in-place', log: ctx.log });
  task.advance(1);
  const sparse = m.layers.filter((e) => e.mlp || e.attn);
  task.end(`${sparse.length} sparse layer(s)`);
  return {
    summary: {
      artifact_dir: ctx.dir,
      manifest: join(ctx.dir, MANIFEST_FILE),
      routers: join(ctx.dir, ROUTERS_FILE),
      format: m.format,
      version: m.version,
      files: m.files,
      layers: m.layers.map((e) => ({ layer: e.layer, mlp_k: e.mlp?.k ?? null, heads_kept: e.attn?.kept ?? null, units: e.attn?.units ?? null })),
      batch_sizes: m.calibration.batchSizes,
      mlp_target: m.calibration.mlpTarget,
      dense_ppl: m.calibration.attention.densePpl,
      sparse_ppl: m.calibration.attention.sparsePpl,
    },
  };
}
