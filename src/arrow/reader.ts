// The one reader of activation shards. openActivations(dir) checks every shard of a folder up front from
// its schema alone (cheap: the schema message at the start of the file plus the trailing magic), so that a
// truncated, foreign (other model, other schema version, not a polar shard) or missing shard fails before
// any training starts, with an error naming the file. Row data is then streamed one shard at a time.
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as A from 'apache-arrow';
// the footer parser is not re-exported by the package root; the package exports its modules as ./*
import { Footer } from 'apache-arrow/ipc/metadata/file';
import { badInput, notFound, PolarError } from '../errors.ts';
import { f16ToF32Array } from './f16.ts';
import { bitBytes, checkFields, COLUMNS, META_KEYS, metaFromArrow, type FullShardMeta } from './schema.ts';
import type { ActivationBatch, ActivationDir, LayerShards, OpenActivationsOptions } from './types.ts';

const MAGIC = Buffer.from('ARROW1');
/** name of the per-run manifest that `polar collect` keeps beside the shards */
export const COLLECT_MANIFEST = 'manifest.json';

function readRange(fd: number, start: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let off = 0;
  while (off < length) {
    const n = readSync(fd, buf, off, length - off, start + off);
    if (n <= 0) break;
    off += n;
  }
  return off === length ? buf : buf.subarray(0, off);
}

function truncated(file: string, why: string): PolarError {
  return badInput(file, '(file)', 'a complete Arrow IPC file (polar activation shard)', `${why}: the file is truncated or not an Arrow file; delete it and rerun polar collect to rewrite it`, true);
}

/** Reads and checks a shard's metadata without reading its rows. */
export function readShardMeta(file: string): FullShardMeta {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    throw notFound(file, 'activation shard');
  }
  try {
    const size = fstatSync(fd).size;
    if (size < 8 + 8 + 10) throw truncated(file, `${size} bytes`);
    const head = readRange(fd, 0, 8);
    if (!head.subarray(0, 6).equals(MAGIC)) throw truncated(file, 'no ARROW1 magic at the start');
    const tail = readRange(fd, size - 6, 6);
    if (!tail.equals(MAGIC)) throw truncated(file, 'no ARROW1 magic at the end');
    // file layout: ... [footer flatbuffer][int32 footer length]["ARROW1"]; the footer holds the schema and
    // the (offset, length) of every record batch, which must lie inside the file
    const flen = readRange(fd, size - 10, 4).readInt32LE(0);
    if (flen <= 0 || flen > size - 18) throw truncated(file, `bad footer length ${flen}`);
    const fbuf = readRange(fd, size - 10 - flen, flen);
    let schema: A.Schema;
    try {
      const footer = Footer.decode(new Uint8Array(fbuf));
      schema = footer.schema;
      if (!schema) throw new Error('no schema in the footer');
      for (const b of footer.recordBatches()) {
        if (b.offset + b.metaDataLength + b.bodyLength > size - 10 - flen) throw new Error(`record batch at ${b.offset} runs past the footer`);
      }
    } catch (e) {
      throw truncated(file, `unreadable footer (${(e as Error).message})`);
    }
    const meta = metaFromArrow(file, schema.metadata);
    checkFields(file, schema, meta);
    return meta;
  } finally {
    closeSync(fd);
  }
}

export interface ShardData {
  file: string;
  meta: FullShardMeta;
  batches: A.RecordBatch[];
}

/** Reads a whole shard and checks it (metadata, columns, row count). */
export function parseShard(file: string, bytes: Uint8Array): ShardData {
  if (bytes.length < 26 || !Buffer.from(bytes.buffer, bytes.byteOffset, 6).equals(MAGIC)) throw truncated(file, 'no ARROW1 magic at the start');
  if (!Buffer.from(bytes.buffer, bytes.byteOffset + bytes.length - 6, 6).equals(MAGIC)) throw truncated(file, 'no ARROW1 magic at the end');
  let schema: A.Schema;
  let batches: A.RecordBatch[];
  try {
    const reader = A.RecordBatchReader.from(bytes);
    reader.open();
    schema = reader.schema; // (the reader forgets it once iterated)
    if (!reader.isFile()) throw new Error('an Arrow stream, not an Arrow file');
    batches = [...reader];
  } catch (e) {
    throw truncated(file, (e as Error).message);
  }
  const meta = metaFromArrow(file, schema.metadata);
  checkFields(file, schema, meta);
  const rows = batches.reduce((a, b) => a + b.numRows, 0);
  if (rows !== meta.tokenEnd - meta.tokenStart) {
    throw badInput(file, 'rows', `${meta.tokenEnd - meta.tokenStart} (token_start ${meta.tokenStart} to token_end ${meta.tokenEnd})`, rows);
  }
  return { file, meta, batches };
}

export function readShard(file: string): ShardData {
  if (!existsSync(file)) throw notFound(file, 'activation shard');
  return parseShard(file, readFileSync(file));
}

function childValues<T extends Float32Array | Uint16Array | Uint8Array | Int32Array>(d: A.Data, width: number, rows: number, first: number): T {
  // FixedSizeList: values of row i are child[(offset + i) * width ...]; FixedSizeBinary: data bytes likewise
  const child = d.children.length ? d.children[0] : d;
  const base = d.children.length ? (d.offset + first) * width + child.offset : (d.offset + first) * width;
  return (child.values as T).subarray(base, base + rows * width) as T;
}

/** Decodes rows [first, first + rows) of a record batch into an ActivationBatch (fp32, fresh arrays). */
export function decodeRows(meta: FullShardMeta, b: A.RecordBatch, first: number, rows: number): ActivationBatch {
  const col = (name: string): A.Data => {
    const v = b.getChild(name);
    if (!v || v.data.length !== 1) throw new Error(`column ${name}: expected one data chunk`);
    return v.data[0];
  };
  const seqId = Int32Array.from(childValues<Int32Array>(col(COLUMNS.seqId), 1, rows, first));
  const position = Int32Array.from(childValues<Int32Array>(col(COLUMNS.position), 1, rows, first));
  const ri = childValues<Float32Array | Uint16Array>(col(COLUMNS.routerInput), meta.hidden, rows, first);
  const routerInput = ri instanceof Uint16Array ? f16ToF32Array(ri) : Float32Array.from(ri);
  const mlpBits = meta.mlpActivity === 'bits' ? Uint8Array.from(childValues<Uint8Array>(col(COLUMNS.mlpActive), bitBytes(meta.ffn), rows, first)) : null;
  const mlpAct = meta.mlpActivity === 'f16' ? f16ToF32Array(childValues<Uint16Array>(col(COLUMNS.mlpAct), meta.ffn, rows, first)) : null;
  const headNorm = Float32Array.from(childValues<Float32Array>(col(COLUMNS.headNorm), meta.heads, rows, first));
  return { rows, seqId, position, routerInput, mlpBits, mlpAct, headNorm };
}

/** Concatenates batches of one layer (same widths). */
export function concatBatches(parts: ActivationBatch[], meta: FullShardMeta): ActivationBatch {
  const rows = parts.reduce((a, p) => a + p.rows, 0);
  const out: ActivationBatch = {
    rows,
    seqId: new Int32Array(rows),
    position: new Int32Array(rows),
    routerInput: new Float32Array(rows * meta.hidden),
    mlpBits: meta.mlpActivity === 'bits' ? new Uint8Array(rows * bitBytes(meta.ffn)) : null,
    mlpAct: meta.mlpActivity === 'f16' ? new Float32Array(rows * meta.ffn) : null,
    headNorm: new Float32Array(rows * meta.heads),
  };
  let at = 0;
  for (const p of parts) {
    out.seqId.set(p.seqId, at);
    out.position.set(p.position, at);
    out.routerInput.set(p.routerInput, at * meta.hidden);
    if (out.mlpBits) out.mlpBits.set(p.mlpBits!, at * bitBytes(meta.ffn));
    if (out.mlpAct) out.mlpAct.set(p.mlpAct!, at * meta.ffn);
    out.headNorm.set(p.headNorm, at * meta.heads);
    at += p.rows;
  }
  return out;
}

const IDENTITY_KEYS = ['configSha256', 'weightsSha256', 'family', 'modelLayers', 'hidden', 'ffn', 'heads', 'kvHeads', 'headDim', 'mlpActivity', 'routerInputDtype', 'headNormDtype', 'corpusSha256'] as const;

interface ManifestView {
  complete?: unknown;
  shards?: { files?: { file?: unknown; bytes?: unknown }[] }[];
}

/**
 * Opens a folder of activation shards (what `polar collect` writes, or another engine following
 * data/README.md). Every shard's schema is checked now; rows are read by `layer(l).batches()`.
 */
export function openActivations(dirIn: string, opts: OpenActivationsOptions = {}): ActivationDir {
  const dir = resolve(dirIn);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw notFound(dir, 'activations folder', 'run `polar collect <modelDir> --out <dir>` first');
  const manifestFile = join(dir, COLLECT_MANIFEST);
  let files: string[];
  const sizes = new Map<string, number>();
  if (existsSync(manifestFile)) {
    let man: ManifestView;
    try {
      man = JSON.parse(readFileSync(manifestFile, 'utf8'));
    } catch (e) {
      throw badInput(manifestFile, '(file)', 'valid JSON', (e as Error).message, true);
    }
    if ((opts.requireComplete ?? true) && man.complete !== true) {
      throw badInput(manifestFile, 'complete', 'true (a finished collection; rerun the same `polar collect` command to finish it)', man.complete);
    }
    files = [];
    for (const s of man.shards ?? []) {
      for (const f of s.files ?? []) {
        if (typeof f.file !== 'string') throw badInput(manifestFile, 'shards[].files[].file', 'a file name', f.file);
        files.push(join(dir, f.file));
        if (typeof f.bytes === 'number') sizes.set(join(dir, f.file), f.bytes);
      }
    }
  } else {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.arrow'))
      .sort()
      .map((f) => join(dir, f));
  }
  if (!files.length) throw notFound(dir, 'activation shards (*.arrow)', 'run `polar collect <modelDir> --out <dir>` first');

  const byLayer = new Map<number, { file: string; meta: FullShardMeta }[]>();
  let first: { file: string; meta: FullShardMeta } | null = null;
  let bytes = 0;
  for (const file of files) {
    if (!existsSync(file)) throw notFound(file, 'activation shard listed in manifest.json', 'rerun polar collect');
    const size = statSync(file).size;
    const want = sizes.get(file);
    if (want !== undefined && want !== size) throw badInput(file, 'size', `${want} bytes (as recorded in ${manifestFile})`, `${size} bytes: the shard is truncated or was replaced; delete it and rerun polar collect`, true);
    bytes += size;
    const meta = readShardMeta(file);
    if (!first) first = { file, meta };
    else {
      for (const k of IDENTITY_KEYS) {
        if (meta[k] !== first.meta[k]) {
          throw badInput(file, `schema metadata "${META_KEYS[k]}"`, `${JSON.stringify(first.meta[k])} (as in ${first.file}; shards of one folder come from one model and one collection)`, meta[k]);
        }
      }
    }
    if (opts.expect) {
      for (const k of ['configSha256', 'weightsSha256'] as const) {
        if (meta[k] !== opts.expect[k]) {
          throw badInput(file, `schema metadata "${META_KEYS[k]}"`, `${opts.expect[k]} (the model in use; this shard comes from another model)`, meta[k]);
        }
      }
    }
    const list = byLayer.get(meta.layer) ?? [];
    list.push({ file, meta });
    byLayer.set(meta.layer, list);
  }
  const layers = [...byLayer.keys()].sort((a, b) => a - b);
  let tokens = -1;
  for (const l of layers) {
    const list = byLayer.get(l)!.sort((a, b) => a.meta.tokenStart - b.meta.tokenStart);
    let next = 0;
    for (const s of list) {
      if (s.meta.tokenStart !== next) {
        throw badInput(s.file, 'schema metadata "token_start"', `${next} (layer ${l}'s shards must cover the tokens without gaps or overlaps)`, s.meta.tokenStart);
      }
      next = s.meta.tokenEnd;
    }
    if (tokens < 0) tokens = next;
    else if (next !== tokens) {
      const last = list[list.length - 1];
      throw badInput(last.file, 'schema metadata "token_end"', `${tokens} (every layer covers the same tokens; layer ${layers[0]} ends there)`, next);
    }
  }
  const layerObj = new Map<number, LayerShards>();
  const set: ActivationDir = {
    dir,
    layers,
    tokens,
    bytes,
    meta: first!.meta,
    layer(l: number): LayerShards {
      const list = byLayer.get(l);
      if (!list) throw badInput(dir, 'layer', `one of the collected layers ${JSON.stringify(layers)}`, l);
      let obj = layerObj.get(l);
      if (!obj) {
        obj = makeLayer(l, list, tokens);
        layerObj.set(l, obj);
      }
      return obj;
    },
  };
  return set;
}

function makeLayer(layer: number, shards: { file: string; meta: FullShardMeta }[], rows: number): LayerShards {
  const meta = shards[0].meta;
  const batches = async function* (opts: { blockRows?: number } = {}): AsyncGenerator<ActivationBatch> {
    const block = opts.blockRows ?? 4096;
    if (!Number.isSafeInteger(block) || block < 1) throw new RangeError(`batches(): blockRows must be a positive integer, received ${block}`);
    for (const s of shards) {
      const data = parseShard(s.file, await readFile(s.file));
      if (data.meta.tokenStart !== s.meta.tokenStart || data.meta.tokenEnd !== s.meta.tokenEnd || data.meta.layer !== layer) {
        throw badInput(s.file, 'schema metadata', `layer ${layer}, tokens [${s.meta.tokenStart}, ${s.meta.tokenEnd}) as when the folder was opened`, `layer ${data.meta.layer}, tokens [${data.meta.tokenStart}, ${data.meta.tokenEnd}): the file changed`, true);
      }
      for (const b of data.batches) {
        for (let r = 0; r < b.numRows; r += block) yield decodeRows(data.meta, b, r, Math.min(block, b.numRows - r));
      }
    }
  };
  return {
    layer,
    meta,
    rows,
    files: shards.map((s) => s.file),
    batches,
    async readAll(): Promise<ActivationBatch> {
      const parts: ActivationBatch[] = [];
      for await (const b of batches({ blockRows: Number.MAX_SAFE_INTEGER })) parts.push(b);
      return parts.length === 1 ? parts[0] : concatBatches(parts, meta);
    },
  };
}
