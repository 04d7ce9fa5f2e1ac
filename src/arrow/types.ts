// The activation data that collect writes and train/calibrate read (implemented in src/arrow/reader.ts and
// writer.ts, the one writer). One shard = one layer x one token range, Arrow IPC file. The file layout is
// documented in data/README.md (so that PyTorch hooks or vLLM can write the same files); the column names,
// metadata keys and their encoding are declared once in src/arrow/schema.ts. Fields marked optional below
// were added after the first version of this file; the reader always fills them.

export interface ShardMeta {
  schemaVersion: number;
  /** who wrote the shard, e.g. "polar 0.1.0" or "my-pytorch-hooks 2.0" (informative only) */
  producer?: string;
  /** model identity: sha256 of config.json and of the weights */
  configSha256: string;
  weightsSha256: string;
  family: 'opt' | 'llama';
  layer: number;
  /** number of layers of the model (the shard holds one of them) */
  modelLayers?: number;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  headDim?: number;
  /** 'bits' = MLP activity bit-packed (ReLU models); 'f16' = activation magnitudes; 'none' */
  mlpActivity: 'bits' | 'f16' | 'none';
  routerInputDtype: 'f16' | 'f32';
  /** head norms are always stored as fp32 */
  headNormDtype?: 'f32';
  corpusSha256: string;
  /** [first, last) token index in the collection stream */
  tokenStart: number;
  tokenEnd: number;
}

/** A block of rows of one layer's shard, decoded to typed arrays (row-major). */
export interface ActivationBatch {
  rows: number;
  /** sequence id per row (validation splits are by sequence) */
  seqId: Int32Array;
  /** position of the token in its sequence */
  position: Int32Array;
  /** router input = output of the pre-attention norm, [rows, hidden] widened to fp32 */
  routerInput: Float32Array;
  /** MLP activity bit-packed, [rows, ceil(ffn/8)] bytes, bit j of neuron j is (byte j>>3, bit j&7) — or null */
  mlpBits: Uint8Array | null;
  /** MLP activation magnitudes [rows, ffn] (gated models, optional) — or null */
  mlpAct: Float32Array | null;
  /** L2 norm of each attention head's output, [rows, heads] */
  headNorm: Float32Array;
}

export interface LayerActivations {
  layer: number;
  meta: ShardMeta;
  rows: number;
  /** Streams the layer's rows in shard order, in blocks (memory bounded regardless of token count). */
  batches(opts?: { blockRows?: number }): AsyncIterable<ActivationBatch>;
}

/** What src/arrow/reader.ts returns for one layer: LayerActivations plus its files and a read-everything helper. */
export interface LayerShards extends LayerActivations {
  /** the shard files of this layer in token order */
  files: string[];
  /** Every row of the layer in one batch (memory grows with the token count: tests and small runs). */
  readAll(): Promise<ActivationBatch>;
}

export interface ActivationSet {
  dir: string;
  layers: number[];
  layer(l: number): LayerActivations;
}

/** What openActivations() returns. */
export interface ActivationDir extends ActivationSet {
  layer(l: number): LayerShards;
  /** rows per layer (every layer covers the same token range [0, tokens)) */
  tokens: number;
  /** metadata shared by every shard (layer and token range are those of the first shard of the first layer) */
  meta: ShardMeta;
  /** total bytes of the shard files */
  bytes: number;
}

export interface OpenActivationsOptions {
  /** refuse shards of another model (errors name the shard and both identities) */
  expect?: { configSha256: string; weightsSha256: string };
  /** refuse a folder whose collect manifest says the run is unfinished (default true) */
  requireComplete?: boolean;
}
