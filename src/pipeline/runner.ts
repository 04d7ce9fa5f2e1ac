// The pipeline runner: ordered stages, content-hash caching, resume, one progress display.
// The contract with stages (StageContext, StageModule, what a key is, how resume works) is documented in
// src/pipeline/types.ts.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { badInput, PolarError } from '../errors.ts';
import { loadModel, type LoadedModel } from '../model/index.ts';
import { writeFileAtomic } from '../arrow/writer.ts';
import { createProgress, formatDuration, type ProgressDisplay } from '../progress/index.ts';
import type { PipelineConfig } from './config.ts';
import { hashOf } from './hash.ts';
import type { FingerprintContext, StageContext, StageModule, StageOutput, StageRecord, StageReport } from './types.ts';
import { toolVersion } from './version.ts';

export const STAGE_RECORD = '.stage.json';
const stagesRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'stages');

/** The stages that exist (folders of src/stages/ with an index.ts). */
export function availableStages(): string[] {
  if (!existsSync(stagesRoot)) return [];
  return readdirSync(stagesRoot, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(stagesRoot, d.name, 'index.ts')))
    .map((d) => d.name)
    .sort();
}

/** Imports src/stages/<name>/index.ts and checks that it exports run(). */
export async function loadStage(name: string, file = '<pipeline>'): Promise<StageModule> {
  const entry = join(stagesRoot, name, 'index.ts');
  if (!existsSync(entry)) {
    throw badInput(file, `stages.${name}`, `one of the stages of this polar (${availableStages().join(', ') || 'none'})`, name);
  }
  const mod = (await import(pathToFileURL(entry).href)) as Partial<StageModule>;
  if (typeof mod.run !== 'function') throw new PolarError('unsupported', `${entry}: expected an exported function run(ctx), received ${typeof mod.run}`);
  return mod as StageModule;
}

export interface RunPipelineOptions {
  /** the run's output folder; each stage gets <out>/<stage>/ */
  out: string;
  /** run only up to and including this stage (later stages are neither run nor checked) */
  until?: string;
  /**
   * rerun these stages even when cached, in an emptied folder. Their keys do not change, so later stages
   * stay cached (stages are deterministic per key); list those too to rerun them.
   */
  force?: string[];
  /** the one progress display (default: stderr, bar on a TTY) */
  progress?: ProgressDisplay;
  signal?: AbortSignal;
  /** tests: load stage modules from elsewhere */
  loadStage?: (name: string) => Promise<StageModule>;
}

export interface PipelineResult {
  out: string;
  stages: StageReport[];
  seconds: number;
}

function readRecord(dir: string): StageRecord | null {
  const f = join(dir, STAGE_RECORD);
  if (!existsSync(f)) return null;
  try {
    const r = JSON.parse(readFileSync(f, 'utf8')) as StageRecord;
    return r && r.format === 'polar-stage' && typeof r.key === 'string' ? r : null;
  } catch {
    return null; // a damaged record only means "not done"
  }
}

function writeRecord(dir: string, r: StageRecord): void {
  writeFileAtomic(join(dir, STAGE_RECORD), JSON.stringify(r, null, 1) + '\n');
}

/** Empties a stage folder that holds another key's work (only folders this runner created: they have a record). */
function emptyStageDir(dir: string): void {
  for (const f of readdirSync(dir)) rmSync(join(dir, f), { recursive: true, force: true });
}

export async function runPipeline(cfg: PipelineConfig, o: RunPipelineOptions): Promise<PipelineResult> {
  const t0 = performance.now();
  const out = resolve(o.out);
  const display = o.progress ?? createProgress();
  const signal = o.signal ?? new AbortController().signal;
  const load = o.loadStage ?? ((name: string) => loadStage(name, cfg.file));
  let stages = cfg.stages;
  if (o.until !== undefined) {
    const i = stages.findIndex((s) => s.name === o.until);
    if (i < 0) throw badInput(cfg.file, 'stages', `a stage named "${o.until}" (--until)`, stages.map((s) => s.name));
    stages = stages.slice(0, i + 1);
  }
  for (const f of o.force ?? []) {
    if (!stages.some((s) => s.name === f)) throw badInput(cfg.file, 'stages', `a stage named "${f}" (--force)`, stages.map((s) => s.name));
  }

  // load every stage and resolve its options before any work
  const mods: StageModule[] = [];
  const opts: unknown[] = [];
  for (const s of stages) {
    const mod = await load(s.name);
    mods.push(mod);
    opts.push(mod.options ? mod.options(s.options, { file: cfg.file, field: `stages.${s.name}` }, cfg) : s.options);
  }
  const folders = new Map<string, string>();
  stages.forEach((s, i) => {
    const f = mods[i].folder ?? s.name;
    if (!/^[A-Za-z0-9._-]+$/.test(f) || f.startsWith('.')) throw new PolarError('unsupported', `stage ${s.name}: folder: expected a plain folder name, received ${JSON.stringify(f)}`);
    if (folders.has(f)) throw badInput(cfg.file, `stages.${s.name}`, `a stage whose folder differs from stage ${folders.get(f)}'s`, f);
    folders.set(f, s.name);
  });
  const inputsOf = (i: number): string[] => {
    const declared = mods[i].inputs;
    const earlier = stages.slice(0, i).map((s) => s.name);
    if (!declared) return earlier;
    for (const d of declared) {
      if (!earlier.includes(d)) {
        throw badInput(cfg.file, `stages.${stages[i].name}`, `to come after the stages it reads (${declared.join(', ')}); "${d}" is ${stages.some((s) => s.name === d) ? 'later' : 'missing'}`, stages.map((s) => s.name));
      }
    }
    return [...declared];
  };
  for (let i = 0; i < stages.length; i++) inputsOf(i);

  let model: LoadedModel | null = null;
  const getModel = () => (model ??= loadModel(cfg.model));
  mkdirSync(out, { recursive: true });
  const outputs = new Map<string, StageOutput>();
  const reports: StageReport[] = [];
  const version = toolVersion();

  for (let i = 0; i < stages.length; i++) {
    if (signal.aborted) throw new PolarError('interrupted', `pipeline interrupted before stage ${stages[i].name}`);
    const name = stages[i].name;
    const mod = mods[i];
    const dir = join(out, mod.folder ?? name);
    const label = `[${i + 1}/${stages.length}] ${name}`;
    const inputs: Record<string, StageOutput> = {};
    for (const n of inputsOf(i)) inputs[n] = outputs.get(n)!;
    const base: FingerprintContext = {
      stage: name,
      index: i,
      count: stages.length,
      runDir: out,
      pipeline: cfg,
      options: opts[i] as Record<string, unknown>,
      inputs,
      model: getModel,
      log: (m: string) => display.log(m),
      signal,
      toolVersion: version,
    };
    const identity = getModel().identity();
    const fp = mod.fingerprint ? await mod.fingerprint(base) : null;
    const inputKeys = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.key]));
    const key = hashOf({
      tool: version,
      stage: name,
      stage_version: mod.version ?? null,
      options: opts[i] ?? null,
      model: identity,
      inputs: inputKeys,
      fingerprint: fp ?? null,
    });

    const rec = existsSync(dir) ? readRecord(dir) : null;
    const forced = (o.force ?? []).includes(name);
    if (rec && rec.status === 'done' && rec.key === key && !forced) {
      const summary = rec.summary ?? {};
      outputs.set(name, { stage: name, dir, key, summary });
      reports.push({ stage: name, dir, key, cached: true, seconds: 0, summary });
      display.log(`${label}: cached (key ${key.slice(0, 12)}, ${dir})`);
      continue;
    }
    if (existsSync(dir) && rec && (rec.key !== key || forced)) {
      display.log(`${label}: ${forced ? 'forced' : 'inputs changed'}: starting over in ${dir}`);
      emptyStageDir(dir);
    } else if (rec && rec.status === 'running') {
      display.log(`${label}: resuming the unfinished run in ${dir}`);
    }
    mkdirSync(dir, { recursive: true });
    const running: StageRecord = { format: 'polar-stage', stage: name, status: 'running', key, tool_version: version, options: opts[i] ?? null, inputs: inputKeys };
    writeRecord(dir, running);
    const tasks: ReturnType<ProgressDisplay['task']>[] = [];
    const ctx: StageContext = {
      ...base,
      dir,
      key,
      progress: (unit = 'items') => {
        const t = display.task(label, unit);
        tasks.push(t);
        return t;
      },
    };
    const ts = performance.now();
    let result: Awaited<ReturnType<StageModule['run']>>;
    try {
      result = await mod.run(ctx);
    } finally {
      for (const t of tasks) t.end();
    }
    const seconds = (performance.now() - ts) / 1000;
    const summary = (result && result.summary) || {};
    writeRecord(dir, { ...running, status: 'done', summary, seconds, finished_at: new Date().toISOString() });
    outputs.set(name, { stage: name, dir, key, summary });
    reports.push({ stage: name, dir, key, cached: false, seconds, summary });
    display.log(`${label}: done in ${formatDuration(seconds)}`);
  }
  if (!o.progress) display.close();
  return { out, stages: reports, seconds: (performance.now() - t0) / 1000 };
}

/** A plain-text table of a run: stage, cached or time, key prefix, folder, and a few summary numbers. */
export function summaryTable(r: PipelineResult): string {
  const rows = r.stages.map((s) => {
    const nums = Object.entries(s.summary)
      .filter(([, v]) => typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean')
      .slice(0, 4)
      .map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(4) : String(v).length > 24 ? String(v).slice(0, 21) + '...' : v}`)
      .join(' ');
    return [s.stage, s.cached ? 'cached' : formatDuration(s.seconds), s.key.slice(0, 12), nums];
  });
  const head = ['stage', 'time', 'key', 'summary'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(w[i]))).join('  ');
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line), `total ${formatDuration(r.seconds)} in ${r.out}`].join('\n');
}
