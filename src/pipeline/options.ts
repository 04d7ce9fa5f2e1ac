// Strict reading of a YAML mapping (pipeline sections, stage options): every getter checks the type and
// range and names the file and the field; done() refuses keys nobody asked for (typos).
//
//   const r = optionReader(raw, where);           // where = { file, field: 'stages.collect' }
//   const tokens = r.int('tokens', 200_000, 1);
//   const dtype = r.oneOf('router_dtype', ['f16', 'f32'] as const, 'f16');
//   r.done();                                      // "...: stages.collect.tokns: expected one of tokens, ..."
import { badInput } from '../errors.ts';
import type { OptionsWhere } from './types.ts';

export interface OptionReader {
  int(name: string, fallback: number | undefined, min?: number, max?: number): number;
  optInt(name: string, min?: number, max?: number): number | undefined;
  num(name: string, fallback: number | undefined, min?: number, max?: number): number;
  bool(name: string, fallback: boolean): boolean;
  str(name: string, fallback?: string): string;
  optStr(name: string): string | undefined;
  oneOf<T extends string>(name: string, allowed: readonly T[], fallback?: T): T;
  optOneOf<T extends string>(name: string, allowed: readonly T[]): T | undefined;
  intList(name: string, fallback: number[] | undefined, min?: number): number[];
  optIntList(name: string, min?: number): number[] | undefined;
  numList(name: string, fallback: number[] | undefined, min?: number, max?: number): number[];
  /** a nested mapping (or {} when absent) */
  map(name: string): Record<string, unknown>;
  /** the raw value, marking the key as known */
  raw(name: string): unknown;
  has(name: string): boolean;
  /** throws on keys that no getter asked for */
  done(): void;
}

export function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function optionReader(rawIn: unknown, where: OptionsWhere): OptionReader {
  const f = (name: string) => (where.field ? `${where.field}.${name}` : name);
  if (rawIn !== undefined && rawIn !== null && !isMapping(rawIn)) throw badInput(where.file, where.field || '(file)', 'a mapping', rawIn);
  const raw: Record<string, unknown> = (rawIn as Record<string, unknown>) ?? {};
  const known = new Set<string>();
  const get = (name: string): unknown => {
    known.add(name);
    return raw[name] === null ? undefined : raw[name];
  };
  const intCheck = (name: string, v: unknown, min: number, max: number): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
      throw badInput(where.file, f(name), `an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}]`, v);
    }
    return v;
  };
  const numCheck = (name: string, v: unknown, min: number, max: number): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw badInput(where.file, f(name), `a number in [${min}, ${max}]`, v);
    return v;
  };
  const r: OptionReader = {
    int(name, fallback, min = 0, max = Number.MAX_SAFE_INTEGER) {
      const v = get(name);
      if (v === undefined) {
        if (fallback === undefined) throw badInput(where.file, f(name), 'an integer', undefined);
        return fallback;
      }
      return intCheck(name, v, min, max);
    },
    optInt(name, min = 0, max = Number.MAX_SAFE_INTEGER) {
      const v = get(name);
      return v === undefined ? undefined : intCheck(name, v, min, max);
    },
    num(name, fallback, min = -Infinity, max = Infinity) {
      const v = get(name);
      if (v === undefined) {
        if (fallback === undefined) throw badInput(where.file, f(name), 'a number', undefined);
        return fallback;
      }
      return numCheck(name, v, min, max);
    },
    bool(name, fallback) {
      const v = get(name);
      if (v === undefined) return fallback;
      if (typeof v !== 'boolean') throw badInput(where.file, f(name), 'true or false', v);
      return v;
    },
    str(name, fallback) {
      const v = get(name);
      if (v === undefined) {
        if (fallback === undefined) throw badInput(where.file, f(name), 'a string', undefined);
        return fallback;
      }
      if (typeof v !== 'string' || v === '') throw badInput(where.file, f(name), 'a non-empty string', v);
      return v;
    },
    optStr(name) {
      const v = get(name);
      if (v === undefined) return undefined;
      if (typeof v !== 'string' || v === '') throw badInput(where.file, f(name), 'a non-empty string', v);
      return v;
    },
    oneOf(name, allowed, fallback) {
      const v = get(name);
      if (v === undefined) {
        if (fallback === undefined) throw badInput(where.file, f(name), `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, undefined);
        return fallback;
      }
      if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw badInput(where.file, f(name), `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, v);
      return v as (typeof allowed)[number];
    },
    optOneOf(name, allowed) {
      const v = get(name);
      if (v === undefined) return undefined;
      return r.oneOf(name, allowed);
    },
    intList(name, fallback, min = 0) {
      const v = get(name);
      if (v === undefined) {
        if (fallback === undefined) throw badInput(where.file, f(name), 'a list of integers', undefined);
        return fallback;
      }
      if (!Array.isArray(v) || v.length === 0) throw badInput(where.file, f(name), 'a non-empty list of integers', v);
      return v.map((x, i) => intCheck(`${name}[${i}]`, x, min, Number.MAX_SAFE_INTEGER));
    },
    optIntList(name, min = 0) {
      return get(name) === undefined ? undefined : r.intList(name, undefined, min);
    },
    numList(name, fallback, min = -Infinity, max = Infinity) {
      const v = get(name);
      if (v === undefined) {
        if (fallback === undefined) throw badInput(where.file, f(name), 'a list of numbers', undefined);
        return fallback;
      }
      if (!Array.isArray(v) || v.length === 0) throw badInput(where.file, f(name), 'a non-empty list of numbers', v);
      return v.map((x, i) => numCheck(`${name}[${i}]`, x, min, max));
    },
    map(name) {
      const v = get(name);
      if (v === undefined) return {};
      if (!isMapping(v)) throw badInput(where.file, f(name), 'a mapping', v);
      return v;
    },
    raw(name) {
      return get(name);
    },
    has(name) {
      return raw[name] !== undefined && raw[name] !== null;
    },
    done() {
      for (const k of Object.keys(raw)) {
        if (!known.has(k)) throw badInput(where.file, f(k), `one of the known keys (${[...known].join(', ') || 'none'})`, `an unknown key "${k}"`, true);
      }
    },
  };
  return r;
}
