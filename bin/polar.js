#!/usr/bin/env node
// The `polar` command: runs the TypeScript sources through tsx (no separate build step to forget).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
