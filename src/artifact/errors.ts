// Why an artifact was refused. The message keeps the project's one shape ("<file>: <field>: expected ...,
// received ...") and names both sides; `reason` lets callers (and tests) tell the cases apart.
import { PolarError } from '../errors.ts';

export type ArtifactRefusal =
  | 'format' // not a polar artifact
  | 'version' // a format version this tool does not read
  | 'checksum' // a file's bytes differ from the manifest's sha256 (or size)
  | 'missing' // a file the manifest lists is absent
  | 'model' // the artifact belongs to another model (identity or dims differ)
  | 'content'; // a file's content disagrees with the manifest (tensor names, shapes)

export class ArtifactError extends PolarError {
  readonly reason: ArtifactRefusal;
  constructor(reason: ArtifactRefusal, message: string, file: string, field: string) {
    super(reason === 'version' ? 'unsupported' : reason === 'missing' ? 'not-found' : 'bad-input', message, { file, field });
    this.name = 'ArtifactError';
    this.reason = reason;
  }
}
