#!/usr/bin/env node
// Benchmark dispatcher. With no scenario (or with --scenarios LIST) it runs the suite: every suite
// scenario against direct PostgreSQL, Sluice cache off/on and PgBouncer, one report directory
// (lib/suite.mjs). With a scenario name it runs just that one: a scenario with its own `run`
// (passthrough, prepared, cache, rules) writes its own report as before; a suite-only scenario runs
// through the suite. A scenario may export `extraTargets` (target names only its own run knows).

import { parseArgs } from 'node:util';
import { installSignalHandlers } from './lib/cleanup.mjs';

const SCENARIOS = {
  botmix: () => import('./botmix.mjs'),
  ingest: () => import('./ingest.mjs'),
  storm: () => import('./storm.mjs'),
  passthrough: () => import('./passthrough.mjs'),
  prepared: () => import('./prepared.mjs'),
  cache: () => import('./cache.mjs'),
  rules: () => import('./rules.mjs'),
  observe: () => import('./observe.mjs'),
  ceiling: () => import('./ceiling.mjs'),
};
/** The suite's run order; suite scenarios not named here run after these, in SCENARIOS order. */
const SUITE_ORDER = ['passthrough', 'cache', 'botmix', 'ingest', 'storm'];
const ALL_TARGETS = ['direct', 'sluice', 'pgbouncer'];
const SUITE_TARGET_NAMES = ['direct', 'sluice', 'sluice-cache', 'pgbouncer'];

const USAGE = `usage: npm run bench [-- options]                 the suite: every suite scenario, all targets
       npm run bench -- <scenario> [options]     just that scenario
       (or: node bench/run.mjs …)

options:
  --quick          every scenario briefly (suite: 2 s cells, fewer rows; a smoke check)
  --duration S     seconds per measured cell (suite default 10, 2 with --quick; scenarios' own runs: 10)
  --upstream URL   suite: an existing PostgreSQL (postgres://user:pw@host:port/db) instead of the
                   embedded one; Sluice and PgBouncer front it. Creates and drops sluice_bench* databases
  --scenarios LIST suite: comma-separated subset of the suite scenarios
  --write-ratio R  bot mix: share of operations that write (default 0.05)
  --out DIR        suite: write the report here instead of bench/results/<UTC time>/
  --targets LIST   comma-separated subset of ${SUITE_TARGET_NAMES.join(',')} (default: all; direct always
                   runs; sluice-cache exists in the suite and the cache scenario)
  --profile        run Sluice under node --cpu-prof (profiles in bench/results/profiles)
  -h, --help       this text`;

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        duration: { type: 'string' },
        quick: { type: 'boolean', default: false },
        profile: { type: 'boolean', default: false },
        targets: { type: 'string' },
        upstream: { type: 'string' },
        scenarios: { type: 'string' },
        'write-ratio': { type: 'string', default: '0.05' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    console.error(`${err.message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(`${USAGE}\n\nscenarios (* = in the suite):`);
    for (const [id, load] of Object.entries(SCENARIOS).sort(([a], [b]) => a.localeCompare(b))) {
      const m = await load();
      console.log(`  ${m.suite ? '*' : ' '} ${id.padEnd(12)} ${m.description}`);
    }
    return 0;
  }
  if (positionals.length > 1) {
    console.error(`one scenario at a time (got ${positionals.join(' ')}); for several: --scenarios a,b`);
    return 2;
  }
  const [name] = positionals;
  if (name && !Object.hasOwn(SCENARIOS, name)) {
    console.error(`unknown scenario "${name}"; known: ${Object.keys(SCENARIOS).join(', ')}`);
    return 2;
  }
  const duration = values.duration === undefined ? undefined : Number(values.duration);
  if (duration !== undefined && (!Number.isInteger(duration) || duration < 1 || duration > 3600)) {
    console.error('--duration must be a whole number of seconds between 1 and 3600');
    return 2;
  }
  const writeRatio = Number(values['write-ratio']);
  if (!(writeRatio >= 0 && writeRatio <= 1)) {
    console.error('--write-ratio must be a number from 0 to 1 (e.g. 0.05)');
    return 2;
  }

  const scenario = name ? await SCENARIOS[name]() : undefined;
  if (scenario?.run && !values.scenarios) {
    // A scenario's own run, exactly as before the suite existed.
    for (const flag of ['upstream', 'out']) {
      if (values[flag] !== undefined) {
        console.error(
          `--${flag} applies to the suite; run \`npm run bench -- --scenarios ${name} --${flag} …\``,
        );
        return 2;
      }
    }
    const known = [...ALL_TARGETS, ...(scenario.extraTargets ?? [])];
    const targets = parseTargets(values.targets, known, name);
    if (!targets) return 2;
    installSignalHandlers();
    await scenario.run({ duration: duration ?? 10, quick: values.quick, profile: values.profile, targets });
    return 0;
  }

  // The suite: every scenario that exports `suite`, or the --scenarios / named subset.
  const suiteIds = [];
  const ordered = [...new Set([...SUITE_ORDER, ...Object.keys(SCENARIOS)])].filter((id) => SCENARIOS[id]);
  for (const id of ordered) if ((await SCENARIOS[id]()).suite) suiteIds.push(id);
  const ids = name ? [name] : values.scenarios ? values.scenarios.split(',').map((s) => s.trim()) : suiteIds;
  const bad = ids.filter((id) => !suiteIds.includes(id));
  if (bad.length > 0) {
    console.error(`not suite scenario(s): ${bad.join(', ')}; suite scenarios: ${suiteIds.join(', ')}`);
    return 2;
  }
  const targets = parseTargets(values.targets, SUITE_TARGET_NAMES, 'the suite');
  if (!targets) return 2;
  const { runSuite } = await import('./lib/suite.mjs');
  installSignalHandlers();
  const scenarios = [];
  for (const id of ids) scenarios.push({ id, module: await SCENARIOS[id]() });
  await runSuite(scenarios, {
    quick: values.quick,
    duration,
    upstream: values.upstream,
    writeRatio,
    targets,
    profile: values.profile,
    out: values.out,
  });
  return 0;
}

function parseTargets(list, known, what) {
  const targets = new Set((list ?? known.join(',')).split(',').map((t) => t.trim().toLowerCase()));
  const unknown = [...targets].filter((t) => !known.includes(t));
  if (unknown.length > 0) {
    console.error(`unknown target(s) ${unknown.join(', ')}; known for ${what}: ${known.join(', ')}`);
    return undefined;
  }
  return targets;
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
