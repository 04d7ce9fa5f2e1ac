// The one writer of router artifacts (schema.ts). Everything is written into a temporary folder beside the
// destination (same file system), checked by reading it back through the reader, and only then renamed
// into place: a reader sees the previous artifact, or nothing, or the complete new one — never half of one.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { badArg } from '../errors.ts';
import { writeSafetensors, type TensorToWrite } from '../formats/safetensors.ts';
import {
  ARTIFACT_FORMAT,
  ARTIFACT_VERSION,
  MANIFEST_FILE,
  ROUTERS_FILE,
  type FileEntry,
  type LayerEntry,
  type Manifest,
  type ModelIdentityDims,
  type TensorEntry,
} from './schema.ts';
import { loadArtifact, readManifest } from './reader.ts';
import { sha256Bytes, sha256OfFile } from './hash.ts';

export interface RouterLayerWeights {
  layer: number;
  /** low-rank MLP router, nn.Linear layout: fc1 [rank, hidden], fc2 [ffn, rank] */
  mlp?: { rank: number; fc1: Float32Array; fc2: Float32Array };
  /** head router: weight [outputs, hidden], bias [outputs] */
  attn?: { outputs: number; weight: Float32Array; bias: Float32Array | null };
}

export interface ArtifactInput {
  model: ModelIdentityDims;
  corpus: Manifest['corpus'];
  routers: RouterLayerWeights[];
  calibration: Manifest['calibration'];
  layers: LayerEntry[];
  /** other files of the folder (e.g. calibration.json), covered by the manifest's checksums */
  extraFiles?: { name: string; data: string | Uint8Array }[];
  /** default: this package's version */
  toolVersion?: string;
  /** default: now (ISO 8601) */
  createdAt?: string;
}

export interface WriteArtifactOptions {
  /**
   * "replace" (default): the folder is replaced as a whole (temporary sibling folder, then rename).
   * "in-place": the files are moved into an existing folder that others own too (the pipeline's stage
   * folder, which holds the runner's .stage.json): manifest.json is removed first and moved in last, so
   * the folder is never a valid artifact with mixed files; other files of the folder are left alone.
   */
  mode?: 'replace' | 'in-place';
  /**
   * When the folder already holds an artifact identical in everything but its created time, keep that
   * time (default true): rewriting the same artifact (a resumed pipeline) gives the same bytes.
   */
  keepCreatedAt?: boolean;
}

/** The manifest already at `out` when it reads cleanly, else null. */
function existingManifest(out: string): Manifest | null {
  try {
    return readManifest(out);
  } catch {
    return null;
  }
}

let cachedVersion: string | null = null;
/** Version of this package (package.json), recorded in every artifact. */
export function packageVersion(): string {
  if (cachedVersion === null) {
    const pkg = join(dirname(new URL(import.meta.url).pathname), '..', '..', 'package.json');
    cachedVersion = String(JSON.parse(readFileSync(pkg, 'utf8')).version);
  }
  return cachedVersion;
}

function writeFileSynced(file: string, data: Uint8Array): void {
  const fd = openSync(file, 'w');
  try {
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Router tensors in the artifact's order (by layer: fc1, fc2, attn weight, attn bias), checked against the model. */
export function routerTensors(model: ModelIdentityDims, routers: RouterLayerWeights[]): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  const seen = new Set<number>();
  for (const r of [...routers].sort((a, b) => a.layer - b.layer)) {
    const at = `routers (layer ${r.layer})`;
    if (!Number.isInteger(r.layer) || r.layer < 1 || r.layer >= model.layers) throw badArg(`${at}.layer`, `a layer in 1..${model.layers - 1} (layer 0 stays dense)`, r.layer);
    if (seen.has(r.layer)) throw badArg(`${at}.layer`, 'each layer once', r.layer);
    seen.add(r.layer);
    const p = `layers.${r.layer}`;
    if (r.mlp) {
      const { rank, fc1, fc2 } = r.mlp;
      if (!Number.isInteger(rank) || rank < 1) throw badArg(`${at}.mlp.rank`, 'an integer >= 1', rank);
      if (fc1.length !== rank * model.hidden) throw badArg(`${at}.mlp.fc1`, `${rank} x ${model.hidden} values`, fc1.length);
      if (fc2.length !== model.ffn * rank) throw badArg(`${at}.mlp.fc2`, `${model.ffn} x ${rank} values`, fc2.length);
      out.push({ name: `${p}.mlp_router.fc1.weight`, dtype: 'F32', shape: [rank, model.hidden], data: fc1 });
      out.push({ name: `${p}.mlp_router.fc2.weight`, dtype: 'F32', shape: [model.ffn, rank], data: fc2 });
    }
    if (r.attn) {
      const { outputs, weight, bias } = r.attn;
      if (outputs !== model.heads && outputs !== model.kvHeads) throw badArg(`${at}.attn.outputs`, `${model.heads} (heads) or ${model.kvHeads} (KV groups)`, outputs);
      if (weight.length !== outputs * model.hidden) throw badArg(`${at}.attn.weight`, `${outputs} x ${model.hidden} values`, weight.length);
      out.push({ name: `${p}.attn_router.weight`, dtype: 'F32', shape: [outputs, model.hidden], data: weight });
      if (bias) {
        if (bias.length !== outputs) throw badArg(`${at}.attn.bias`, `${outputs} values`, bias.length);
        out.push({ name: `${p}.attn_router.bias`, dtype: 'F32', shape: [outputs], data: bias });
      }
    }
  }
  return out;
}

/**
 * Writes an artifact folder at `outDir` (replacing one that is there) and returns its manifest. On any
 * failure the destination is left as it was and the temporary folder is removed.
 */
export function writeArtifact(outDir: string, input: ArtifactInput, opts: WriteArtifactOptions = {}): Manifest {
  const out = resolve(outDir);
  const inPlace = opts.mode === 'in-place';
  const parent = inPlace ? out : dirname(out);
  mkdirSync(parent, { recursive: true });
  const tmp = inPlace ? join(out, `.export-tmp-${process.pid}-${Date.now()}`) : join(parent, `.${basename(out)}.tmp-${process.pid}-${Date.now()}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const tensors = routerTensors(input.model, input.routers);
    const routersPath = join(tmp, ROUTERS_FILE);
    writeSafetensors(routersPath, tensors, { format: ARTIFACT_FORMAT, version: String(ARTIFACT_VERSION) });
    const files: Record<string, FileEntry> = {};
    files[ROUTERS_FILE] = { sha256: sha256OfFile(routersPath), bytes: statSync(routersPath).size };
    for (const f of input.extraFiles ?? []) {
      if (f.name === MANIFEST_FILE || f.name === ROUTERS_FILE || f.name.includes('/') || f.name.startsWith('.')) throw badArg('extraFiles.name', 'a plain file name other than manifest.json and routers.safetensors', f.name);
      const data = typeof f.data === 'string' ? Buffer.from(f.data, 'utf8') : f.data;
      writeFileSynced(join(tmp, f.name), data);
      files[f.name] = { sha256: sha256Bytes(data), bytes: data.length };
    }
    const mlpRank: Record<string, number> = {};
    for (const r of input.routers) if (r.mlp) mlpRank[String(r.layer)] = r.mlp.rank;
    const attnOutputs = input.routers.find((r) => r.attn)?.attn?.outputs ?? input.model.heads;
    const manifest: Manifest = {
      format: ARTIFACT_FORMAT,
      version: ARTIFACT_VERSION,
      createdAt: input.createdAt ?? new Date().toISOString(),
      tool: { name: 'polar', version: input.toolVersion ?? packageVersion() },
      model: input.model,
      corpus: input.corpus,
      routers: {
        file: ROUTERS_FILE,
        tensors: tensors.map((t): TensorEntry => ({ name: t.name, dtype: 'F32', shape: t.shape })),
        mlpRank,
        attnOutputs,
      },
      calibration: input.calibration,
      layers: [...input.layers].sort((a, b) => a.layer - b.layer),
      files,
    };
    if (opts.keepCreatedAt !== false) {
      const old = existingManifest(out);
      if (old && JSON.stringify({ ...old, createdAt: '' }) === JSON.stringify({ ...manifest, createdAt: '' })) manifest.createdAt = old.createdAt;
    }
    writeFileSynced(join(tmp, MANIFEST_FILE), Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8'));
    // read back through the one reader: schema, checksums, tensor names and shapes
    loadArtifact(tmp);
    if (inPlace) {
      rmSync(join(out, MANIFEST_FILE), { force: true });
      for (const name of Object.keys(files)) renameSync(join(tmp, name), join(out, name));
      renameSync(join(tmp, MANIFEST_FILE), join(out, MANIFEST_FILE));
      rmSync(tmp, { recursive: true, force: true });
    } else if (existsSync(out)) {
      const old = join(parent, `.${basename(out)}.old-${process.pid}-${Date.now()}`);
      renameSync(out, old);
      renameSync(tmp, out);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, out);
    }
    return manifest;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
