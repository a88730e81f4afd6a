// The pass-through scenario: pgbench straight into PostgreSQL, through Sluice and through PgBouncer
// (both in transaction mode, pool 20), run back to back within each row, reported as tps ratios to
// direct and latency added at one client.

import { cellLine, pgbenchCell } from './lib/cells.mjs';
import { runCleanup } from './lib/cleanup.mjs';
import { initPgbench, maintain, pgbenchVersion, runPgbench } from './lib/pgbench.mjs';
import { pgbouncerVersion } from './lib/pgbouncer.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { fmt, machineFacts, NOISE_NOTE, ratio, stamp, table, writeReport } from './lib/report.mjs';
import {
  finishTargets,
  MAINTAIN_NOTE,
  machineLines,
  runCell,
  startProxies,
  TARGET_LABELS,
  targetNotes,
  targetsForReport,
  warmUp,
} from './lib/targets.mjs';

export const description =
  'pgbench through Sluice and PgBouncer vs direct PostgreSQL (transaction mode, pool 20)';

const SCALE = 10;
const THREADS = 2;
const POOL_SIZE = 20;
const MAX_CONNECTIONS = 300;
const LATENCY_TARGET_US = 30;

/** The rows, in run order; `quick` marks the subset `--quick` runs. */
const ROWS = [
  {
    id: 'select-simple-16',
    label: 'select-only `-S -M simple`, 16 clients',
    builtin: 'select-only',
    mode: 'simple',
    clients: 16,
    quick: true,
  },
  {
    id: 'select-simple-64',
    label: 'select-only `-S -M simple`, 64 clients',
    builtin: 'select-only',
    mode: 'simple',
    clients: 64,
  },
  {
    id: 'select-extended-16',
    label: 'select-only `-S -M extended`, 16 clients',
    builtin: 'select-only',
    mode: 'extended',
    clients: 16,
  },
  {
    id: 'select-extended-64',
    label: 'select-only `-S -M extended`, 64 clients',
    builtin: 'select-only',
    mode: 'extended',
    clients: 64,
  },
  {
    id: 'tpcb-simple-32',
    label: 'TPC-B (default script) `-M simple`, 32 clients',
    builtin: 'tpcb-like',
    mode: 'simple',
    clients: 32,
    quick: true,
  },
  {
    id: 'latency-extended-1',
    label: 'select-only `-S -M extended`, 1 client (latency)',
    builtin: 'select-only',
    mode: 'extended',
    clients: 1,
    quick: true,
    latency: true,
  },
];

const log = (msg) => console.error(`[passthrough] ${msg}`);

// ---------------------------------------------------------------------------------------------
// In the suite (`npm run bench`): the same kind of rows against all four suite targets, latency
// from pgbench's per-transaction log.

export const title = 'Pass-through (pgbench)';

/** pgbench 15 prepares synchronously: `-M prepared` needs -j = -c through a pooler (ANCHORS.md). */
const PGBOUNCER_PREPARED =
  'not run: PgBouncer 1.18 in transaction mode keeps no prepared statements (clients abort)';
const SUITE_ROWS = [
  {
    id: 'select-simple-16',
    label: 'select-only `-M simple`, 16 clients',
    short: 'select-only simple, 16 clients',
    builtin: 'select-only',
    mode: 'simple',
    clients: 16,
    quick: true,
  },
  {
    id: 'select-extended-16',
    label: 'select-only `-M extended`, 16 clients',
    short: 'select-only extended, 16 clients',
    builtin: 'select-only',
    mode: 'extended',
    clients: 16,
  },
  {
    id: 'select-prepared-16',
    label: 'select-only `-M prepared`, 16 clients (`-j 16`)',
    short: 'select-only prepared, 16 clients',
    builtin: 'select-only',
    mode: 'prepared',
    clients: 16,
    threads: 16,
    noPgbouncer: true,
  },
  {
    id: 'tpcb-simple-16',
    label: 'TPC-B `-M simple`, 16 clients',
    short: 'TPC-B simple, 16 clients',
    builtin: 'tpcb-like',
    mode: 'simple',
    clients: 16,
    quick: true,
  },
  {
    id: 'tpcb-extended-16',
    label: 'TPC-B `-M extended`, 16 clients',
    short: 'TPC-B extended, 16 clients',
    builtin: 'tpcb-like',
    mode: 'extended',
    clients: 16,
  },
  {
    id: 'tpcb-prepared-16',
    label: 'TPC-B `-M prepared`, 16 clients (`-j 16`)',
    short: 'TPC-B prepared, 16 clients',
    builtin: 'tpcb-like',
    mode: 'prepared',
    clients: 16,
    threads: 16,
    noPgbouncer: true,
  },
  {
    id: 'latency-simple-1',
    label: 'select-only `-M simple`, 1 client (latency)',
    short: 'select-only simple, 1 client',
    builtin: 'select-only',
    mode: 'simple',
    clients: 1,
  },
  {
    id: 'latency-extended-1',
    label: 'select-only `-M extended`, 1 client (latency)',
    short: 'select-only extended, 1 client',
    builtin: 'select-only',
    mode: 'extended',
    clients: 1,
    quick: true,
  },
  {
    id: 'latency-prepared-1',
    label: 'select-only `-M prepared`, 1 client (latency)',
    short: 'select-only prepared, 1 client',
    builtin: 'select-only',
    mode: 'prepared',
    clients: 1,
    noPgbouncer: true,
  },
];
const suiteRows = (opts) => (opts.quick ? SUITE_ROWS.filter((r) => r.quick) : SUITE_ROWS);
const suiteScale = (opts) => (opts.quick ? 4 : SCALE);
const NOT_PGBOUNCER = ['direct', 'sluice', 'sluice-cache'];

export function suitePlan(opts) {
  return [
    { label: `pgbench -i -s ${suiteScale(opts)}`, seconds: opts.quick ? 5 : 20 },
    { label: 'warm-up, 1 s per target', seconds: 6 },
    ...suiteRows(opts).map((r) => ({
      label: r.short,
      seconds: opts.duration + (opts.quick ? 1 : 2),
      perTarget: true,
      only: r.noPgbouncer ? NOT_PGBOUNCER : undefined,
    })),
  ];
}

export async function suite(ctx) {
  const { opts } = ctx;
  ctx.step(`pgbench -i -s ${suiteScale(opts)}`);
  await initPgbench(ctx.direct, { scale: suiteScale(opts) });
  // Unrecorded: opens each proxy's pool and proves every path before the first measured cell.
  ctx.step('warm-up, 1 s per target');
  for (const name of ctx.active) {
    const w = await runPgbench(
      ctx.connFor(name),
      { builtin: 'select-only', mode: 'simple', clients: 4 },
      { duration: 1, threads: 2 },
    );
    if (w.error) ctx.progress.note(`warm-up through ${ctx.targets[name].label} failed: ${w.error}`);
  }
  const rows = [];
  for (const row of suiteRows(opts)) {
    const cells = {};
    const notRun = {};
    for (const name of ctx.active) {
      if (row.noPgbouncer && name === 'pgbouncer') {
        notRun[name] = PGBOUNCER_PREPARED;
        continue;
      }
      ctx.step(row.short, name);
      cells[name] = await pgbenchCell(ctx, name, ctx.connFor(name), row, {
        duration: opts.duration,
        threads: row.threads ?? Math.min(THREADS, row.clients),
        before: () => maintain(ctx.direct),
      });
      ctx.progress.note(cellLine(cells[name], 'tps'));
    }
    rows.push({ id: row.id, label: row.label, short: row.short, unit: 'tps', cells, notRun });
  }
  return {
    title,
    description:
      `pgbench's builtin scripts (scale ${suiteScale(opts)}, \`-n\`, \`-T ${opts.duration}\`, \`-j 2\` or one thread per ` +
      'client with `-M prepared`): select-only and TPC-B in the simple, extended and prepared protocols, and ' +
      'select-only at one client for the round-trip latency. Before every cell the bench vacuums the small ' +
      'tables, empties pgbench_history and checkpoints, directly against PostgreSQL.',
    rows,
    notes: [`PgBouncer: ${PGBOUNCER_PREPARED.replace(/^not run: /, '')}; its prepared rows are left out.`],
  };
}

/**
 * @param {{ duration: number, quick: boolean, profile: boolean, targets: Set<string> }} opts
 */
export async function run(opts) {
  const startedAt = new Date();
  const rows = opts.quick ? ROWS.filter((r) => r.quick) : ROWS;
  const notes = [];
  const machine = await machineFacts();
  machine.pgbench = await pgbenchVersion();
  machine.pgbouncer = await pgbouncerVersion();
  if (!machine.pgbench)
    throw new Error('pgbench not found on PATH (Debian: apt-get install postgresql-client)');

  /** name -> { conn?, available, reason?, proxy? } */
  const targets = { direct: { available: true } };
  let profiles = [];
  try {
    log('starting PostgreSQL…');
    const pg = await startPostgres({ maxConnections: MAX_CONNECTIONS });
    const direct = { host: pg.host, port: pg.port, user: pg.user, password: pg.password };
    targets.direct.conn = direct;
    machine.postgres = await serverVersion(direct);
    notes.push(
      `PostgreSQL ${machine.postgres} started by ${pg.startedBy}; max_connections ${MAX_CONNECTIONS}.`,
    );
    log(`PostgreSQL ${machine.postgres} on ${pg.host}:${pg.port}; pgbench -i -s ${SCALE}…`);
    await initPgbench(direct, { scale: SCALE });

    Object.assign(targets, await startProxies(direct, { opts, machine, poolSize: POOL_SIZE, log }));

    // Warm-up: a short unrecorded run per target fills caches and pools, and proves each path works.
    const active = await warmUp(targets, { quick: opts.quick, threads: THREADS, log });

    const results = [];
    for (const [i, row] of rows.entries()) {
      const cells = {};
      for (const name of active) {
        const r = await runCell(targets, name, direct, row, { duration: opts.duration, threads: THREADS });
        cells[name] = r;
        if (r.exitCode === undefined) continue; // the proxy had exited: nothing ran
        log(
          `${i + 1}/${rows.length} ${row.id} ${TARGET_LABELS[name].padEnd(9)} ` +
            (r.error
              ? `ERROR ${r.error}`
              : `${fmt.tps(r.tps)} tps, ${fmt.ms(r.latencyMs)} ms, failed ${r.failed ?? '?'}`),
        );
      }
      results.push(summariseRow(row, cells));
    }

    profiles = await finishTargets(targets, opts, machine);

    const finishedAt = new Date();
    const report = {
      scenario: 'passthrough',
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      options: {
        duration: opts.duration,
        quick: opts.quick,
        profile: opts.profile,
        scale: SCALE,
        threads: THREADS,
        poolSize: POOL_SIZE,
        poolMode: 'transaction',
        order: active,
      },
      machine,
      targets: targetsForReport(targets),
      rows: results,
      latency: latencySummary(results),
      profiles,
      notes: [NOISE_NOTE, ...notes],
    };
    const markdown = renderMarkdown(report, active);
    const { jsonPath, mdPath } = await writeReport(`passthrough-${stamp(startedAt)}`, report, markdown);
    process.stdout.write(`${markdown}\n`);
    log(`wrote ${mdPath}`);
    log(`wrote ${jsonPath}`);
    if (opts.profile) {
      if (profiles.length > 0)
        for (const p of profiles) log(`CPU profile: ${p} (open in Chrome DevTools → Performance)`);
      else if (targets.sluice.proxy)
        log('no CPU profile was written: Sluice must exit normally on SIGTERM for --cpu-prof to flush');
    }
    return report;
  } finally {
    log('stopping everything this run started…');
    await runCleanup();
  }
}

function summariseRow(row, cells) {
  const tps = (name) => (cells[name]?.error ? null : (cells[name]?.tps ?? null));
  const lat = (name) => (cells[name]?.error ? null : (cells[name]?.latencyMs ?? null));
  const added = (name) =>
    lat(name) != null && lat('direct') != null ? (lat(name) - lat('direct')) * 1000 : null;
  return {
    id: row.id,
    label: row.label,
    workload: { builtin: row.builtin, mode: row.mode, clients: row.clients },
    results: cells,
    ratios: {
      sluiceToDirect: ratio(tps('sluice'), tps('direct')),
      pgbouncerToDirect: ratio(tps('pgbouncer'), tps('direct')),
      sluiceToPgbouncer: ratio(tps('sluice'), tps('pgbouncer')),
    },
    addedLatencyUs: { sluice: added('sluice'), pgbouncer: added('pgbouncer') },
    latencyRow: Boolean(row.latency),
  };
}

function latencySummary(results) {
  const row = results.find((r) => r.latencyRow);
  if (!row) return undefined;
  const sluice = row.addedLatencyUs.sluice;
  return {
    row: row.id,
    directMs: row.results.direct?.latencyMs ?? null,
    addedUs: row.addedLatencyUs,
    targetUs: LATENCY_TARGET_US,
    sluiceMeetsTarget: sluice == null ? null : sluice <= LATENCY_TARGET_US,
  };
}

function renderMarkdown(report, active) {
  const has = (name) => active.includes(name);
  const cellError = (cell) => (cell?.error ? 'error' : undefined);
  const out = [];
  out.push('# Pass-through: direct PostgreSQL vs Sluice vs PgBouncer', '');
  out.push(
    `${report.startedAt} · pgbench scale ${report.options.scale}, \`-j ${report.options.threads} -T ${report.options.duration}\`, ` +
      `one run per cell, targets run back to back within each row (${active.map((t) => TARGET_LABELS[t]).join(' → ')}). ` +
      `Proxies in transaction mode, pool ${report.options.poolSize}.${report.options.quick ? ' Quick run (subset of rows).' : ''}`,
    '',
  );
  out.push(`> ${NOISE_NOTE}`, '');

  const header = ['workload', 'direct tps'];
  if (has('sluice')) header.push('Sluice tps (ratio)');
  if (has('pgbouncer')) header.push('PgBouncer tps (ratio)');
  if (has('sluice') && has('pgbouncer')) header.push('Sluice/PgBouncer');
  const tpsRows = report.rows.map((r) => {
    const c = r.results;
    const cells = [r.label, cellError(c.direct) ?? fmt.tps(c.direct?.tps)];
    if (has('sluice'))
      cells.push(cellError(c.sluice) ?? `${fmt.tps(c.sluice?.tps)} (${fmt.ratio(r.ratios.sluiceToDirect)})`);
    if (has('pgbouncer'))
      cells.push(
        cellError(c.pgbouncer) ?? `${fmt.tps(c.pgbouncer?.tps)} (${fmt.ratio(r.ratios.pgbouncerToDirect)})`,
      );
    if (has('sluice') && has('pgbouncer')) cells.push(fmt.ratio(r.ratios.sluiceToPgbouncer));
    return cells;
  });
  out.push(table(header, tpsRows), '');

  out.push('## Latency', '');
  out.push(
    'Average latency per transaction as pgbench reports it; µs figures are the difference from direct in the same row. ' +
      `Failed transactions as pgbench counts them (${active.map((t) => TARGET_LABELS[t]).join(' / ')}).`,
    '',
  );
  const latHeader = ['workload', 'direct ms'];
  if (has('sluice')) latHeader.push('Sluice ms (added)');
  if (has('pgbouncer')) latHeader.push('PgBouncer ms (added)');
  latHeader.push('failed');
  const latRows = report.rows.map((r) => {
    const c = r.results;
    const cells = [r.label, cellError(c.direct) ?? fmt.ms(c.direct?.latencyMs)];
    if (has('sluice'))
      cells.push(
        cellError(c.sluice) ?? `${fmt.ms(c.sluice?.latencyMs)} (${fmt.us(r.addedLatencyUs.sluice)})`,
      );
    if (has('pgbouncer'))
      cells.push(
        cellError(c.pgbouncer) ?? `${fmt.ms(c.pgbouncer?.latencyMs)} (${fmt.us(r.addedLatencyUs.pgbouncer)})`,
      );
    cells.push(active.map((t) => c[t]?.failed ?? '?').join(' / '));
    return cells;
  });
  out.push(table(latHeader, latRows), '');
  const l = report.latency;
  if (l) {
    const parts = [];
    if (has('sluice'))
      parts.push(
        `Sluice ${fmt.us(l.addedUs.sluice)} (target ≤ ${l.targetUs} µs: ${l.sluiceMeetsTarget == null ? 'no figure' : l.sluiceMeetsTarget ? 'met' : 'not met'})`,
      );
    if (has('pgbouncer')) parts.push(`PgBouncer ${fmt.us(l.addedUs.pgbouncer)}`);
    if (parts.length > 0)
      out.push(`Added latency at 1 client (\`-S -M extended\`): ${parts.join(', ')}.`, '');
  }

  out.push(...machineLines(report.machine));

  out.push('## Notes', '');
  for (const n of report.notes.slice(1)) out.push(`- ${n}`);
  out.push(...targetNotes(report.targets));
  out.push(`- ${MAINTAIN_NOTE}`);
  for (const r of report.rows) {
    for (const [name, c] of Object.entries(r.results)) {
      if (c?.error) out.push(`- ${r.id}, ${TARGET_LABELS[name]}: ${c.error}`);
    }
  }
  for (const p of report.profiles) out.push(`- CPU profile of Sluice: \`${p}\``);
  return out.join('\n');
}
