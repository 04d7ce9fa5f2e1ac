// The pipeline file (pipelines/*.yaml): one schema, one loader. Declarative only: which model, which
// corpus, which quality targets, and the ordered stages with their options. Example:
//
//   version: 1
//   name: small-opt
//   description: OPT-style 4-layer model bundled with polar
//   model: ../data/models/small-opt        # relative paths are relative to this file; --model overrides
//   corpus:
//     train: default:train                 # default:train | default:eval | a .txt/.jsonl/.arrow/.parquet file
//     eval: default:eval
//     text_field: text
//   targets:
//     mlp_recall: 0.99                     # recall of the true active-neuron union the MLP top-k must reach
//     ppl_increase_max: 0.01               # validation fails above +1% perplexity
//     batch_sizes: [1, 2, 4, 8, 16, 32, 64, 128, 256]   # calibration batch sizes
//     validate_batch_sizes: [1, 16]
//   stages:                                # ordered; each name is a folder src/stages/<name>/
//     collect: { tokens: 200000, seq_len: 256, batch: 8 }
//     train: {}
//
// Stage options are validated by each stage's options() hook (src/pipeline/types.ts), not here; this file
// checks everything else, and refuses unknown keys with the file and field named.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { badInput, notFound, PolarError } from '../errors.ts';
import { isMapping, optionReader } from './options.ts';

export const PIPELINE_VERSION = 1;

export interface PipelineTargets {
  /** recall of the true active-neuron union that the MLP router's top-k must reach (calibration) */
  mlp_recall: number;
  /** validation fails when sparse perplexity exceeds dense by more than this fraction */
  ppl_increase_max: number;
  /** batch sizes that MLP top-k is calibrated for */
  batch_sizes: number[];
  /** batch sizes that validation measures */
  validate_batch_sizes: number[];
  /** optional: validation fails below this top-1 agreement with the dense model */
  top1_agreement_min?: number;
  /** optional: validation fails above this mean KL(dense || sparse) */
  kl_max?: number;
}

export const DEFAULT_TARGETS: PipelineTargets = {
  mlp_recall: 0.99,
  ppl_increase_max: 0.01,
  batch_sizes: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  validate_batch_sizes: [1, 16],
};

export interface PipelineStageConfig {
  name: string;
  /** the raw YAML mapping (validated by the stage's options() hook) */
  options: Record<string, unknown>;
}

export interface PipelineConfig {
  /** absolute path of the YAML file (or "<inline>") */
  file: string;
  version: number;
  name: string;
  description: string;
  /** absolute path of the model folder */
  model: string;
  corpus: {
    /** "default:train" | "default:eval" | absolute file path */
    train: string;
    eval: string;
    text_field: string;
  };
  targets: PipelineTargets;
  stages: PipelineStageConfig[];
}

/** Command-line overrides (paths relative to the current directory). */
export interface PipelineOverrides {
  model?: string;
  trainText?: string;
  evalText?: string;
}

const STAGE_NAME = /^[a-z][a-z0-9-]*$/;

function corpusSource(v: string, base: string): string {
  if (v === 'default') return 'default:train';
  if (v.startsWith('default:')) return v;
  return isAbsolute(v) ? v : resolve(base, v);
}

/** Parses pipeline YAML text. `file` names it in errors and anchors relative paths. */
export function parsePipeline(text: string, file: string, overrides: PipelineOverrides = {}): PipelineConfig {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0];
    throw badInput(file, e.linePos?.[0] ? `line ${e.linePos[0].line}` : '(file)', 'valid YAML', e.message.split('\n')[0], true);
  }
  const raw = doc.toJS() as unknown;
  if (!isMapping(raw)) throw badInput(file, '(file)', 'a YAML mapping with name, model, corpus, targets and stages', raw);
  const base = file === '<inline>' ? process.cwd() : dirname(file);
  const r = optionReader(raw, { file, field: '' });
  const version = r.int('version', PIPELINE_VERSION, 1);
  if (version !== PIPELINE_VERSION) throw badInput(file, 'version', `${PIPELINE_VERSION} (the pipeline format this polar reads)`, version);
  const fallbackName = file === '<inline>' ? 'pipeline' : basename(file, extname(file));
  const name = r.str('name', fallbackName);
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw badInput(file, 'name', 'letters, digits, ".", "_" or "-" (it names the output folder)', name);
  const description = r.str('description', '');

  let model: string | undefined = overrides.model !== undefined ? resolve(overrides.model) : undefined;
  const yamlModel = r.optStr('model');
  if (model === undefined && yamlModel !== undefined) model = isAbsolute(yamlModel) ? yamlModel : resolve(base, yamlModel);
  if (model === undefined) throw badInput(file, 'model', 'a model folder (set `model:` in the file, or pass --model <dir>)', undefined);
  if (!existsSync(model) || !statSync(model).isDirectory()) {
    throw notFound(model, 'model folder', overrides.model !== undefined ? 'from --model' : `from ${file}: model (relative paths are relative to the pipeline file)`);
  }

  const c = optionReader(r.map('corpus'), { file, field: 'corpus' });
  // a command-line source is relative to the current directory, a YAML one to the YAML file
  const source = (key: 'train' | 'eval', cli: string | undefined, fallback: string): string => {
    const yamlValue = c.str(key, fallback);
    if (cli === undefined) return corpusSource(yamlValue, base);
    return cli.startsWith('default') ? corpusSource(cli, base) : resolve(cli);
  };
  const train = source('train', overrides.trainText, 'default:train');
  const evalSrc = source('eval', overrides.evalText, 'default:eval');
  const textField = c.str('text_field', 'text');
  c.done();
  for (const [k, v] of [['corpus.train', train], ['corpus.eval', evalSrc]] as const) {
    if (v.startsWith('default:')) {
      if (v !== 'default:train' && v !== 'default:eval') throw badInput(file, k, '"default:train", "default:eval" or a file path', v);
    } else if (!existsSync(v)) {
      throw notFound(v, `corpus file (${k})`);
    }
  }

  const t = optionReader(r.map('targets'), { file, field: 'targets' });
  const targets: PipelineTargets = {
    mlp_recall: t.num('mlp_recall', DEFAULT_TARGETS.mlp_recall, 0, 1),
    ppl_increase_max: t.num('ppl_increase_max', DEFAULT_TARGETS.ppl_increase_max, 0),
    batch_sizes: t.intList('batch_sizes', DEFAULT_TARGETS.batch_sizes, 1),
    validate_batch_sizes: t.intList('validate_batch_sizes', DEFAULT_TARGETS.validate_batch_sizes, 1),
  };
  const top1 = t.has('top1_agreement_min') ? t.num('top1_agreement_min', undefined, 0, 1) : (t.raw('top1_agreement_min'), undefined);
  const kl = t.has('kl_max') ? t.num('kl_max', undefined, 0) : (t.raw('kl_max'), undefined);
  if (top1 !== undefined) targets.top1_agreement_min = top1;
  if (kl !== undefined) targets.kl_max = kl;
  t.done();

  const stagesRaw = r.raw('stages');
  const stages: PipelineStageConfig[] = [];
  const add = (name: unknown, options: unknown, field: string) => {
    if (typeof name !== 'string' || !STAGE_NAME.test(name)) throw badInput(file, field, 'a stage name (lowercase letters, digits and "-": a folder of src/stages/)', name);
    if (stages.some((s) => s.name === name)) throw badInput(file, field, 'each stage once', name);
    if (options !== undefined && options !== null && !isMapping(options)) throw badInput(file, `${field}`, 'a mapping of stage options (or nothing)', options);
    stages.push({ name, options: (options as Record<string, unknown>) ?? {} });
  };
  if (isMapping(stagesRaw)) {
    for (const [k, v] of Object.entries(stagesRaw)) add(k, v, `stages.${k}`);
  } else if (Array.isArray(stagesRaw)) {
    stagesRaw.forEach((item, i) => {
      if (typeof item === 'string') add(item, {}, `stages[${i}]`);
      else if (isMapping(item) && Object.keys(item).length === 1) {
        const [k, v] = Object.entries(item)[0];
        add(k, v, `stages[${i}].${k}`);
      } else throw badInput(file, `stages[${i}]`, 'a stage name or a one-key mapping { <stage>: { options } }', item);
    });
  } else {
    throw badInput(file, 'stages', 'an ordered mapping of stage names to options (e.g. collect: { tokens: 200000 })', stagesRaw);
  }
  if (!stages.length) throw badInput(file, 'stages', 'at least one stage', stagesRaw);
  r.done();
  return { file, version, name, description, model, corpus: { train, eval: evalSrc, text_field: textField }, targets, stages };
}

/** Reads and validates a pipeline file. */
export function loadPipeline(fileIn: string, overrides: PipelineOverrides = {}): PipelineConfig {
  const file = resolve(fileIn);
  if (!existsSync(file)) throw notFound(file, 'pipeline file', 'see pipelines/*.yaml');
  if (!statSync(file).isFile()) throw new PolarError('bad-input', `${file}: expected a pipeline YAML file, received a folder`, { file });
  return parsePipeline(readFileSync(file, 'utf8'), file, overrides);
}

/** checkpoints/<pipeline name>/ under `root` (the project root or the current directory). */
export function defaultOutDir(cfg: PipelineConfig, root = process.cwd()): string {
  return join(root, 'checkpoints', cfg.name);
}
