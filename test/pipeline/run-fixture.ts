// Shared by the run*/validate* pipeline tests: the tiny-opt pipeline with small budgets, and the CLI as a
// user runs it (node bin/polar.js; POLAR_TEST_CLI="<file.js> [args]" runs another entry, for development).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { root } from '../helpers.ts';

export const TINY_PIPELINE = (model: string) => `version: 1
name: tiny-opt-test
model: ${model}
corpus:
  train: default:train
  eval: default:eval
targets:
  batch_sizes: [1, 4, 16]
  validate_batch_sizes: [1, 4]
stages:
  collect: { tokens: 8192, seq_len: 128, batch: 8 }
  train: { epochs: 3 }
  calibrate: { tokens: 1024, eval_batch: 4, max_rows: 2048, max_ppl_increase: 0.05 }
  export: {}
  validate: { max_tokens: 1024, max_ppl_increase: 0.5 }
  report: {}
`;

export function cliEntry(): string[] {
  const e = process.env.POLAR_TEST_CLI;
  return e ? e.split(' ').filter(Boolean) : [join(root, 'bin/polar.js')];
}

export function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const r = spawnSync(process.execPath, [...cliEntry(), ...args], { cwd: root, encoding: 'utf8', timeout: opts.timeout ?? 300_000, env: opts.env ?? process.env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

/** Whether the CLI has these commands (they are registered in src/cli/main.ts by the lead). */
let help: string | null = null;
export function cliHas(...cmds: string[]): boolean {
  help ??= cli(['--help'], { timeout: 60_000 }).stdout ?? '';
  return cmds.every((c) => new RegExp(`^\\s+${c}\\b`, 'm').test(help!));
}
