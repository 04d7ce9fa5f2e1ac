// The `polar` CLI: one file per command (src/cli/<command>.ts), strict option parsing.
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../runtime/binding.ts';
import { reportError } from './common.ts';
import { registerDoctor } from './doctor.ts';
import { registerInspectModel } from './inspect-model.ts';
import { registerEval } from './eval.ts';
import { registerGenerate } from './generate.ts';
import { registerCollect } from './collect.ts';
import { registerTrain } from './train.ts';
import { registerCalibrate } from './calibrate.ts';
import { registerExport } from './export.ts';
import { registerInspect } from './inspect.ts';
import { registerValidate } from './validate.ts';
import { registerReport } from './report.ts';
import { registerRun } from './run.ts';

export function toolVersion(): string {
  return JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')).version;
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('polar')
    .description('Polar Sparsity toolkit: collect activations, train and calibrate MLP-neuron and attention-head routers, export them, validate them against the dense model and measure the speedup.')
    .version(toolVersion())
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerRun(program);
  registerDoctor(program);
  registerInspectModel(program);
  registerEval(program);
  registerGenerate(program);
  registerCollect(program);
  registerTrain(program);
  registerCalibrate(program);
  registerExport(program);
  registerInspect(program);
  registerValidate(program);
  registerReport(program);
  // one-line summaries for the command list; each command's --help has the full description
  const summaries: Record<string, string> = {
    run: 'the whole pipeline: collect -> train -> calibrate -> export -> validate -> report',
    doctor: 'what this machine can do: CPU, threads, addon, CUDA/GPU, TensorFlow.js backends',
    'inspect-model': 'family, dims, parameters and dtype of a Hugging Face model folder',
    eval: 'dense perplexity of a model on a text file',
    generate: 'greedy generation, streaming tokens',
    collect: 'record router inputs, MLP activity and head norms into Arrow shards',
    train: 'train the MLP and attention-head routers (TensorFlow.js)',
    calibrate: 'MLP top-k per layer and batch size, heads per layer under a perplexity budget',
    export: 'package routers and calibration as a checksummed artifact',
    inspect: 'summarise a router artifact',
    validate: 'sparse vs dense as decoding runs: perplexity, top-1, KL, density, recall',
    report: 'report.html with plots and report.json from a run folder',
  };
  for (const c of program.commands) {
    c.exitOverride().showHelpAfterError('(run with --help for usage)');
    if (summaries[c.name()]) c.summary(summaries[c.name()]);
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors exit 2 like every other bad input
      process.exit(e.exitCode === 0 ? 0 : 2);
    }
    reportError(e);
  }
}
