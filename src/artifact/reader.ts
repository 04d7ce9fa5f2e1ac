// The one reader of router artifacts (schema.ts). loadArtifact() refuses, each with an error that names the
// file, the field and both sides:
//   - a folder that is not a polar artifact, or an artifact version this tool does not read;
//   - a file whose size or sha256 differs from the manifest (corrupted, truncated or edited), or that is missing;
//   - routers.safetensors whose tensors differ from the manifest's list;
//   - a model whose identity (sha256 of config and weights) or dims differ from those the artifact was made for.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { notFound } from '../errors.ts';
import { readSafetensorsHeader, readTensorF32 } from '../formats/safetensors.ts';
import type { LoadedModel, ModelIdentity, ModelSpec } from '../model/index.ts';
import { ArtifactError } from './errors.ts';
import { checkManifest, MANIFEST_FILE, type AttnLayerTable, type Manifest, type MlpLayerTable } from './schema.ts';
import { sha256OfFile } from './hash.ts';

export interface ArtifactTensor {
  shape: number[];
  data: Float32Array;
}

export interface ArtifactLayer {
  layer: number;
  mlp: (MlpLayerTable & { rank: number; fc1: Float32Array; fc2: Float32Array }) | null;
  attn: (AttnLayerTable & { outputs: number; weight: Float32Array; bias: Float32Array | null }) | null;
}

export interface LoadedArtifact {
  dir: string;
  manifest: Manifest;
  /** every router tensor by name, fp32 as stored (empty with `tensors: false`) */
  tensors: Map<string, ArtifactTensor>;
  /** the tables and weights of one layer (nulls where that part runs dense) */
  layer(l: number): ArtifactLayer;
  /** layers with a sparse part, ascending */
  sparseLayers(): number[];
}

/** The model an artifact is checked against: a loaded model folder, or an identity with dims. */
export type ModelToMatch = LoadedModel | { dir?: string; identity: ModelIdentity; spec: Pick<ModelSpec, 'family' | 'layers' | 'hidden' | 'ffn' | 'heads' | 'kvHeads' | 'headDim' | 'vocab'> };

export interface LoadArtifactOptions {
  /** refuse the artifact unless it was made for this model */
  model?: ModelToMatch;
  /** read the tensors (default true); false reads and checks the manifest and checksums only */
  tensors?: boolean;
  /** verify every file's sha256 (default true) */
  verify?: boolean;
}

/** Reads and checks manifest.json only (format, version, schema). */
export function readManifest(dirIn: string): Manifest {
  const dir = resolve(dirIn);
  const file = join(dir, MANIFEST_FILE);
  if (!existsSync(dir)) throw notFound(dir, 'artifact folder', 'give the folder that `polar export` wrote');
  if (!existsSync(file)) throw new ArtifactError('missing', `${file}: manifest.json not found (not a polar artifact folder, or an unfinished export)`, file, '(file)');
  let j: unknown;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ArtifactError('checksum', `${file}: (file): expected a JSON manifest, received unreadable JSON (${(e as Error).message})`, file, '(file)');
  }
  return checkManifest(file, j);
}

/** Checks every file's size and sha256 against the manifest. */
export function verifyFiles(dir: string, m: Manifest): void {
  for (const [name, want] of Object.entries(m.files)) {
    const f = join(dir, name);
    if (!existsSync(f)) throw new ArtifactError('missing', `${f}: (file): expected the file listed in manifest.json (sha256 ${want.sha256}), received nothing (missing)`, f, '(file)');
    const size = statSync(f).size;
    if (size !== want.bytes) {
      throw new ArtifactError('checksum', `${f}: size: expected ${want.bytes} bytes (manifest.json), received ${size} bytes (truncated or modified)`, f, 'bytes');
    }
    const got = sha256OfFile(f);
    if (got !== want.sha256) {
      throw new ArtifactError('checksum', `${f}: sha256: expected ${want.sha256} (manifest.json), received ${got} (the file on disk: corrupted or modified)`, f, 'sha256');
    }
  }
}

function identityOf(model: ModelToMatch): { dir?: string; id: ModelIdentity; spec: ModelToMatch['spec'] } {
  if ('identity' in model && typeof model.identity === 'function') return { dir: model.dir, id: model.identity(), spec: model.spec };
  const m = model as { dir?: string; identity: ModelIdentity; spec: ModelToMatch['spec'] };
  return { dir: m.dir, id: m.identity, spec: m.spec };
}

/** Refuses an artifact made for another model; the message names both identities. */
export function checkModel(manifestFile: string, m: Manifest, model: ModelToMatch): void {
  const { dir, id, spec } = identityOf(model);
  const theirs = dir ? `the model in ${dir}` : 'the model given';
  for (const k of ['configSha256', 'weightsSha256'] as const) {
    if (m.model[k] !== id[k]) {
      throw new ArtifactError(
        'model',
        `${manifestFile}: model.${k}: expected ${id[k]} (${theirs}), received ${m.model[k]} (the model this artifact was made for${m.model.name ? `: ${m.model.name}` : ''}); export routers for this model or load the model the artifact belongs to`,
        manifestFile,
        `model.${k}`,
      );
    }
  }
  for (const k of ['family', 'layers', 'hidden', 'ffn', 'heads', 'kvHeads', 'headDim', 'vocab'] as const) {
    if (m.model[k] !== spec[k]) {
      throw new ArtifactError('model', `${manifestFile}: model.${k}: expected ${JSON.stringify(spec[k])} (${theirs}), received ${JSON.stringify(m.model[k])} (the artifact)`, manifestFile, `model.${k}`);
    }
  }
}

export function loadArtifact(dirIn: string, opts: LoadArtifactOptions = {}): LoadedArtifact {
  const dir = resolve(dirIn);
  const manifestFile = join(dir, MANIFEST_FILE);
  const m = readManifest(dir);
  if (opts.model) checkModel(manifestFile, m, opts.model);
  if (opts.verify !== false) verifyFiles(dir, m);
  const routersFile = join(dir, m.routers.file);
  const h = readSafetensorsHeader(routersFile);
  const listed = new Map(m.routers.tensors.map((t) => [t.name, t]));
  for (const [name, info] of h.tensors) {
    const t = listed.get(name);
    if (!t) throw new ArtifactError('content', `${routersFile}: tensor "${name}": expected only the tensors listed in manifest.json, received one more`, routersFile, `tensor "${name}"`);
    if (info.dtype !== t.dtype || info.shape.join(',') !== t.shape.join(',')) {
      throw new ArtifactError('content', `${routersFile}: tensor "${name}": expected ${t.dtype} [${t.shape.join(', ')}] (manifest.json), received ${info.dtype} [${info.shape.join(', ')}]`, routersFile, `tensor "${name}"`);
    }
  }
  for (const name of listed.keys()) {
    if (!h.tensors.has(name)) throw new ArtifactError('content', `${routersFile}: tensor "${name}": expected the tensor listed in manifest.json, received nothing (missing)`, routersFile, `tensor "${name}"`);
  }
  // shapes against the model's dims
  const md = m.model;
  for (const t of m.routers.tensors) {
    const mm = /^layers\.(\d+)\.(mlp_router\.fc1\.weight|mlp_router\.fc2\.weight|attn_router\.weight|attn_router\.bias)$/.exec(t.name);
    if (!mm) throw new ArtifactError('content', `${routersFile}: tensor "${t.name}": expected a name layers.{l}.mlp_router.fc1.weight / fc2.weight / attn_router.weight / attn_router.bias, received "${t.name}"`, routersFile, `tensor "${t.name}"`);
    const l = Number(mm[1]);
    const rank = m.routers.mlpRank[String(l)];
    const out = m.routers.attnOutputs;
    const want =
      mm[2] === 'mlp_router.fc1.weight' ? [rank, md.hidden] : mm[2] === 'mlp_router.fc2.weight' ? [md.ffn, rank] : mm[2] === 'attn_router.weight' ? [out, md.hidden] : [out];
    if (l < 1 || l >= md.layers || want.join(',') !== t.shape.join(',')) {
      throw new ArtifactError('content', `${routersFile}: tensor "${t.name}": expected shape [${want.join(', ')}] in layers 1..${md.layers - 1} (model dims, routers.mlpRank), received [${t.shape.join(', ')}] in layer ${l}`, routersFile, `tensor "${t.name}"`);
    }
  }
  const tensors = new Map<string, ArtifactTensor>();
  if (opts.tensors !== false) for (const [name, info] of h.tensors) tensors.set(name, { shape: info.shape, data: readTensorF32(info) });
  const entries = new Map(m.layers.map((e) => [e.layer, e]));
  const need = (name: string) => {
    const t = tensors.get(name);
    if (!t) throw new ArtifactError('content', `${routersFile}: tensor "${name}": expected it loaded (load the artifact with tensors: true)`, routersFile, `tensor "${name}"`);
    return t.data;
  };
  return {
    dir,
    manifest: m,
    tensors,
    layer(l: number): ArtifactLayer {
      const e = entries.get(l);
      const p = `layers.${l}`;
      return {
        layer: l,
        mlp: e?.mlp ? { ...e.mlp, rank: m.routers.mlpRank[String(l)], fc1: need(`${p}.mlp_router.fc1.weight`), fc2: need(`${p}.mlp_router.fc2.weight`) } : null,
        attn: e?.attn
          ? { ...e.attn, outputs: m.routers.attnOutputs, weight: need(`${p}.attn_router.weight`), bias: tensors.get(`${p}.attn_router.bias`)?.data ?? null }
          : null,
      };
    },
    sparseLayers: () => m.layers.filter((e) => e.mlp || e.attn).map((e) => e.layer),
  };
}
