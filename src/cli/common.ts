// Shared CLI plumbing: one error printer, strict numeric options, stdout/stderr discipline
// (machine-readable output on stdout only; progress and messages on stderr).
import { InvalidArgumentError } from 'commander';
import { PolarError } from '../errors.ts';

export function intOption(name: string, min = 1, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name}: expected an integer in [${min}, ${max}], received ${JSON.stringify(v)}`);
    }
    return n;
  };
}

export function floatOption(name: string, min = -Infinity, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name}: expected a number in [${min}, ${max}], received ${JSON.stringify(v)}`);
    }
    return n;
  };
}

export function intListOption(name: string, min = 1) {
  return (v: string): number[] => {
    const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
    const parse = intOption(name, min);
    if (!parts.length) throw new InvalidArgumentError(`${name}: expected a comma-separated list of integers, received ${JSON.stringify(v)}`);
    return parts.map(parse);
  };
}

/** Wraps a command action: PolarErrors print one line (no stack) and set the exit code. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void) {
  return async (...args: A): Promise<void> => {
    try {
      await fn(...args);
    } catch (e) {
      reportError(e);
    }
  };
}

export function reportError(e: unknown): never {
  if (e instanceof PolarError) {
    process.stderr.write(`polar: error: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  const err = e as Error;
  process.stderr.write(`polar: internal error: ${err?.message ?? String(e)}\n`);
  if (process.env.POLAR_DEBUG) process.stderr.write(`${err?.stack ?? ''}\n`);
  else process.stderr.write('(set POLAR_DEBUG=1 for the stack trace; please report this as a bug)\n');
  process.exit(1);
}

export function backendOption(v: string): 'cpu' | 'cuda' {
  if (v !== 'cpu' && v !== 'cuda') throw new InvalidArgumentError(`--backend: expected "cpu" or "cuda", received ${JSON.stringify(v)}`);
  return v;
}

export function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}
