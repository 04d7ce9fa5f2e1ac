// Kill test: `polar collect` in a child process is killed with SIGKILL mid-run (twice), rerun, and the
// shards (and manifest) equal those of an uninterrupted run byte for byte. Also: the collect stage through
// the pipeline runner.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collect } from '../../src/stages/collect/collect.ts';
import { parsePipeline } from '../../src/pipeline/config.ts';
import { runPipeline } from '../../src/pipeline/runner.ts';
import { openActivations } from '../../src/arrow/reader.ts';
import { silentProgress } from '../../src/progress/index.ts';

const root = join(import.meta.dirname, '..', '..');
const model = join(root, 'data/models/tiny-opt');
const ARGS = ['--tokens', '24000', '--seq-len', '64', '--shard-tokens', '1024', '--batch', '4'];

/** `polar` as a user runs it: node bin/polar.js (src/cli/main.ts through tsx) */
function cliEntry(): string[] {
  return [join(root, 'bin/polar.js')];
}

function shards(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.arrow')).sort();
}

function recorded(dir: string): number {
  try {
    return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).shards.length;
  } catch {
    return 0; // not there yet, or caught between write and rename of its .tmp
  }
}

/** Runs the CLI and SIGKILLs it once `when()` holds; resolves with how it ended. */
function runAndKill(out: string, when: () => boolean): Promise<{ signal: string | null; code: number | null; stderr: string }> {
  return new Promise((resolveP) => {
    const child = spawn(process.execPath, [...cliEntry(), 'collect', model, '--out', out, ...ARGS], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setInterval(() => {
      if (when()) {
        child.kill('SIGKILL');
        clearInterval(timer);
      }
    }, 3);
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      resolveP({ code, signal, stderr });
    });
  });
}

describe('collect: kill and resume', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'polar-kill-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('SIGKILL mid-run twice, rerun: shards byte-equal to an uninterrupted run', async () => {
    const ref = join(dir, 'ref');
    const refRes = await collect({ modelDir: model, out: ref, tokens: 24000, seqLen: 64, shardTokens: 1024, batch: 4 });
    expect(refRes.files.length).toBe(24 * 2);

    const out = join(dir, 'killed');
    const k1 = await runAndKill(out, () => recorded(out) >= 3);
    expect(k1.signal, k1.stderr).toBe('SIGKILL');
    const after1 = recorded(out);
    expect(after1).toBeGreaterThanOrEqual(3);
    expect(after1).toBeLessThan(24);
    // second kill: as soon as a shard is being written (a .tmp exists), or a few ranges later
    const k2 = await runAndKill(out, () => readdirSync(out).some((f) => f.endsWith('.tmp')) || recorded(out) >= after1 + 6);
    expect(k2.signal, k2.stderr).toBe('SIGKILL');
    expect(k2.stderr).toMatch(/resuming after \d+ complete shard range/);
    expect(recorded(out)).toBeLessThan(24);

    const final = spawnSync(process.execPath, [...cliEntry(), 'collect', model, '--out', out, ...ARGS, '--json'], { cwd: root, encoding: 'utf8' });
    expect(final.status, final.stderr).toBe(0);
    const summary = JSON.parse(final.stdout);
    expect(summary.resumed_tokens).toBeGreaterThan(0);
    expect(summary.tokens).toBe(24000);
    expect(summary.bytes_per_token).toBeGreaterThan(0);
    expect(readdirSync(out).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(shards(out)).toEqual(shards(ref));
    for (const f of shards(ref)) expect(readFileSync(join(out, f)).equals(readFileSync(join(ref, f))), f).toBe(true);
    expect(readFileSync(join(out, 'manifest.json'), 'utf8')).toBe(readFileSync(join(ref, 'manifest.json'), 'utf8'));

    // a rerun of a complete collection does nothing
    const again = spawnSync(process.execPath, [...cliEntry(), 'collect', model, '--out', out, ...ARGS, '--json'], { cwd: root, encoding: 'utf8' });
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).cached).toBe(true);

    // bad options exit 2 with a message naming the option
    const bad = spawnSync(process.execPath, [...cliEntry(), 'collect', model, '--out', out, '--tokens', 'many'], { cwd: root, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--tokens: expected an integer/);
  });

  it('the collect stage through the pipeline runner: cached on rerun, recollects when options change', async () => {
    const here = join(root, 'test', 'pipeline', 'inline.yaml');
    const cfg = (tokens: number) => parsePipeline(`name: t\nmodel: ../../data/models/tiny-opt\ncorpus: {train: default:eval}\nstages:\n  collect: {tokens: ${tokens}, seq_len: 32, shard_tokens: 256}\n`, here);
    const out = join(dir, 'run');
    const r1 = await runPipeline(cfg(700), { out, progress: silentProgress });
    expect(r1.stages[0].cached).toBe(false);
    expect(r1.stages[0].summary.tokens).toBe(700);
    const acts = openActivations(r1.stages[0].dir);
    expect(acts.tokens).toBe(700);
    const r2 = await runPipeline(cfg(700), { out, progress: silentProgress });
    expect(r2.stages[0].cached).toBe(true);
    const r3 = await runPipeline(cfg(300), { out, progress: silentProgress });
    expect(r3.stages[0].cached).toBe(false);
    expect(openActivations(join(out, 'collect')).tokens).toBe(300);
    expect(existsSync(join(out, 'collect', '.stage.json'))).toBe(true);
  });
});
