// The pass-through scenario: pgbench straight into PostgreSQL, through Sluice and through PgBouncer
// (both in transaction mode, pool 20), run back to back within each row, reported as tps ratios to
// direct and latency added at one client.

import os from 'node:os';
import { runCleanup, wasSignalled } from './lib/cleanup.mjs';
import { initPgbench, maintain, pgbenchVersion, runPgbench } from './lib/pgbench.mjs';
import { PGBOUNCER_BIN, pgbouncerVersion, startPgbouncer } from './lib/pgbouncer.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { fmt, machineFacts, NOISE_NOTE, ratio, stamp, table, writeReport } from './lib/report.mjs';
import { sluiceUnavailable, startSluice } from './lib/sluice.mjs';

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

const TARGET_LABELS = { direct: 'direct', sluice: 'Sluice', pgbouncer: 'PgBouncer' };

const log = (msg) => console.error(`[passthrough] ${msg}`);

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

    targets.sluice = await startTarget('sluice', opts, async () => {
      const unavailable = await sluiceUnavailable();
      if (unavailable) throw new Error(unavailable);
      return startSluice(direct, { poolSize: POOL_SIZE, profile: opts.profile });
    });
    targets.pgbouncer = await startTarget('pgbouncer', opts, async () => {
      if (!machine.pgbouncer) throw new Error(`PgBouncer is not installed (no ${PGBOUNCER_BIN})`);
      return startPgbouncer(direct, { poolSize: POOL_SIZE, maxClientConn: 1000 });
    });
    const order = ['direct', 'sluice', 'pgbouncer'].filter((t) => targets[t].available);

    // Warm-up: a short unrecorded run per target fills caches and pools, and proves each path works.
    for (const name of order) {
      const w = await runPgbench(
        targets[name].conn,
        { builtin: 'select-only', mode: 'simple', clients: 4 },
        { duration: opts.quick ? 1 : 2, threads: THREADS },
      );
      if (!w.error) continue;
      if (name === 'direct') throw new Error(`warm-up against PostgreSQL failed: ${w.error}`);
      targets[name].available = false;
      targets[name].reason = `warm-up failed: ${w.error}`;
      log(`${TARGET_LABELS[name]} dropped: ${targets[name].reason}`);
      await targets[name].proxy.stop();
    }
    const active = order.filter((t) => targets[t].available);

    const results = [];
    for (const [i, row] of rows.entries()) {
      const cells = {};
      for (const name of active) {
        if (wasSignalled()) throw new Error('interrupted');
        const proxy = targets[name].proxy;
        if (proxy?.child.exitInfo) {
          const { code, signal } = proxy.child.exitInfo;
          cells[name] = { error: `${TARGET_LABELS[name]} had exited (code ${code}, signal ${signal})` };
          continue;
        }
        await maintain(direct);
        const r = await runPgbench(targets[name].conn, row, { duration: opts.duration, threads: THREADS });
        if (wasSignalled()) throw new Error('interrupted');
        cells[name] = r;
        log(
          `${i + 1}/${rows.length} ${row.id} ${TARGET_LABELS[name].padEnd(9)} ` +
            (r.error
              ? `ERROR ${r.error}`
              : `${fmt.tps(r.tps)} tps, ${fmt.ms(r.latencyMs)} ms, failed ${r.failed ?? '?'}`),
        );
      }
      results.push(summariseRow(row, cells));
    }

    // Stop Sluice now (not in the final cleanup) so a --cpu-prof profile is on disk to report.
    if (targets.sluice.proxy) {
      await targets.sluice.proxy.stop();
      if (opts.profile) profiles = await targets.sluice.proxy.newProfiles();
    }
    machine.loadAverageAtEnd = os.loadavg().map((l) => Math.round(l * 100) / 100);

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
      targets: Object.fromEntries(
        Object.entries(targets).map(([name, t]) => [
          name,
          { available: t.available, reason: t.reason, command: t.proxy?.command },
        ]),
      ),
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

/** Starts one proxy target, or records why it is not part of this run. */
async function startTarget(name, opts, start) {
  if (!opts.targets.has(name)) return { available: false, reason: 'left out with --targets' };
  try {
    log(`starting ${TARGET_LABELS[name]}…`);
    const proxy = await start();
    log(`${TARGET_LABELS[name]} serving on ${proxy.host}:${proxy.port} (pid ${proxy.pid})`);
    return { available: true, conn: proxy, proxy };
  } catch (err) {
    log(`${TARGET_LABELS[name]} not benchmarked: ${err.message}`);
    return { available: false, reason: err.message };
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

  const m = report.machine;
  out.push('## Machine', '');
  out.push(
    `- nproc ${m.nproc} (${m.cpu}), ${m.memoryGiB} GiB RAM, ${m.os}`,
    `- Node ${m.node}; Sluice ${m.sluice} at ${m.gitCommit}${m.srcDirty ? ' (src/ has uncommitted changes)' : ''}`,
    `- PostgreSQL ${m.postgres}; ${m.pgbench}`,
    `- ${m.pgbouncer ?? 'PgBouncer not installed'}`,
    `- load average (1/5/15 min) at start ${m.loadAverageAtStart.join(' / ')}, at end ${m.loadAverageAtEnd?.join(' / ') ?? '—'}`,
    '',
  );

  out.push('## Notes', '');
  for (const n of report.notes.slice(1)) out.push(`- ${n}`);
  for (const [name, t] of Object.entries(report.targets)) {
    if (name === 'direct') continue;
    if (!t.available) out.push(`- ${TARGET_LABELS[name]} not in this run: ${t.reason.split('\n')[0]}`);
    else if (t.command)
      out.push(`- ${TARGET_LABELS[name]}: \`${t.command.replace(/\S*\/(dist\/cli\.js)/, '$1')}\``);
  }
  out.push(
    '- Every run gets `pgbench -n`; before each run the bench itself does what pgbench would otherwise do ' +
      '(vacuum pgbench_branches and pgbench_tellers, truncate pgbench_history), directly against PostgreSQL, ' +
      'plus a checkpoint — so all three targets start from the same state.',
  );
  for (const r of report.rows) {
    for (const [name, c] of Object.entries(r.results)) {
      if (c?.error) out.push(`- ${r.id}, ${TARGET_LABELS[name]}: ${c.error}`);
    }
  }
  for (const p of report.profiles) out.push(`- CPU profile of Sluice: \`${p}\``);
  return out.join('\n');
}
