// Model identity = sha256 of config.json and of the weight files. Artifacts and activation shards carry it
// so that a reader can refuse data made from another model. Hashing gigabytes takes a while, so results are
// cached per (path, size, mtime) under $XDG_CACHE_HOME/polar (or ~/.cache/polar).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { listSafetensorsFiles } from './weights.ts';
import { sha256OfFile } from '../formats/sha256.ts';

export interface ModelIdentity {
  configSha256: string;
  weightsSha256: string;
}

function cacheFile(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'polar', 'file-hashes.json');
}

export function sha256File(file: string): string {
  const st = statSync(file);
  const key = `${file}|${st.size}|${st.mtimeMs}`;
  const cf = cacheFile();
  let cache: Record<string, string> = {};
  try {
    if (existsSync(cf)) cache = JSON.parse(readFileSync(cf, 'utf8'));
  } catch {
    cache = {};
  }
  if (cache[key]) return cache[key];
  const digest = sha256OfFile(file);
  try {
    cache[key] = digest;
    mkdirSync(join(cf, '..'), { recursive: true });
    writeFileSync(`${cf}.${process.pid}.tmp`, JSON.stringify(cache));
    renameSync(`${cf}.${process.pid}.tmp`, cf);
  } catch {
    // the cache is an optimisation only
  }
  return digest;
}

export function modelIdentity(dir: string): ModelIdentity {
  const configSha256 = sha256File(join(dir, 'config.json'));
  const files = listSafetensorsFiles(dir);
  let weightsSha256: string;
  if (files.length === 1) {
    weightsSha256 = sha256File(files[0]);
  } else {
    // sharded: hash of the shards' hashes in name order
    const h = createHash('sha256');
    for (const f of files) h.update(sha256File(f));
    weightsSha256 = h.digest('hex');
  }
  return { configSha256, weightsSha256 };
}
