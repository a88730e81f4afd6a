#!/usr/bin/env node
// Benchmark dispatcher: `node bench/run.mjs <scenario> [--duration S] [--quick] [--profile]
// [--targets direct,sluice,pgbouncer]`; with no scenario, lists them. One scenario per file; a
// scenario may export `extraTargets` (target names only it knows, e.g. cache's `sluice-cache`).

import { parseArgs } from 'node:util';
import { installSignalHandlers } from './lib/cleanup.mjs';

const SCENARIOS = {
  passthrough: () => import('./passthrough.mjs'),
  prepared: () => import('./prepared.mjs'),
  cache: () => import('./cache.mjs'),
  rules: () => import('./rules.mjs'),
  observe: () => import('./observe.mjs'),
};
const ALL_TARGETS = ['direct', 'sluice', 'pgbouncer'];

const USAGE = `usage: node bench/run.mjs <scenario> [options]     (or: npm run bench -- <scenario> [options])

options:
  --duration S     seconds per pgbench run (default 10)
  --quick          fewer rows or cells, shorter warm-up
  --profile        run Sluice under node --cpu-prof (profiles in bench/results/profiles)
  --targets LIST   comma-separated subset of ${ALL_TARGETS.join(',')}, plus sluice-cache for the cache
                   scenario (default: all; direct always runs)
  -h, --help       this text`;

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        duration: { type: 'string', default: '10' },
        quick: { type: 'boolean', default: false },
        profile: { type: 'boolean', default: false },
        targets: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    console.error(`${err.message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [name] = positionals;
  if (values.help || !name) {
    console.log(`${USAGE}\n\nscenarios:`);
    for (const [id, load] of Object.entries(SCENARIOS))
      console.log(`  ${id.padEnd(14)} ${(await load()).description}`);
    return 0;
  }
  if (!Object.hasOwn(SCENARIOS, name)) {
    console.error(`unknown scenario "${name}"; known: ${Object.keys(SCENARIOS).join(', ')}`);
    return 2;
  }
  const duration = Number(values.duration);
  if (!Number.isInteger(duration) || duration < 1 || duration > 3600) {
    console.error('--duration must be a whole number of seconds between 1 and 3600');
    return 2;
  }
  const scenario = await SCENARIOS[name]();
  const known = [...ALL_TARGETS, ...(scenario.extraTargets ?? [])];
  const targets = new Set((values.targets ?? known.join(',')).split(',').map((t) => t.trim().toLowerCase()));
  const unknown = [...targets].filter((t) => !known.includes(t));
  if (unknown.length > 0) {
    console.error(`unknown target(s) ${unknown.join(', ')}; known for ${name}: ${known.join(', ')}`);
    return 2;
  }

  installSignalHandlers();
  await scenario.run({ duration, quick: values.quick, profile: values.profile, targets });
  return 0;
}

// Explicit exit: everything the run started has been stopped by now, and a stray handle (a library's
// timer or client) must not keep the benchmark hanging.
main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`bench failed: ${err?.stack ?? err}`);
    process.exit(1);
  },
);
