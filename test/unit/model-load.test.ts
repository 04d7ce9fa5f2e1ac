// Model loading: config parsing of both families, and every kind of bad input gives a named error with
// exit code 2 from the CLI (never a crash).
import { describe, expect, it, beforeAll } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model/index.ts';
import { parseModelConfig } from '../../src/model/config.ts';
import { readSafetensorsHeader, writeSafetensors, readTensorF32 } from '../../src/formats/safetensors.ts';
import { models, polar } from '../helpers.ts';

describe('config.json', () => {
  it('reads OPT: learned positions with offset 2, tied embeddings, ReLU', () => {
    const m = loadModel(models.tinyOpt);
    expect(m.spec).toMatchObject({ family: 'opt', layers: 2, hidden: 128, heads: 4, kvHeads: 4, headDim: 32, ffn: 512, vocab: 8192, positionOffset: 2, tiedEmbeddings: true, activation: 'relu' });
    expect(m.dtype).toBe('F16');
    const lm = m.weights.find((w) => w.name === 'lm_head.weight')!;
    const emb = m.weights.find((w) => w.name === 'tok_emb.weight')!;
    expect([lm.file, lm.offset]).toEqual([emb.file, emb.offset]);
  });

  it('reads LLaMA: GQA, head_dim, llama3 rope scaling, untied lm_head, bf16', () => {
    const m = loadModel(models.smallLlama);
    expect(m.spec).toMatchObject({ family: 'llama', heads: 4, kvHeads: 2, headDim: 64, tiedEmbeddings: false, gated: true });
    expect(m.spec.rope).toEqual({ theta: 500000, type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
    expect(m.dtype).toBe('BF16');
    const lm = m.weights.find((w) => w.name === 'lm_head.weight')!;
    expect(lm.hfName).toBe('lm_head.weight');
  });

  it('names the field that is missing or unsupported', () => {
    const cfg = JSON.parse(readFileSync(join(models.tinyOpt, 'config.json'), 'utf8'));
    delete cfg.ffn_dim;
    expect(() => parseModelConfig('x/config.json', cfg)).toThrow(/x\/config\.json: ffn_dim: expected an integer, received nothing/);
    expect(() => parseModelConfig('x/config.json', { ...cfg, ffn_dim: 512, model_type: 'gpt2' })).toThrow(/model_type: expected one of "opt", "llama", received "gpt2"/);
    expect(() => parseModelConfig('x/config.json', { ...cfg, ffn_dim: 512, activation_function: 'gelu' })).toThrow(/activation_function: expected "relu"/);
  });
});

describe('safetensors', () => {
  it('round-trips tensors through the writer bit-exactly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'polar-st-'));
    const a = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 3);
    writeSafetensors(join(dir, 'a.safetensors'), [{ name: 'a', dtype: 'F32', shape: [3, 4], data: a }], { k: 'v' });
    const h = readSafetensorsHeader(join(dir, 'a.safetensors'));
    expect(h.metadata).toEqual({ k: 'v' });
    expect(Array.from(readTensorF32(h.tensors.get('a')!))).toEqual(Array.from(a));
    rmSync(dir, { recursive: true });
  });
});

describe('bad model folders fail with exit code 2 and a named error', () => {
  let base: string;
  const src = models.tinyOpt;
  const header = (file: string) => {
    const buf = readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    return { buf, n, json: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, any> };
  };
  const withHeader = (dir: string, edit: (j: Record<string, any>) => void) => {
    const file = join(dir, 'model.safetensors');
    const { buf, n, json } = header(join(src, 'model.safetensors'));
    edit(json);
    let s = JSON.stringify(json);
    const hb = Buffer.from(s);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hb.length));
    writeFileSync(file, Buffer.concat([len, hb, buf.subarray(8 + n)]));
  };
  const fresh = (name: string) => {
    const d = join(base, name);
    mkdirSync(d);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(src, f), join(d, f));
    return d;
  };
  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'polar-bad-'));
  });
  const firstTensor = (j: Record<string, any>) => Object.keys(j).filter((k) => k !== '__metadata__').sort((a, b) => j[a].data_offsets[0] - j[b].data_offsets[0]);

  const cases: [string, (d: string) => void, RegExp][] = [
    ['header length past the end of the file', (d) => {
      const f = join(d, 'model.safetensors');
      const b = readFileSync(f);
      b.writeBigUInt64LE(BigInt(b.length * 2), 0);
      writeFileSync(f, b);
    }, /model\.safetensors: header length: expected at most \d+ bytes/],
    ['truncated file (offsets out of range)', (d) => {
      const f = join(d, 'model.safetensors');
      const b = readFileSync(f);
      writeFileSync(f, b.subarray(0, b.length - 1000));
    }, /model\.safetensors: tensor ".*"\.data_offsets: expected an end within the data section/],
    ['overlapping offsets', (d) => withHeader(d, (j) => {
      const [a, b] = firstTensor(j);
      const ob = j[b].data_offsets;
      j[b].data_offsets = [ob[0] - 2, ob[1] - 2];
    }), /data_offsets: expected bytes not shared with another tensor/],
    ['unknown dtype', (d) => withHeader(d, (j) => {
      j[firstTensor(j)[0]].dtype = 'F8_E9';
    }), /dtype: expected one of F64, F32/],
    ['shape/byte-size mismatch', (d) => withHeader(d, (j) => {
      const t = j[firstTensor(j)[0]];
      t.shape = [...t.shape.slice(0, -1), t.shape[t.shape.length - 1] + 1];
    }), /data_offsets: expected \d+ bytes for shape/],
    ['config with a missing field', (d) => {
      const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
      delete cfg.num_hidden_layers;
      writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
    }, /config\.json: num_hidden_layers: expected an integer, received nothing/],
    ['unsupported architecture', (d) => {
      const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
      cfg.model_type = 'mamba';
      writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
    }, /config\.json: model_type: expected one of "opt", "llama", received "mamba"/],
    ['missing tokenizer', (d) => rmSync(join(d, 'tokenizer.json')), /tokenizer\.json: tokenizer\.json not found/],
  ];

  for (const [name, breakIt, want] of cases) {
    it(name, () => {
      const d = fresh(name.replace(/\W+/g, '-'));
      breakIt(d);
      // generate loads config, weights and tokenizer; it must fail before any native work
      const r = polar(['generate', d, '--prompt', 'The', '-n', '1']);
      expect(r.stderr).toMatch(want);
      expect(r.code).toBe(2);
      expect(r.stderr).not.toMatch(/internal error|Segmentation|Aborted/);
    });
  }
});
