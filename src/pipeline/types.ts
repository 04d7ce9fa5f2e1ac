// The contract between the pipeline runner (src/pipeline/runner.ts) and its stages (src/stages/<name>/).
//
// A stage is a folder src/stages/<name>/ whose index.ts exports `run(ctx)` and, optionally, the other
// members of StageModule below. The runner:
//   1. loads every stage named in the pipeline YAML, in order, and resolves each one's options with its
//      `options()` hook (so a typo in the last stage fails before the first one runs);
//   2. computes each stage's cache key = sha256 of { tool version, stage name, stage version, resolved
//      options, model identity (sha256 of config.json and weights), the keys of its inputs, and whatever
//      its `fingerprint()` returns (e.g. the corpus hash) };
//   3. skips a stage whose <out>/<stage>/.stage.json says "done" with the same key; otherwise runs it in
//      <out>/<stage>/ and, when run() resolves, records the key and summary in .stage.json (atomically).
//
// Resume: .stage.json is written with status "running" (and the key) before run() starts. If the process
// dies, the next run finds "running" with the same key and calls run() again on the same folder: the stage
// continues from whatever it left there (collect resumes after its last complete shard; train skips
// finished layers). If the key differs (options, model or upstream output changed), the runner empties the
// folder first, so a stage only ever has to resume its own key's work, never reconcile foreign files.
// Since a stage's key includes its inputs' keys, a change upstream reruns everything downstream of it.
//
// Rules for stage authors:
//   - write only inside ctx.dir; read other stages' outputs only through ctx.inputs[<stage>].dir, using
//     the formats of src/arrow and src/artifact (stages never import each other);
//   - anything outside your options that changes your output (a corpus file, a threshold from
//     pipeline.targets you did not copy into your options) must be part of fingerprint() or options();
//   - be deterministic for a key (same inputs -> same bytes), and make partial work resumable or cheap;
//   - report progress through ctx.progress(), messages through ctx.log() (never console.log: stdout is
//     for machine-readable output);
//   - return a small JSON summary: it is stored in .stage.json and handed to later stages and the report.
import type { LoadedModel } from '../model/index.ts';
import type { ProgressTask } from '../progress/index.ts';
import type { PipelineConfig } from './config.ts';

export type { PipelineConfig, PipelineTargets, PipelineStageConfig } from './config.ts';

/** What a finished stage hands to the stages after it (and to the report). */
export interface StageOutput {
  stage: string;
  /** the stage's folder: <out>/<stage>/ */
  dir: string;
  key: string;
  /** the summary that the stage's run() returned (JSON) */
  summary: Record<string, unknown>;
}

export interface StageContext<O = Record<string, unknown>> {
  /** this stage's name (= its folder under src/stages/) */
  readonly stage: string;
  /** position in the pipeline (0-based) and number of stages, for messages */
  readonly index: number;
  readonly count: number;
  /** the folder this stage owns: <out>/<stage>/ (or <out>/<folder>/; exists when run() is called). Write only here. */
  readonly dir: string;
  /** the run's output folder (parent of every stage folder) */
  readonly runDir: string;
  /** the whole pipeline: model path, corpus sources, targets and every stage's raw options */
  readonly pipeline: PipelineConfig;
  /** this stage's options as resolved by its options() hook (or the raw YAML mapping without one) */
  readonly options: O;
  /** outputs of the earlier stages named by this stage's `inputs` (all earlier stages by default) */
  readonly inputs: Readonly<Record<string, StageOutput>>;
  /** this stage's cache key (sha256 hex) */
  readonly key: string;
  /** the model of the pipeline, loaded once per run (config, weight refs, tokenizer(), identity()) */
  model(): LoadedModel;
  /** a progress task of the run's one display, labelled "[i/n] <stage>"; `unit` e.g. "tok", "epochs" */
  progress(unit?: string): ProgressTask;
  /** a message line (stderr) that does not break the progress bar */
  log(msg: string): void;
  /** aborted when the run is cancelled (SIGINT): stop at a safe point and throw */
  readonly signal: AbortSignal;
  readonly toolVersion: string;
}

/** What fingerprint() sees: the context before the key exists. */
export type FingerprintContext<O = Record<string, unknown>> = Omit<StageContext<O>, 'key' | 'progress' | 'dir'>;

export interface StageResult {
  /** JSON summary: stored in .stage.json, given to later stages as inputs[stage].summary */
  summary?: Record<string, unknown>;
}

/** Where an option came from, for error messages: badInput(where.file, `${where.field}.tokens`, ...). */
export interface OptionsWhere {
  file: string;
  /** e.g. "stages.collect" */
  field: string;
}

export interface StageModule<O = Record<string, unknown>> {
  /** does the work; may throw PolarError (the CLI prints it and exits non-zero) */
  run(ctx: StageContext<O>): Promise<StageResult | void>;
  /** one line for `polar run --help` and progress messages */
  description?: string;
  /** names of the earlier stages whose outputs this stage reads (default: every earlier stage) */
  inputs?: readonly string[];
  /**
   * Validates the raw YAML mapping and fills defaults. The result is hashed into the key, so defaults
   * count: changing a default reruns the stage. Throw badInput(where.file, `${where.field}.<name>`, ...).
   */
  options?(raw: Record<string, unknown>, where: OptionsWhere, pipeline: PipelineConfig): O;
  /** external inputs that are not options (a corpus file's hash, a tokenizer hash): JSON, hashed into the key */
  fingerprint?(ctx: FingerprintContext<O>): unknown | Promise<unknown>;
  /** bump to invalidate every cached result of this stage (e.g. after a bug fix that changes outputs) */
  version?: string | number;
  /** name of the stage's folder under the run folder when it is not the stage name (export: "artifact") */
  folder?: string;
  /**
   * files this stage writes directly into ctx.runDir besides its folder (report: report.html, report.json);
   * the only exception to "write only inside ctx.dir"
   */
  runFiles?: readonly string[];
}

/** What the runner reports for each stage. */
export interface StageReport {
  stage: string;
  dir: string;
  key: string;
  cached: boolean;
  seconds: number;
  summary: Record<string, unknown>;
}

/** <out>/<stage>/.stage.json */
export interface StageRecord {
  format: 'polar-stage';
  stage: string;
  status: 'running' | 'done';
  key: string;
  tool_version: string;
  options: unknown;
  inputs: Record<string, string>;
  /** only when done */
  summary?: Record<string, unknown>;
  seconds?: number;
  finished_at?: string;
}
