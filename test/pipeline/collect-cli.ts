// Fallback entry for the kill test while src/cli/main.ts does not register `collect` yet:
// node bin/run-ts.js test/pipeline/collect-cli.ts collect <args>. Same command definition as `polar collect`.
import { Command, CommanderError } from 'commander';
import { registerCollect } from '../../src/cli/collect.ts';

const program = new Command().name('polar').exitOverride();
registerCollect(program);
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  throw e;
}
