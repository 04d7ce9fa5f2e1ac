// `polar export --model <dir> --routers <dir> --calibration <file> --out <dir>`: the export stage, usable
// alone: writes the router artifact folder (manifest.json, routers.safetensors, calibration.json)
// atomically. Prints the folder on stdout (or the manifest with --json).
import type { Command } from 'commander';
import { action, log } from './common.ts';
import { exportArtifact } from '../stages/export/index.ts';

interface ExportCliOptions {
  model: string;
  routers: string;
  calibration: string;
  out: string;
  json?: boolean;
}

export function registerExport(program: Command): void {
  program
    .command('export')
    .description(
      'package trained routers and their calibration as a router artifact: <out>/manifest.json (format, version, model identity, ' +
        'router shapes, calibration tables, recall reached, corpus, tool version, sha256 of every file) and <out>/routers.safetensors; ' +
        'written to a temporary folder and renamed, so <out> is never half-written',
    )
    .requiredOption('--model <dir>', 'model folder the routers belong to')
    .requiredOption('--routers <dir>', 'router checkpoints written by `polar train`')
    .requiredOption('--calibration <file>', 'calibration.json written by `polar calibrate`')
    .requiredOption('--out <dir>', 'artifact folder to write (replaced when it exists)')
    .option('--json', 'print the manifest as JSON on stdout')
    .action(
      action((o: ExportCliOptions) => {
        const m = exportArtifact({ model: o.model, routers: o.routers, calibration: o.calibration, out: o.out, log });
        process.stdout.write(o.json ? JSON.stringify(m, null, 2) + '\n' : `${o.out}\n`);
      }),
    );
}
