// Activation shards: the one schema (schema.ts), the one writer (writer.ts), the one reader (reader.ts).
export type * from './types.ts';
export { FORMAT, SCHEMA_VERSION, COLUMNS, META_KEYS, bitBytes, type FullShardMeta } from './schema.ts';
export { ShardWriter, packActive, writeFileAtomic, type ShardRows } from './writer.ts';
export { openActivations, readShardMeta, readShard, parseShard, decodeRows, concatBatches, COLLECT_MANIFEST, type ShardData } from './reader.ts';
export { toF16, fromF16, f32ToF16Array, f16ToF32Array } from './f16.ts';
