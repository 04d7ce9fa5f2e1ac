// The one writer of activation shards (schema in schema.ts, documented in data/README.md).
// A ShardWriter is sized for one shard (one layer x one token range), takes rows in order as the model
// produces them (fp32 captures), converts them to the stored form (fp16 router input, bit-packed MLP
// activity, ...), and encodes one Arrow IPC file. writeFileAtomic() puts it on disk as <name>.tmp, fsyncs,
// then renames, so a reader never sees a half-written shard under its final name.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import * as A from 'apache-arrow';
import { f32ToF16Array } from './f16.ts';
import { arrowFields, arrowSchema, bitBytes, type FullShardMeta } from './schema.ts';

export interface ShardRows {
  rows: number;
  seqId: Int32Array | ArrayLike<number>;
  position: Int32Array | ArrayLike<number>;
  /** [rows, hidden] fp32 (output of the pre-attention norm) */
  routerInput: Float32Array;
  /** [rows, ffn] fp32 input of the down projection; required unless meta.mlpActivity is 'none' */
  mlpAct?: Float32Array | null;
  /** [rows, heads] fp32 */
  headNorm: Float32Array;
}

/** Bit-packs `act > 0` of [rows, ffn] into [rows, ceil(ffn/8)] bytes, LSB first (neuron j: byte j>>3, bit j&7). */
export function packActive(act: Float32Array, rows: number, ffn: number, out: Uint8Array, outOffsetRows = 0): void {
  const nb = bitBytes(ffn);
  for (let r = 0; r < rows; r++) {
    const src = r * ffn;
    const dst = (outOffsetRows + r) * nb;
    for (let b = 0; b < nb; b++) {
      const j0 = b << 3;
      const jn = Math.min(8, ffn - j0);
      let byte = 0;
      for (let t = 0; t < jn; t++) if (act[src + j0 + t] > 0) byte |= 1 << t;
      out[dst + b] = byte;
    }
  }
}

export class ShardWriter {
  readonly rows: number;
  private filled = 0;
  private readonly seqId: Int32Array;
  private readonly position: Int32Array;
  private readonly routerInput: Float32Array | Uint16Array;
  private readonly mlpBits: Uint8Array | null;
  private readonly mlpAct: Uint16Array | null;
  private readonly headNorm: Float32Array;

  constructor(readonly meta: FullShardMeta) {
    const n = meta.tokenEnd - meta.tokenStart;
    if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`ShardWriter: token range [${meta.tokenStart}, ${meta.tokenEnd}) is empty`);
    this.rows = n;
    this.seqId = new Int32Array(n);
    this.position = new Int32Array(n);
    this.routerInput = meta.routerInputDtype === 'f16' ? new Uint16Array(n * meta.hidden) : new Float32Array(n * meta.hidden);
    this.mlpBits = meta.mlpActivity === 'bits' ? new Uint8Array(n * bitBytes(meta.ffn)) : null;
    this.mlpAct = meta.mlpActivity === 'f16' ? new Uint16Array(n * meta.ffn) : null;
    this.headNorm = new Float32Array(n * meta.heads);
  }

  get filledRows(): number {
    return this.filled;
  }

  /** Appends rows in token order. Widths are checked; values are stored as the metadata says. */
  append(r: ShardRows): void {
    const m = this.meta;
    const n = r.rows;
    const at = this.filled;
    if (at + n > this.rows) throw new RangeError(`ShardWriter(layer ${m.layer}): ${at + n} rows exceed the shard's ${this.rows}`);
    const need = (name: string, arr: ArrayLike<number> | null | undefined, width: number): void => {
      if (!arr || arr.length !== n * width) throw new RangeError(`ShardWriter(layer ${m.layer}): ${name}: expected ${n * width} values, received ${arr ? arr.length : 'none'}`);
    };
    need('seqId', r.seqId, 1);
    need('position', r.position, 1);
    need('routerInput', r.routerInput, m.hidden);
    need('headNorm', r.headNorm, m.heads);
    if (m.mlpActivity !== 'none') need('mlpAct', r.mlpAct, m.ffn);
    this.seqId.set(r.seqId, at);
    this.position.set(r.position, at);
    if (this.routerInput instanceof Uint16Array) f32ToF16Array(r.routerInput, this.routerInput.subarray(at * m.hidden, (at + n) * m.hidden));
    else this.routerInput.set(r.routerInput, at * m.hidden);
    if (this.mlpBits) packActive(r.mlpAct!, n, m.ffn, this.mlpBits, at);
    if (this.mlpAct) f32ToF16Array(r.mlpAct!, this.mlpAct.subarray(at * m.ffn, (at + n) * m.ffn));
    this.headNorm.set(r.headNorm, at * m.heads);
    this.filled += n;
  }

  /** The Arrow IPC file bytes (one record batch). All rows must have been appended. */
  encode(): Uint8Array {
    const m = this.meta;
    if (this.filled !== this.rows) throw new RangeError(`ShardWriter(layer ${m.layer}): ${this.filled} of ${this.rows} rows appended`);
    const n = this.rows;
    const fields = arrowFields(m);
    const list = (f: A.Field, width: number, values: Float32Array | Uint16Array): A.Data => {
      const t = f.type as A.FixedSizeList;
      const child = A.makeData({ type: t.children[0].type as A.Float, length: n * width, nullCount: 0, data: values });
      return A.makeData({ type: t, length: n, nullCount: 0, child });
    };
    const cols: A.Data[] = [];
    for (const f of fields) {
      switch (f.name) {
        case 'seq_id':
          cols.push(A.makeData({ type: new A.Int32(), length: n, nullCount: 0, data: this.seqId }));
          break;
        case 'position':
          cols.push(A.makeData({ type: new A.Int32(), length: n, nullCount: 0, data: this.position }));
          break;
        case 'router_input':
          cols.push(list(f, m.hidden, this.routerInput));
          break;
        case 'mlp_active':
          cols.push(A.makeData({ type: f.type as A.FixedSizeBinary, length: n, nullCount: 0, data: this.mlpBits! }));
          break;
        case 'mlp_act':
          cols.push(list(f, m.ffn, this.mlpAct!));
          break;
        case 'head_norm':
          cols.push(list(f, m.heads, this.headNorm));
          break;
        default:
          throw new Error(`ShardWriter: no data for column ${f.name}`);
      }
    }
    const schema = arrowSchema(m);
    const struct = A.makeData({ type: new A.Struct(schema.fields), length: n, nullCount: 0, children: cols });
    const batch = new A.RecordBatch(schema, struct);
    return A.RecordBatchFileWriter.writeAll([batch]).toUint8Array(true);
  }
}

/** Writes `<file>.tmp`, fsyncs it, renames it to `<file>`. */
export function writeFileAtomic(file: string, bytes: Uint8Array | string): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, file);
}
