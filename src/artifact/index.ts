// Router artifacts: the one manifest schema (schema.ts), the one writer (writer.ts), the one reader with
// its compatibility checks (reader.ts), and the plan the runtime runs from an artifact (plan.ts).
export * from './schema.ts';
export { ArtifactError, type ArtifactRefusal } from './errors.ts';
export { writeArtifact, routerTensors, packageVersion, type ArtifactInput, type RouterLayerWeights } from './writer.ts';
export { loadArtifact, readManifest, verifyFiles, checkModel, type LoadedArtifact, type ArtifactLayer, type ArtifactTensor, type LoadArtifactOptions, type ModelToMatch } from './reader.ts';
export { artifactPlan, mlpKFor, type PlanOptions } from './plan.ts';
export { sha256Bytes, sha256OfFile } from './hash.ts';
export * from './calibration.ts';
