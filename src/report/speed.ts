// Speed tables of the report from benchmark output: a JSON file (an array of records, or an object whose
// `results`/`rows` array holds them, or one record) or JSON lines (one record per line, as `npm run
// bench:cpu` prints). Records are flattened (nested keys joined with "."), one table per file.
import { readFileSync } from 'node:fs';
import { badInput } from '../errors.ts';
import type { SpeedTable } from './types.ts';

type Cell = string | number | null;

function flatten(o: unknown, prefix: string, out: Record<string, Cell>): void {
  if (o === null || typeof o === 'number' || typeof o === 'string' || typeof o === 'boolean') {
    out[prefix || 'value'] = typeof o === 'boolean' ? String(o) : (o as Cell);
  } else if (Array.isArray(o)) {
    out[prefix || 'value'] = o.every((x) => typeof x === 'number' || typeof x === 'string') ? o.join(', ') : JSON.stringify(o);
  } else if (typeof o === 'object') {
    for (const [k, v] of Object.entries(o as Record<string, unknown>)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  }
}

export function speedTableOf(records: unknown[], source: string): SpeedTable {
  const rows = records.map((r) => {
    const f: Record<string, Cell> = {};
    flatten(r, '', f);
    return f;
  });
  const columns: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!columns.includes(k)) columns.push(k);
  return { source, columns, rows: rows.map((r) => columns.map((c) => (c in r ? r[c] : null))) };
}

export function readSpeedFile(file: string): SpeedTable {
  const text = readFileSync(file, 'utf8');
  let records: unknown[];
  try {
    const j = JSON.parse(text) as unknown;
    if (Array.isArray(j)) records = j;
    else if (j && typeof j === 'object' && Array.isArray((j as Record<string, unknown>).results)) records = (j as Record<string, unknown[]>).results;
    else if (j && typeof j === 'object' && Array.isArray((j as Record<string, unknown>).rows)) records = (j as Record<string, unknown[]>).rows;
    else records = [j];
  } catch {
    records = [];
    for (const [i, line] of text.split('\n').entries()) {
      if (!line.trim()) continue;
      try {
        records.push(JSON.parse(line));
      } catch (e) {
        throw badInput(`${file}:${i + 1}`, '(line)', 'JSON, or one JSON record per line (benchmark output)', (e as Error).message, true);
      }
    }
  }
  return speedTableOf(records, file);
}
