// The one activation schema: column names and types, schema-metadata keys and how they are encoded.
// writer.ts builds shards from it and reader.ts checks shards against it; data/README.md documents it for
// writers in other languages. Changing anything here that a reader would notice means SCHEMA_VERSION + 1.
import * as A from 'apache-arrow';
import { badInput } from '../errors.ts';
import type { ShardMeta } from './types.ts';

export const FORMAT = 'polar-activations';
export const SCHEMA_VERSION = 1;

export const COLUMNS = {
  seqId: 'seq_id',
  position: 'position',
  routerInput: 'router_input',
  mlpActive: 'mlp_active',
  mlpAct: 'mlp_act',
  headNorm: 'head_norm',
} as const;

/** schema-metadata keys (all values are strings, as Arrow requires) */
export const META_KEYS = {
  format: 'format',
  schemaVersion: 'schema_version',
  producer: 'producer',
  configSha256: 'model_config_sha256',
  weightsSha256: 'model_weights_sha256',
  family: 'model_family',
  modelLayers: 'model_layers',
  layer: 'layer',
  hidden: 'hidden',
  ffn: 'ffn',
  heads: 'heads',
  kvHeads: 'kv_heads',
  headDim: 'head_dim',
  mlpActivity: 'mlp_activity',
  routerInputDtype: 'router_input_dtype',
  headNormDtype: 'head_norm_dtype',
  corpusSha256: 'corpus_sha256',
  tokenStart: 'token_start',
  tokenEnd: 'token_end',
} as const;

/** ShardMeta with every field present (what the writer needs and the reader returns). */
export type FullShardMeta = Required<ShardMeta>;

export function metaToArrow(m: FullShardMeta): Map<string, string> {
  const k = META_KEYS;
  // insertion order = order in the file: keep it fixed so that shards are byte-reproducible
  return new Map<string, string>([
    [k.format, FORMAT],
    [k.schemaVersion, String(m.schemaVersion)],
    [k.producer, m.producer],
    [k.configSha256, m.configSha256],
    [k.weightsSha256, m.weightsSha256],
    [k.family, m.family],
    [k.modelLayers, String(m.modelLayers)],
    [k.layer, String(m.layer)],
    [k.hidden, String(m.hidden)],
    [k.ffn, String(m.ffn)],
    [k.heads, String(m.heads)],
    [k.kvHeads, String(m.kvHeads)],
    [k.headDim, String(m.headDim)],
    [k.mlpActivity, m.mlpActivity],
    [k.routerInputDtype, m.routerInputDtype],
    [k.headNormDtype, m.headNormDtype],
    [k.corpusSha256, m.corpusSha256],
    [k.tokenStart, String(m.tokenStart)],
    [k.tokenEnd, String(m.tokenEnd)],
  ]);
}

const SHA = /^[0-9a-f]{64}$/;

/** Parses and checks a shard's schema metadata; every error names the file and the key. */
export function metaFromArrow(file: string, md: Map<string, string>): FullShardMeta {
  const k = META_KEYS;
  const get = (key: string): string => {
    const v = md.get(key);
    if (v === undefined) throw badInput(file, `schema metadata "${key}"`, 'a value (is this a polar activation shard? see data/README.md)', undefined);
    return v;
  };
  const fmt = md.get(k.format);
  if (fmt !== FORMAT) {
    throw badInput(file, `schema metadata "${k.format}"`, `"${FORMAT}" (a polar activation shard; see data/README.md)`, fmt);
  }
  const version = Number(get(k.schemaVersion));
  if (version !== SCHEMA_VERSION) {
    throw badInput(
      file,
      `schema metadata "${k.schemaVersion}"`,
      `${SCHEMA_VERSION} (the version this polar reads${version > SCHEMA_VERSION ? '; the shard is newer: upgrade polar' : '; recollect with this polar'})`,
      md.get(k.schemaVersion),
    );
  }
  const int = (key: string, min: number): number => {
    const s = get(key);
    const n = Number(s);
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < min) throw badInput(file, `schema metadata "${key}"`, `an integer >= ${min}`, s);
    return n;
  };
  const sha = (key: string): string => {
    const s = get(key);
    if (!SHA.test(s)) throw badInput(file, `schema metadata "${key}"`, 'a sha256 as 64 lowercase hex digits', s);
    return s;
  };
  const oneOf = <T extends string>(key: string, allowed: readonly T[]): T => {
    const s = get(key);
    if (!(allowed as readonly string[]).includes(s)) throw badInput(file, `schema metadata "${key}"`, `one of ${allowed.map((a) => `"${a}"`).join(', ')}`, s);
    return s as T;
  };
  const m: FullShardMeta = {
    schemaVersion: version,
    producer: get(k.producer),
    configSha256: sha(k.configSha256),
    weightsSha256: sha(k.weightsSha256),
    family: oneOf(k.family, ['opt', 'llama'] as const),
    modelLayers: int(k.modelLayers, 1),
    layer: int(k.layer, 0),
    hidden: int(k.hidden, 1),
    ffn: int(k.ffn, 1),
    heads: int(k.heads, 1),
    kvHeads: int(k.kvHeads, 1),
    headDim: int(k.headDim, 1),
    mlpActivity: oneOf(k.mlpActivity, ['bits', 'f16', 'none'] as const),
    routerInputDtype: oneOf(k.routerInputDtype, ['f16', 'f32'] as const),
    headNormDtype: oneOf(k.headNormDtype, ['f32'] as const),
    corpusSha256: sha(k.corpusSha256),
    tokenStart: int(k.tokenStart, 0),
    tokenEnd: int(k.tokenEnd, 0),
  };
  if (m.layer >= m.modelLayers) throw badInput(file, `schema metadata "${k.layer}"`, `a layer index below model_layers ${m.modelLayers}`, m.layer);
  if (m.tokenEnd <= m.tokenStart) throw badInput(file, `schema metadata "${k.tokenEnd}"`, `an integer above token_start ${m.tokenStart}`, m.tokenEnd);
  return m;
}

export function bitBytes(ffn: number): number {
  return (ffn + 7) >> 3;
}

function fsl(n: number, t: A.DataType): A.FixedSizeList {
  return new A.FixedSizeList(n, new A.Field('item', t, false));
}

/** The Arrow fields of a shard, in file order. */
export function arrowFields(m: FullShardMeta): A.Field[] {
  const fields: A.Field[] = [
    new A.Field(COLUMNS.seqId, new A.Int32(), false),
    new A.Field(COLUMNS.position, new A.Int32(), false),
    new A.Field(COLUMNS.routerInput, fsl(m.hidden, m.routerInputDtype === 'f16' ? new A.Float16() : new A.Float32()), false),
  ];
  if (m.mlpActivity === 'bits') fields.push(new A.Field(COLUMNS.mlpActive, new A.FixedSizeBinary(bitBytes(m.ffn)), false));
  if (m.mlpActivity === 'f16') fields.push(new A.Field(COLUMNS.mlpAct, fsl(m.ffn, new A.Float16()), false));
  fields.push(new A.Field(COLUMNS.headNorm, fsl(m.heads, new A.Float32()), false));
  return fields;
}

export function arrowSchema(m: FullShardMeta): A.Schema {
  return new A.Schema(arrowFields(m), metaToArrow(m));
}

/** Checks that a file's columns are the ones its metadata promises (names, order, types, widths). */
export function checkFields(file: string, schema: A.Schema, m: FullShardMeta): void {
  const want = arrowFields(m);
  const got = schema.fields;
  const names = (fs: A.Field[]) => fs.map((f) => `${f.name}: ${String(f.type)}`).join(', ');
  if (got.length !== want.length) throw badInput(file, 'columns', `[${names(want)}]`, `[${names(got)}]`, true);
  for (let i = 0; i < want.length; i++) {
    if (got[i].name !== want[i].name || String(got[i].type) !== String(want[i].type)) {
      throw badInput(file, `column ${i}`, `${want[i].name}: ${String(want[i].type)}`, `${got[i].name}: ${String(got[i].type)}`, true);
    }
  }
}
