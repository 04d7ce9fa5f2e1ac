// The activation data that collect writes and train/calibrate read (implemented in src/arrow/reader.ts and
// writer.ts, the one writer). One shard = one layer x one token range, Arrow IPC file.

export interface ShardMeta {
  schemaVersion: number;
  /** model identity: sha256 of config.json and of the weights */
  configSha256: string;
  weightsSha256: string;
  family: 'opt' | 'llama';
  layer: number;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  /** 'bits' = MLP activity bit-packed (ReLU models); 'f16' = activation magnitudes; 'none' */
  mlpActivity: 'bits' | 'f16' | 'none';
  routerInputDtype: 'f16' | 'f32';
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
  batches(): AsyncIterable<ActivationBatch>;
}

export interface ActivationSet {
  dir: string;
  layers: number[];
  layer(l: number): LayerActivations;
}
