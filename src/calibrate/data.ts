// Held-out rows of one layer for calibration: the rows whose sequence the train stage held out for
// validation (same seeded hash, src/routers/rng.ts isValidationSeq, with the seed and fraction recorded in
// the router checkpoint), split again by sequence into a calibration part (chooses k) and a check part
// (reports the recall the chosen k reaches on tokens the choice never saw).
import type { LayerActivations } from '../arrow/types.ts';
import { badInput } from '../errors.ts';
import { hash32, isValidationSeq } from '../routers/rng.ts';
import type { ActivityRows } from './mlp.ts';

export interface HeldOutSplit {
  calib: ActivityRows;
  check: ActivityRows;
  /** distinct held-out sequences in each part */
  calibSeqs: number;
  checkSeqs: number;
}

export interface HeldOutOptions {
  /** the train stage's split: seed and validation fraction */
  seed: number;
  valFraction: number;
  /** share of the held-out sequences used to check (default 0.5) */
  checkFraction?: number;
  /** at most this many held-out rows in all (default 8192), taken in shard order */
  maxRows?: number;
}

class Rows {
  rows = 0;
  x: Float32Array;
  bits: Uint8Array;
  seqs = new Set<number>();
  constructor(readonly hidden: number, readonly stride: number, readonly cap: number) {
    this.x = new Float32Array(cap * hidden);
    this.bits = new Uint8Array(cap * stride);
  }
  push(x: Float32Array, bits: Uint8Array, i: number, seq: number): void {
    this.x.set(x.subarray(i * this.hidden, (i + 1) * this.hidden), this.rows * this.hidden);
    this.bits.set(bits.subarray(i * this.stride, (i + 1) * this.stride), this.rows * this.stride);
    this.rows++;
    this.seqs.add(seq);
  }
  done(ffn: number): ActivityRows {
    return { rows: this.rows, hidden: this.hidden, ffn, x: this.x.subarray(0, this.rows * this.hidden), bits: this.bits.subarray(0, this.rows * this.stride), stride: this.stride };
  }
}

/** Streams a layer's shards and keeps its held-out rows (memory bounded by maxRows). */
export async function heldOutRows(layer: LayerActivations, o: HeldOutOptions, where: string): Promise<HeldOutSplit> {
  const m = layer.meta;
  if (m.mlpActivity !== 'bits') throw badInput(where, 'mlpActivity', '"bits" (bit-packed MLP activity of a ReLU model)', m.mlpActivity);
  const maxRows = o.maxRows ?? 8192;
  const checkFraction = o.checkFraction ?? 0.5;
  const stride = Math.ceil(m.ffn / 8);
  // split the budget between the two parts in proportion
  const capCheck = Math.max(1, Math.round(maxRows * checkFraction));
  const capCalib = Math.max(1, maxRows - capCheck);
  const calib = new Rows(m.hidden, stride, capCalib);
  const check = new Rows(m.hidden, stride, capCheck);
  for await (const b of layer.batches()) {
    if (!b.mlpBits) throw badInput(where, 'mlpBits', 'bit-packed MLP activity in every block', null);
    for (let i = 0; i < b.rows; i++) {
      const s = b.seqId[i];
      if (!isValidationSeq(o.seed, s, o.valFraction)) continue;
      const toCheck = hash32('calibrate-check', o.seed, s) / 4294967296 < checkFraction;
      const dst = toCheck ? check : calib;
      if (dst.rows < dst.cap) dst.push(b.routerInput, b.mlpBits, i, s);
    }
    if (calib.rows >= calib.cap && check.rows >= check.cap) break;
  }
  return { calib: calib.done(m.ffn), check: check.done(m.ffn), calibSeqs: calib.seqs.size, checkSeqs: check.seqs.size };
}
