// The artifact's checksums use the shared sha256 helpers (src/formats/sha256.ts), uncached on purpose.
export { sha256Bytes, sha256OfFile } from '../formats/sha256.ts';
