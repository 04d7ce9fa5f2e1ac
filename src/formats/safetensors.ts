// The safetensors format: header parsing with full validation, ranged tensor reads, and the project's one
// safetensors writer (router artifacts, checkpoints). Tensor bytes are never read as a whole file: weights
// are mapped by the native runtime from (file, offset, length); small tensors are read with ranged reads.
import { closeSync, fstatSync, openSync, readSync, writeSync, fsyncSync, renameSync, rmSync } from 'node:fs';
import { badInput, notFound } from '../errors.ts';

export type StDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
export const DTYPE_BYTES: Record<StDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface TensorInfo {
  name: string;
  file: string;
  dtype: StDtype;
  shape: number[];
  /** absolute byte offset of the tensor's data in `file` */
  offset: number;
  nbytes: number;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  dataStart: number;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** Header length is a u64; anything above this is corrupt, not a real header. */
const MAX_HEADER = 100 * 1024 * 1024;

export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    throw notFound(file, 'safetensors file');
  }
  try {
    const fileSize = fstatSync(fd).size;
    if (fileSize < 8) throw badInput(file, 'header length', 'an 8-byte little-endian length at the start of the file', `a file of ${fileSize} bytes`, true);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const len = lenBuf.readBigUInt64LE(0);
    if (len > BigInt(fileSize - 8) || len > BigInt(MAX_HEADER)) {
      throw badInput(file, 'header length', `at most ${fileSize - 8} bytes (the rest of the file)`, `${len} bytes (truncated or corrupt file)`, true);
    }
    const n = Number(len);
    const hbuf = Buffer.alloc(n);
    readSync(fd, hbuf, 0, n, 8);
    let j: unknown;
    try {
      j = JSON.parse(hbuf.toString('utf8'));
    } catch (e) {
      throw badInput(file, 'header', 'a JSON object', (e as Error).message, true);
    }
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw badInput(file, 'header', 'a JSON object', j);
    const dataStart = 8 + n;
    const dataSize = fileSize - dataStart;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    const spans: { name: string; b: number; e: number }[] = [];
    for (const [name, v] of Object.entries(j as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof v === 'object' && v !== null) metadata = v as Record<string, string>;
        continue;
      }
      const field = (k: string) => `tensor "${name}".${k}`;
      if (typeof v !== 'object' || v === null) throw badInput(file, `tensor "${name}"`, 'an object with dtype, shape, data_offsets', v);
      const t = v as Record<string, unknown>;
      const dtype = t.dtype;
      if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
        throw badInput(file, field('dtype'), `one of ${Object.keys(DTYPE_BYTES).join(', ')}`, dtype);
      }
      const shape = t.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw badInput(file, field('shape'), 'an array of non-negative integers', shape);
      }
      const off = t.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) || off[0] > off[1]) {
        throw badInput(file, field('data_offsets'), '[begin, end] with 0 <= begin <= end', off);
      }
      const [b, e] = off as [number, number];
      if (e > dataSize) {
        throw badInput(file, field('data_offsets'), `an end within the data section (${dataSize} bytes)`, `[${b}, ${e}] (out of range: truncated or corrupt file)`, true);
      }
      const numel = (shape as number[]).reduce((a, d) => a * d, 1);
      const want = numel * DTYPE_BYTES[dtype as StDtype];
      if (want !== e - b) {
        throw badInput(file, field('data_offsets'), `${want} bytes for shape [${(shape as number[]).join(', ')}] of ${dtype}`, `${e - b} bytes`, true);
      }
      spans.push({ name, b, e });
      tensors.set(name, { name, file, dtype: dtype as StDtype, shape: shape as number[], offset: dataStart + b, nbytes: e - b });
    }
    spans.sort((x, y) => x.b - y.b || x.e - y.e);
    for (let i = 1; i < spans.length; i++) {
      const p = spans[i - 1], c = spans[i];
      if (c.b < p.e && c.e > c.b && p.e > p.b) {
        throw badInput(file, `tensor "${c.name}".data_offsets`, `bytes not shared with another tensor ("${p.name}" ends at ${p.e})`, `[${c.b}, ${c.e}] (overlapping)`, true);
      }
    }
    return { file, fileSize, dataStart, tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** Reads one tensor's raw bytes (little-endian, as stored). For small tensors: goldens, routers, norms. */
export function readTensorBytes(info: TensorInfo): Buffer {
  const fd = openSync(info.file, 'r');
  try {
    const buf = Buffer.alloc(info.nbytes);
    let done = 0;
    while (done < info.nbytes) {
      const n = readSync(fd, buf, done, info.nbytes - done, info.offset + done);
      if (n <= 0) throw badInput(info.file, `tensor "${info.name}"`, `${info.nbytes} bytes`, `${done} bytes (file shrank while reading)`, true);
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Reads a floating-point tensor widened to fp32 (goldens, router weights). */
export function readTensorF32(info: TensorInfo): Float32Array {
  const raw = readTensorBytes(info);
  const n = info.nbytes / DTYPE_BYTES[info.dtype];
  const out = new Float32Array(n);
  if (info.dtype === 'F32') {
    out.set(new Float32Array(raw.buffer, raw.byteOffset, n));
  } else if (info.dtype === 'F16') {
    for (let i = 0; i < n; i++) out[i] = f16ToF32(raw.readUInt16LE(2 * i));
  } else if (info.dtype === 'BF16') {
    const u = new Uint32Array(1);
    const f = new Float32Array(u.buffer);
    for (let i = 0; i < n; i++) {
      u[0] = raw.readUInt16LE(2 * i) << 16;
      out[i] = f[0];
    }
  } else if (info.dtype === 'F64') {
    for (let i = 0; i < n; i++) out[i] = raw.readDoubleLE(8 * i);
  } else {
    throw badInput(info.file, `tensor "${info.name}".dtype`, 'a floating-point dtype', info.dtype);
  }
  return out;
}

/** Reads an integer tensor (I64/I32) as numbers. */
export function readTensorInt(info: TensorInfo): number[] {
  const raw = readTensorBytes(info);
  if (info.dtype === 'I64') return Array.from({ length: info.nbytes / 8 }, (_, i) => Number(raw.readBigInt64LE(8 * i)));
  if (info.dtype === 'I32') return Array.from({ length: info.nbytes / 4 }, (_, i) => raw.readInt32LE(4 * i));
  throw badInput(info.file, `tensor "${info.name}".dtype`, 'I64 or I32', info.dtype);
}

export interface TensorToWrite {
  name: string;
  dtype: StDtype;
  shape: number[];
  data: ArrayBufferView;
}

/**
 * The one safetensors writer. Tensors are written in the given order, 8-byte aligned header, to
 * `<file>.tmp` then renamed, so a reader never sees a half-written file.
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((a, d) => a * d, 1);
    const nbytes = numel * DTYPE_BYTES[t.dtype];
    if (nbytes !== t.data.byteLength) {
      throw badInput(file, `tensor "${t.name}"`, `${nbytes} bytes for shape [${t.shape.join(', ')}] of ${t.dtype}`, `${t.data.byteLength} bytes`, true);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + nbytes] };
    off += nbytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hbytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hbytes.length));
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, hbytes);
    for (const t of tensors) writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, file);
}
