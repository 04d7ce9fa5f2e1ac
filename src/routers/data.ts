// Training data of one layer, streamed from the collected activations (src/arrow reader): a validation
// split held out by sequence (seeded hash of the sequence id), a shuffle buffer of bounded size for the
// training rows (a full shuffle when everything fits, a streaming shuffle otherwise), and fixed-size
// batches with the inputs and labels of both routers. Memory is bounded by the shuffle buffer whatever the
// token count.
import type { ActivationBatch, LayerActivations } from '../arrow/types.ts';
import { Rng, isValidationSeq } from './rng.ts';

export interface RowLayout {
  hidden: number;
  heads: number;
  /** MLP units with labels (0 when the layer has no MLP labels) */
  ffn: number;
  /** bytes per row of bit-packed MLP labels */
  bitStride: number;
}

/** A block of rows in the trainer's layout: row-major inputs, bit-packed MLP labels, head norms. */
export interface RowBlock {
  rows: number;
  x: Float32Array; // [rows, hidden]
  bits: Uint8Array | null; // [rows, bitStride]
  headNorm: Float32Array; // [rows, heads]
}

export function layoutOf(layer: LayerActivations): RowLayout {
  const m = layer.meta;
  const ffn = m.mlpActivity === 'bits' ? m.ffn : 0;
  return { hidden: m.hidden, heads: m.heads, ffn, bitStride: ffn ? Math.ceil(ffn / 8) : 0 };
}

function checkBatch(b: ActivationBatch, L: RowLayout, where: string): void {
  const bad = (what: string) => new Error(`${where}: ${what}`);
  if (b.routerInput.length !== b.rows * L.hidden) throw bad(`routerInput has ${b.routerInput.length} values, expected ${b.rows} x ${L.hidden}`);
  if (b.headNorm.length !== b.rows * L.heads) throw bad(`headNorm has ${b.headNorm.length} values, expected ${b.rows} x ${L.heads}`);
  if (L.ffn && (!b.mlpBits || b.mlpBits.length !== b.rows * L.bitStride)) throw bad(`mlpBits has ${b.mlpBits?.length ?? 0} bytes, expected ${b.rows} x ${L.bitStride}`);
  if (b.seqId.length !== b.rows) throw bad(`seqId has ${b.seqId.length} values, expected ${b.rows}`);
}

/** Preallocated rows; rows are copied in and out by index. */
class RowStore implements RowBlock {
  rows = 0;
  x: Float32Array;
  bits: Uint8Array | null;
  headNorm: Float32Array;
  constructor(readonly L: RowLayout, readonly capacity: number) {
    this.x = new Float32Array(capacity * L.hidden);
    this.bits = L.ffn ? new Uint8Array(capacity * L.bitStride) : null;
    this.headNorm = new Float32Array(capacity * L.heads);
  }
  /** copies row `i` of `src` into slot `j` */
  put(j: number, src: ActivationBatch | RowBlock, i: number): void {
    const { hidden, heads, bitStride } = this.L;
    const x = 'routerInput' in src ? src.routerInput : src.x;
    const bits = 'routerInput' in src ? src.mlpBits : src.bits;
    this.x.set(x.subarray(i * hidden, (i + 1) * hidden), j * hidden);
    if (this.bits && bits) this.bits.set(bits.subarray(i * bitStride, (i + 1) * bitStride), j * bitStride);
    this.headNorm.set(src.headNorm.subarray(i * heads, (i + 1) * heads), j * heads);
  }
}

/** Bytes one row takes in a RowStore. */
export function rowBytes(L: RowLayout): number {
  return 4 * L.hidden + L.bitStride + 4 * L.heads;
}

export interface SplitOptions {
  seed: number;
  valFraction: number;
}

/** Streams the rows of one split (in shard order), as blocks that alias the reader's arrays when possible. */
async function* splitRows(layer: LayerActivations, L: RowLayout, split: 'train' | 'val', s: SplitOptions, where: string): AsyncGenerator<RowBlock> {
  for await (const b of layer.batches()) {
    checkBatch(b, L, where);
    let keep = 0;
    const mask = new Uint8Array(b.rows);
    for (let i = 0; i < b.rows; i++) {
      const v = isValidationSeq(s.seed, b.seqId[i], s.valFraction);
      if ((split === 'val') === v) {
        mask[i] = 1;
        keep++;
      }
    }
    if (keep === 0) continue;
    if (keep === b.rows) {
      yield { rows: b.rows, x: b.routerInput, bits: L.ffn ? b.mlpBits : null, headNorm: b.headNorm };
      continue;
    }
    const out = new RowStore(L, keep);
    let j = 0;
    for (let i = 0; i < b.rows; i++) if (mask[i]) out.put(j++, b, i);
    out.rows = keep;
    yield out;
  }
}

/** Counts of a split: rows and positive MLP labels (for w of the loss). */
export async function splitStats(layer: LayerActivations, L: RowLayout, s: SplitOptions, where: string): Promise<{ train: number; val: number; trainPositives: number }> {
  let train = 0, val = 0, trainPositives = 0;
  const pop = new Uint8Array(256);
  for (let i = 0; i < 256; i++) pop[i] = (i & 1) + pop[i >> 1];
  const lastMask = L.ffn % 8 ? (1 << L.ffn % 8) - 1 : 0xff; // padding bits of the last byte never count
  for await (const b of layer.batches()) {
    checkBatch(b, L, where);
    for (let i = 0; i < b.rows; i++) {
      if (isValidationSeq(s.seed, b.seqId[i], s.valFraction)) {
        val++;
        continue;
      }
      train++;
      if (L.ffn && b.mlpBits) {
        const row = b.mlpBits.subarray(i * L.bitStride, (i + 1) * L.bitStride);
        for (let k = 0; k < row.length - 1; k++) trainPositives += pop[row[k]];
        trainPositives += pop[row[row.length - 1] & lastMask];
      }
    }
  }
  return { train, val, trainPositives };
}

/**
 * Shuffled training batches of exactly `batch` rows (the last one may be smaller). The shuffle buffer holds
 * up to `bufferRows` rows: with all rows in it this is a uniform shuffle; otherwise a streaming shuffle
 * (each incoming row takes the place of a uniformly drawn buffered row, which is emitted).
 * The returned block is reused between iterations: consume it before asking for the next.
 */
export async function* trainBatches(
  layer: LayerActivations,
  L: RowLayout,
  s: SplitOptions & { epoch: number; layer: number; batch: number; bufferRows: number },
  where: string,
): AsyncGenerator<RowBlock> {
  const rng = Rng.for('shuffle', s.seed, s.layer, s.epoch);
  const cap = Math.max(s.batch, s.bufferRows);
  const buf = new RowStore(L, cap);
  const out = new RowStore(L, s.batch);
  let n = 0;
  for await (const blk of splitRows(layer, L, 'train', s, where)) {
    for (let i = 0; i < blk.rows; i++) {
      if (n < cap) {
        buf.put(n++, blk, i);
        continue;
      }
      const j = rng.below(cap);
      out.put(out.rows++, buf, j);
      buf.put(j, blk, i);
      if (out.rows === s.batch) {
        yield out;
        out.rows = 0;
      }
    }
  }
  yield* drain(buf, Int32Array.from({ length: n }, (_, i) => i), rng, out, s.batch);
}

/**
 * Emits the rows buf[slots[..]] in a Fisher-Yates order drawn from rng, in batches (continuing `out`).
 * The store is not modified, so an in-memory store can be drained again next epoch.
 */
function* drain(buf: RowStore, slots: Int32Array, rng: Rng, out: RowStore, batch: number): Generator<RowBlock> {
  for (let left = slots.length; left > 0; left--) {
    const j = rng.below(left);
    out.put(out.rows++, buf, slots[j]);
    slots[j] = slots[left - 1];
    if (out.rows === batch) {
      yield out;
      out.rows = 0;
    }
  }
  if (out.rows > 0) {
    yield out;
    out.rows = 0;
  }
}

/**
 * One layer's training data. When every row fits in the memory budget the layer is read once and kept
 * (train and validation rows in one store, in stream order); otherwise it is streamed from the shards
 * every epoch through a shuffle buffer of the budget's size. Both paths emit the same batches.
 */
export class LayerData {
  private constructor(
    readonly layer: LayerActivations,
    readonly L: RowLayout,
    readonly split: SplitOptions,
    readonly stats: { train: number; val: number; trainPositives: number },
    private readonly bufferRows: number,
    private readonly where: string,
    private readonly store: RowStore | null,
    private readonly trainSlots: Int32Array | null,
    private readonly valSlots: Int32Array | null,
  ) {}

  get inMemory(): boolean {
    return this.store !== null;
  }

  static async open(layer: LayerActivations, L: RowLayout, split: SplitOptions, budgetBytes: number, where: string): Promise<LayerData> {
    const bufferRows = Math.max(1, Math.floor(budgetBytes / rowBytes(L)));
    if (layer.rows > bufferRows) {
      const stats = await splitStats(layer, L, split, where);
      return new LayerData(layer, L, split, stats, bufferRows, where, null, null, null);
    }
    const store = new RowStore(L, layer.rows);
    const isVal = new Uint8Array(layer.rows);
    const pop = popcounts();
    const lastMask = L.ffn % 8 ? (1 << L.ffn % 8) - 1 : 0xff;
    let n = 0, train = 0, trainPositives = 0;
    for await (const b of layer.batches()) {
      checkBatch(b, L, where);
      if (n + b.rows > layer.rows) throw new Error(`${where}: more rows than the ${layer.rows} announced`);
      for (let i = 0; i < b.rows; i++, n++) {
        store.put(n, b, i);
        if (isValidationSeq(split.seed, b.seqId[i], split.valFraction)) {
          isVal[n] = 1;
          continue;
        }
        train++;
        if (L.ffn && b.mlpBits) {
          const row = b.mlpBits.subarray(i * L.bitStride, (i + 1) * L.bitStride);
          for (let k = 0; k < row.length - 1; k++) trainPositives += pop[row[k]];
          trainPositives += pop[row[row.length - 1] & lastMask];
        }
      }
    }
    store.rows = n;
    const trainSlots = new Int32Array(train), valSlots = new Int32Array(n - train);
    for (let i = 0, t = 0, v = 0; i < n; i++) {
      if (isVal[i]) valSlots[v++] = i;
      else trainSlots[t++] = i;
    }
    return new LayerData(layer, L, split, { train, val: n - train, trainPositives }, bufferRows, where, store, trainSlots, valSlots);
  }

  /** The shuffled training batches of an epoch (the block is reused between iterations). */
  async *train(epoch: number, layerIndex: number, batch: number): AsyncGenerator<RowBlock> {
    if (!this.store) {
      yield* trainBatches(this.layer, this.L, { ...this.split, epoch, layer: layerIndex, batch, bufferRows: this.bufferRows }, this.where);
      return;
    }
    const rng = Rng.for('shuffle', this.split.seed, layerIndex, epoch);
    yield* drain(this.store, this.trainSlots!.slice(), rng, new RowStore(this.L, batch), batch);
  }

  /** Validation rows in stream order, in blocks of up to `block` rows (reused between iterations). */
  async *val(block: number): AsyncGenerator<RowBlock> {
    if (!this.store) {
      yield* valBatches(this.layer, this.L, { ...this.split, block }, this.where);
      return;
    }
    const out = new RowStore(this.L, block);
    for (const slot of this.valSlots!) {
      out.put(out.rows++, this.store, slot);
      if (out.rows === block) {
        yield out;
        out.rows = 0;
      }
    }
    if (out.rows > 0) yield out;
  }
}

function popcounts(): Uint8Array {
  const pop = new Uint8Array(256);
  for (let i = 0; i < 256; i++) pop[i] = (i & 1) + pop[i >> 1];
  return pop;
}

/** Validation rows in shard order, in blocks of up to `block` rows (reused between iterations). */
export async function* valBatches(layer: LayerActivations, L: RowLayout, s: SplitOptions & { block: number }, where: string): AsyncGenerator<RowBlock> {
  const out = new RowStore(L, s.block);
  for await (const blk of splitRows(layer, L, 'val', s, where)) {
    for (let i = 0; i < blk.rows; i++) {
      out.put(out.rows++, blk, i);
      if (out.rows === s.block) {
        yield out;
        out.rows = 0;
      }
    }
  }
  if (out.rows > 0) yield out;
}

/**
 * Head labels: per row, 1 for the top `k` heads by output norm (ties: lower head index), else 0.
 */
export function headLabels(headNorm: Float32Array, rows: number, heads: number, k: number, out: Float32Array): Float32Array {
  const idx = new Int32Array(heads);
  for (let r = 0; r < rows; r++) {
    const o = r * heads;
    for (let h = 0; h < heads; h++) {
      idx[h] = h;
      out[o + h] = 0;
    }
    // partial selection sort: heads are few
    for (let t = 0; t < k; t++) {
      let best = t;
      for (let u = t + 1; u < heads; u++) {
        const a = headNorm[o + idx[u]], b = headNorm[o + idx[best]];
        if (a > b || (a === b && idx[u] < idx[best])) best = u;
      }
      const tmp = idx[t];
      idx[t] = idx[best];
      idx[best] = tmp;
      out[o + idx[t]] = 1;
    }
  }
  return out;
}

/** Number of heads labelled positive per row for a top fraction. */
export function headTopK(heads: number, fraction: number): number {
  return Math.min(heads, Math.max(1, Math.round(fraction * heads)));
}

/** JS unpacking of MLP labels (when the native addon is not in use). */
export function unpackBitsJs(bits: Uint8Array, rows: number, cols: number, stride: number, out: Float32Array): Float32Array {
  for (let r = 0; r < rows; r++) {
    const b = r * stride, o = r * cols;
    for (let c = 0; c < cols; c++) out[o + c] = (bits[b + (c >> 3)] >> (c & 7)) & 1;
  }
  return out;
}
