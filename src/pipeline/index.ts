// The pipeline: YAML schema + loader (config.ts), stage contract (types.ts), runner (runner.ts).
export type * from './types.ts';
export { loadPipeline, parsePipeline, defaultOutDir, DEFAULT_TARGETS, PIPELINE_VERSION, type PipelineOverrides } from './config.ts';
export { runPipeline, summaryTable, loadStage, availableStages, STAGE_RECORD, type RunPipelineOptions, type PipelineResult } from './runner.ts';
export { optionReader, isMapping, type OptionReader } from './options.ts';
export { hashOf, canonicalJson, sha256Hex } from './hash.ts';
export { toolVersion } from './version.ts';
