// Kill test: `polar run` (a child process: node bin/polar.js run ...) is SIGKILLed during each stage in
// turn, rerun after every kill, and the finished run's artifact is byte-identical to an uninterrupted run's
// (SOURCE_DATE_EPOCH fixes the manifest's createdAt), as are the validation results.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { nativeAvailable } from '../../src/runtime/index.ts';
import { models, root } from '../helpers.ts';
import { cliEntry, cliHas, TINY_PIPELINE } from './run-fixture.ts';

const na = nativeAvailable();
const wired = cliHas('run');
if (!na.ok) console.log(`run-kill: skipped: ${na.reason.split('\n')[0]}`);
else if (!wired) console.log('run-kill: skipped: `polar run` is not registered in src/cli/main.ts yet');

const ENV = { ...process.env, SOURCE_DATE_EPOCH: '1700000000' };
const FOLDERS: Record<string, string> = { collect: 'collect', train: 'train', calibrate: 'calibrate', export: 'artifact', validate: 'validate', report: 'report' };

function stageStatus(out: string, stage: string): string | null {
  try {
    return JSON.parse(readFileSync(join(out, FOLDERS[stage], '.stage.json'), 'utf8')).status;
  } catch {
    return null;
  }
}

function hashes(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir)
      .filter((f) => !f.startsWith('.'))
      .sort()
      .map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]),
  );
}

/** Runs `polar run` and SIGKILLs it as soon as `stage` is running; resolves with how it ended. */
function runAndKill(yaml: string, out: string, stage: string): Promise<{ killed: boolean; code: number | null; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [...cliEntry(), 'run', yaml, '--out', out], { cwd: root, env: ENV, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    let killed = false;
    const timer = setInterval(() => {
      if (!killed && stageStatus(out, stage) === 'running') {
        killed = child.kill('SIGKILL');
        clearInterval(timer);
      }
    }, 2);
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      done({ killed: signal === 'SIGKILL', code, stderr });
    });
  });
}

describe.skipIf(!na.ok || !wired)('polar run: kill and resume', () => {
  let dir: string;
  let yaml: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'polar-run-kill-'));
    yaml = join(dir, 'tiny.yaml');
    writeFileSync(yaml, TINY_PIPELINE(models.tinyOpt));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('SIGKILL during each stage, rerun each time: the same artifact hashes as an uninterrupted run', async () => {
    const ref = join(dir, 'ref');
    const r = spawnSync(process.execPath, [...cliEntry(), 'run', yaml, '--out', ref], { cwd: root, env: ENV, encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stderr).toBe(0);

    const out = join(dir, 'killed');
    const killedIn: string[] = [];
    for (const stage of ['collect', 'train', 'calibrate', 'export', 'validate', 'report']) {
      if (stageStatus(out, stage) === 'done') continue; // the previous kill landed after this stage
      const k = await runAndKill(yaml, out, stage);
      if (k.killed) {
        killedIn.push(stage);
        expect(stageStatus(out, stage), `${stage}: ${k.stderr}`).not.toBe('done');
      } else {
        expect(k.code, k.stderr).toBe(0); // finished before the kill could land
      }
    }
    // at least the long stages were interrupted mid-way
    for (const s of ['collect', 'train', 'calibrate', 'validate']) expect(killedIn).toContain(s);

    const fin = spawnSync(process.execPath, [...cliEntry(), 'run', yaml, '--out', out], { cwd: root, env: ENV, encoding: 'utf8', timeout: 300_000 });
    expect(fin.status, fin.stderr).toBe(0);
    expect(hashes(join(out, 'artifact'))).toEqual(hashes(join(ref, 'artifact')));
    const v = (d: string) => JSON.parse(readFileSync(join(d, 'validate', 'validate.json'), 'utf8')).results;
    expect(v(out)).toEqual(v(ref));
    expect(existsSync(join(out, 'report.html'))).toBe(true);
    // and a further run does no work
    const again = spawnSync(process.execPath, [...cliEntry(), 'run', yaml, '--out', out, '--json'], { cwd: root, env: ENV, encoding: 'utf8', timeout: 120_000 });
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).stages.every((s: { cached: boolean }) => s.cached)).toBe(true);
  }, 600_000);
});
