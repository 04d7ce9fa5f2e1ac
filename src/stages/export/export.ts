// The export stage's engine (also behind `polar export`): trained routers + calibration.json -> a router
// artifact folder (src/artifact: manifest.json, routers.safetensors, calibration.json), written atomically
// by the one writer. Refuses inputs that do not belong together: routers or calibration of another model,
// or routers changed since they were calibrated (their fingerprints differ from calibration.json's).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { modelIdentityDims } from '../../artifact/schema.ts';
import { readCalibration, CALIBRATION_FILE, writeArtifact, type LayerEntry, type Manifest, type RouterLayerWeights } from '../../artifact/index.ts';
import { badInput, PolarError } from '../../errors.ts';
import { loadModel, type LoadedModel } from '../../model/index.ts';
import { listCheckpoints, readCheckpoint } from '../../routers/checkpoint.ts';

export interface ExportOptions {
  model: string | LoadedModel;
  /** the train stage's folder */
  routers: string;
  /** calibration.json of the calibrate stage */
  calibration: string;
  /** the artifact folder to write (replaced when it exists) */
  out: string;
  /** "replace" the folder (default) or write "in-place" into a folder others own too (pipeline stage folder) */
  mode?: 'replace' | 'in-place';
  /** ISO time to record (default: SOURCE_DATE_EPOCH when set, else now) */
  createdAt?: string;
  log?: (line: string) => void;
}

/** created time: SOURCE_DATE_EPOCH (reproducible builds) when set, else now. */
export function createdTime(): string {
  const e = process.env.SOURCE_DATE_EPOCH;
  if (e !== undefined && /^\d+$/.test(e)) return new Date(Number(e) * 1000).toISOString();
  return new Date().toISOString();
}

export function exportArtifact(o: ExportOptions): Manifest {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const model = typeof o.model === 'string' ? loadModel(o.model) : o.model;
  const id = model.identity();
  const calFile = resolve(o.calibration);
  const cal = readCalibration(calFile);
  for (const k of ['configSha256', 'weightsSha256'] as const) {
    if (cal.model[k] !== id[k]) throw badInput(calFile, `model.${k}`, `${id[k]} (the model in ${model.dir})`, `${cal.model[k]} (calibrated for another model)`, true);
  }
  const routerDir = resolve(o.routers);
  const cks = listCheckpoints(routerDir);
  if (!cks.length) throw new PolarError('not-found', `${routerDir}: router checkpoints (layer-NNN/router.safetensors) not found (run the train stage first)`);
  const routers: RouterLayerWeights[] = [];
  const layersWithRouters = new Set<number>();
  for (const c of cks) {
    const ck = readCheckpoint(c.file);
    for (const k of ['configSha256', 'weightsSha256'] as const) {
      if (ck.meta[k] !== id[k]) throw badInput(c.file, k, `${id[k]} (the model in ${model.dir})`, `${ck.meta[k]} (routers of another model)`, true);
    }
    const fp = cal.routers.fingerprints[String(c.layer)];
    if (fp !== undefined && fp !== ck.meta.fingerprint) {
      throw badInput(c.file, 'fingerprint', `${fp} (the routers ${calFile} was calibrated with)`, `${ck.meta.fingerprint} (retrained since: calibrate again)`, true);
    }
    const t = (name: string) => ck.tensors.get(`layers.${c.layer}.${name}`);
    const fc1 = t('mlp_router.fc1.weight'), fc2 = t('mlp_router.fc2.weight');
    const w = t('attn_router.weight'), b = t('attn_router.bias');
    routers.push({
      layer: c.layer,
      mlp: fc1 && fc2 ? { rank: fc1.shape[0], fc1: fc1.data, fc2: fc2.data } : undefined,
      attn: w ? { outputs: w.shape[0], weight: w.data, bias: b?.data ?? null } : undefined,
    });
    layersWithRouters.add(c.layer);
  }
  for (const l of cal.routers.layers) {
    if (!layersWithRouters.has(l)) throw badInput(routerDir, `layer-${String(l).padStart(3, '0')}`, `the router checkpoint of layer ${l} (calibrated in ${calFile})`, 'nothing', true);
  }

  const entries = new Map<number, LayerEntry>();
  const entry = (l: number) => entries.get(l) ?? (entries.set(l, { layer: l }), entries.get(l)!);
  for (const m of cal.mlp?.layers ?? []) {
    entry(m.layer).mlp = { k: m.k, recall: m.recall, recallCheck: m.recallCheck, unionDensity: m.unionDensity, score: m.score };
  }
  for (const h of cal.heads.layers) if (h.kept < h.units) entry(h.layer).attn = { kept: h.kept, units: h.units };
  const layers: LayerEntry[] = [{ layer: 0 }, ...[...entries.values()].filter((e) => e.layer !== 0)];

  const manifest = writeArtifact(o.out, {
    model: modelIdentityDims(model),
    corpus: { sha256: cal.corpus.sha256, tokens: cal.corpus.tokens },
    routers,
    calibration: {
      batchSizes: cal.mlp?.batchSizes ?? [],
      mlpTarget: cal.mlp?.target ?? null,
      granule: cal.mlp?.granule ?? null,
      attention: {
        unit: cal.heads.unit,
        mode: cal.heads.mode,
        maxPplIncrease: cal.heads.maxPplIncrease,
        fraction: cal.heads.fraction,
        densePpl: cal.heads.densePpl,
        sparsePpl: cal.heads.sparsePpl,
        tokens: cal.heads.tokens,
        evalBatch: cal.heads.evalBatch,
      },
    },
    layers,
    extraFiles: [{ name: CALIBRATION_FILE, data: readFileSync(calFile) }],
    createdAt: o.createdAt ?? createdTime(),
  }, { mode: o.mode });
  log(`export: wrote ${resolve(o.out)} (${manifest.routers.tensors.length} router tensors, ${manifest.layers.filter((e) => e.mlp || e.attn).length} sparse layer(s))`);
  return manifest;
}
