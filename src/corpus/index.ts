// Corpora: where the text that the model runs over comes from, and how it becomes token sequences.
//
//   default:train | default:eval   the default corpus (src/corpus/default.ts; data/README.md)
//   <file>.txt                     UTF-8 text, one document
//   <file>.jsonl                   one JSON object per line: {"text": "..."} (field name: textField), or
//                                  {"input_ids": [1, 48, ...]}: already tokenized sequences, used as they are
//   <file>.arrow|.feather|.ipc     Arrow IPC (file or stream) with a string column (textField)
//   <file>.parquet                 Parquet with a string column (textField), read with hyparquet
//
// Text becomes tokens as in the perplexity protocol of the reference models (src/eval/protocol.ts): each
// document is split into paragraphs at blank lines ("\n\n"), each paragraph is tokenized without special
// tokens and followed by </s>. The token stream is then cut into sequences of seqLen tokens, each starting
// with <s> (when the model has one) followed by the next seqLen - 1 tokens of the stream. A budget of N
// tokens gives ceil(N / seqLen) sequences, the last one shorter when N is not a multiple of seqLen.
// Everything here is deterministic: the same corpus, tokenizer and options give the same sequences.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import * as A from 'apache-arrow';
import { badInput, notFound, PolarError } from '../errors.ts';
import type { ModelSpec, TextTokenizer } from '../model/index.ts';
import { defaultSplitText, type DefaultSplit } from './default.ts';

export { defaultSplitText, defaultSplitParts, type DefaultSplit } from './default.ts';

export type CorpusFormat = 'default' | 'txt' | 'jsonl' | 'arrow' | 'parquet';

/** One item of a corpus: a document of text, or a sequence of token ids used as is. */
export type CorpusItem = { text: string } | { ids: number[] };

export interface Corpus {
  /** "default:train", "default:eval" or the absolute path of the file */
  name: string;
  format: CorpusFormat;
  /** sha256 of the corpus bytes (the split's text for the default corpus; the file's bytes otherwise) */
  sha256: string;
  bytes: number;
  /** items in order; may be called more than once */
  items(): AsyncIterable<CorpusItem>;
}

export interface CorpusOptions {
  /** name of the text column/field of .jsonl, Arrow and Parquet files (default "text") */
  textField?: string;
}

const DEFAULT_PREFIX = 'default:';

/** Text of a source: "default:train", "default:eval" or a file path. */
export function openCorpus(source: string, opts: CorpusOptions = {}): Corpus {
  const field = opts.textField ?? 'text';
  if (source.startsWith(DEFAULT_PREFIX) || source === 'default') {
    const split = (source === 'default' ? 'train' : source.slice(DEFAULT_PREFIX.length)) as DefaultSplit;
    if (split !== 'train' && split !== 'eval') throw badInput('corpus', 'source', '"default:train", "default:eval" or a file path', source);
    const text = defaultSplitText(split);
    const buf = Buffer.from(text, 'utf8');
    return {
      name: `default:${split}`,
      format: 'default',
      sha256: sha256(buf),
      bytes: buf.length,
      items: async function* () {
        yield { text };
      },
    };
  }
  const file = resolve(source);
  if (!existsSync(file) || !statSync(file).isFile()) throw notFound(file, 'corpus file', 'give a .txt, .jsonl, .arrow or .parquet file, or default:train');
  const ext = extname(file).toLowerCase();
  const format: CorpusFormat | null =
    ext === '.txt' || ext === '.text' ? 'txt' : ext === '.jsonl' || ext === '.ndjson' ? 'jsonl' : ext === '.arrow' || ext === '.feather' || ext === '.ipc' ? 'arrow' : ext === '.parquet' ? 'parquet' : null;
  if (!format) throw badInput(file, '(file name)', 'a .txt, .jsonl, .arrow (.feather, .ipc) or .parquet file', ext || '(no extension)');
  const bytes = readFileSync(file);
  const base = { name: file, format, sha256: sha256(bytes), bytes: bytes.length };
  switch (format) {
    case 'txt':
      return { ...base, items: async function* () { yield { text: decodeUtf8(file, bytes) }; } };
    case 'jsonl':
      return { ...base, items: () => jsonlItems(file, bytes, field) };
    case 'arrow':
      return { ...base, items: () => arrowItems(file, bytes, field) };
    case 'parquet':
      return { ...base, items: () => parquetItems(file, bytes, field) };
  }
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function decodeUtf8(file: string, bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw badInput(file, '(file)', 'UTF-8 text', 'bytes that are not valid UTF-8', true);
  }
}

async function* jsonlItems(file: string, bytes: Uint8Array, field: string): AsyncGenerator<CorpusItem> {
  const text = decodeUtf8(file, bytes);
  let kind: 'text' | 'ids' | null = null;
  let lineNo = 0;
  for (const line of text.split('\n')) {
    lineNo++;
    if (line.trim() === '') continue;
    const where = `${file}:${lineNo}`;
    let j: unknown;
    try {
      j = JSON.parse(line);
    } catch (e) {
      throw badInput(where, '(line)', 'one JSON object per line', (e as Error).message, true);
    }
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw badInput(where, '(line)', 'a JSON object', j);
    const o = j as Record<string, unknown>;
    const k: 'text' | 'ids' = o.input_ids !== undefined && o[field] === undefined ? 'ids' : 'text';
    if (kind && k !== kind) throw badInput(where, k === 'ids' ? 'input_ids' : field, `every line to hold "${kind === 'ids' ? 'input_ids' : field}" like the first line`, o);
    kind = k;
    if (k === 'ids') {
      const ids = o.input_ids;
      if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => Number.isInteger(x) && x >= 0)) {
        throw badInput(where, 'input_ids', 'a non-empty array of token ids (integers >= 0)', ids);
      }
      yield { ids: ids as number[] };
    } else {
      const t = o[field];
      if (typeof t !== 'string') throw badInput(where, field, `a string (the text field; choose another with --text-field)`, t);
      yield { text: t };
    }
  }
}

async function* arrowItems(file: string, bytes: Uint8Array, field: string): AsyncGenerator<CorpusItem> {
  let reader: A.RecordBatchReader;
  try {
    reader = A.RecordBatchReader.from(bytes);
    reader.open();
  } catch (e) {
    throw badInput(file, '(file)', 'an Arrow IPC file or stream', (e as Error).message, true);
  }
  const schema = reader.schema;
  const f = schema.fields.find((x) => x.name === field);
  if (!f) throw badInput(file, `column "${field}"`, `a string column (columns: ${schema.fields.map((x) => x.name).join(', ')}; choose one with --text-field)`, undefined);
  const isText = (t: A.DataType): boolean => A.DataType.isUtf8(t) || A.DataType.isLargeUtf8(t) || String(t) === 'Utf8View';
  if (!isText(f.type) && !(A.DataType.isDictionary(f.type) && isText((f.type as A.Dictionary).dictionary))) {
    throw badInput(file, `column "${field}"`, 'a string (Utf8) column', String(f.type), true);
  }
  for (const batch of reader) {
    const col = batch.getChild(field)!;
    for (let i = 0; i < col.length; i++) {
      const v = col.get(i) as string | null;
      if (v !== null && v !== undefined) yield { text: v };
    }
  }
}

async function* parquetItems(file: string, bytes: Uint8Array, field: string): AsyncGenerator<CorpusItem> {
  const hp = await import('hyparquet');
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let meta: Awaited<ReturnType<typeof hp.parquetMetadataAsync>>;
  try {
    meta = await hp.parquetMetadataAsync(ab);
  } catch (e) {
    throw badInput(file, '(file)', 'a Parquet file', (e as Error).message, true);
  }
  const names = hp.parquetSchema(meta).children.map((c) => c.element.name);
  if (!names.includes(field)) throw badInput(file, `column "${field}"`, `a string column (columns: ${names.join(', ')}; choose one with --text-field)`, undefined);
  // one row group at a time: memory stays bounded by the largest row group
  let start = 0;
  for (const rg of meta.row_groups) {
    const n = Number(rg.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await hp.parquetReadObjects({ file: ab, metadata: meta, columns: [field], rowStart: start, rowEnd: start + n });
    } catch (e) {
      throw badInput(file, `column "${field}"`, 'a readable column (hyparquet supports uncompressed, snappy, gzip... see its README)', (e as Error).message, true);
    }
    for (const r of rows) {
      const v = r[field];
      if (v === null || v === undefined) continue;
      if (typeof v !== 'string') throw badInput(file, `column "${field}"`, 'strings', v);
      yield { text: v };
    }
    start += n;
  }
}

/** Paragraphs of a document (split at blank lines, empty ones skipped), lazily. */
export function* paragraphs(text: string): Generator<string> {
  let at = 0;
  for (;;) {
    const j = text.indexOf('\n\n', at);
    const p = j < 0 ? text.slice(at) : text.slice(at, j);
    if (p.trim().length) yield p;
    if (j < 0) return;
    at = j + 2;
  }
}

export interface SequenceOptions {
  /** total tokens over all sequences */
  tokens: number;
  seqLen: number;
}

export interface SequencePlan {
  sequences: Int32Array[];
  /** tokens over all sequences (the budget, or less when the corpus ran out) */
  tokens: number;
  /** true when the corpus had fewer tokens than the budget */
  exhausted: boolean;
}

/**
 * Cuts a corpus into sequences (see the top of this file). Only as much text as the budget needs is
 * tokenized, so asking for 200k tokens of an 11 MB corpus costs about 1 MB of tokenization.
 */
export async function planSequences(corpus: Corpus, tok: TextTokenizer, spec: ModelSpec, o: SequenceOptions): Promise<SequencePlan> {
  if (!Number.isSafeInteger(o.tokens) || o.tokens < 1) throw badInput('collect', 'tokens', 'an integer >= 1', o.tokens);
  if (!Number.isSafeInteger(o.seqLen) || o.seqLen < 2) throw badInput('collect', 'seq-len', 'an integer >= 2', o.seqLen);
  const eos = spec.eosTokenId;
  const bos = spec.bosTokenId;
  const sequences: Int32Array[] = [];
  let total = 0;
  // the sequence under construction; its length target is min(seqLen, budget left)
  let cur: number[] = [];
  const flush = () => {
    sequences.push(Int32Array.from(cur));
    total += cur.length;
    cur = [];
  };
  const target = () => Math.min(o.seqLen, o.tokens - total);
  let sawText = false;
  let sawIds = false;
  outer: for await (const item of corpus.items()) {
    if ('ids' in item) {
      sawIds = true;
      for (let at = 0; at < item.ids.length && total < o.tokens; at += o.seqLen) {
        const n = Math.min(o.seqLen, item.ids.length - at, o.tokens - total);
        sequences.push(Int32Array.from(item.ids.slice(at, at + n)));
        total += n;
      }
      if (total >= o.tokens) break;
      continue;
    }
    sawText = true;
    if (eos === null) throw badInput('config.json', 'eos_token_id', 'a token id (text is cut into paragraphs, each followed by </s>)', null);
    for (const para of paragraphs(item.text)) {
      const ids = tok.encode(para, false);
      ids.push(eos);
      for (const id of ids) {
        if (cur.length === 0 && bos !== null) {
          cur.push(bos);
          if (cur.length === target()) flush();
          if (total >= o.tokens) break outer;
          if (cur.length === 0) cur.push(bos);
        }
        cur.push(id);
        if (cur.length === target()) {
          flush();
          if (total >= o.tokens) break outer;
        }
      }
    }
  }
  if (sawIds && sawText) throw new PolarError('bad-input', `${corpus.name}: a corpus is either text or token ids, not both`);
  if (cur.length > (bos === null ? 0 : 1)) flush();
  return { sequences, tokens: total, exhausted: total < o.tokens };
}

/** sha256 of the token ids of a plan (little-endian int32, sequence after sequence, lengths first). */
export function planSha256(plan: SequencePlan): string {
  const h = createHash('sha256');
  const len = Buffer.alloc(4);
  for (const s of plan.sequences) {
    len.writeInt32LE(s.length);
    h.update(len);
    h.update(Buffer.from(s.buffer, s.byteOffset, s.byteLength));
  }
  return h.digest('hex');
}
