// The prepared-statements scenario (issue 4): `pgbench -M prepared` at 64 clients straight into
// PostgreSQL, through Sluice and through PgBouncer, both in transaction mode with a pool of 8; the
// plan-cache effect (Sluice `-M prepared` vs `-M extended`); and, after every TPC-B run, whether the
// balances still add up. PgBouncer 1.18 failing here is a result, reported with pgbench's error.

import { runCleanup } from './lib/cleanup.mjs';
import { initPgbench, pgbenchVersion } from './lib/pgbench.mjs';
import { pgbouncerVersion } from './lib/pgbouncer.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { psql } from './lib/processes.mjs';
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
  'pgbench -M prepared (select-only, TPC-B) and the plan-cache effect, 64 clients over a pool of 8';

const SCALE = 10;
const CLIENTS = 64;
// pgbench 15 prepares synchronously: with several clients per thread it deadlocks any transaction
// pooler once a thread's clients outnumber the pool (see /work/shared/ANCHORS.md). One thread per
// client.
const THREADS = CLIENTS;
const WARMUP_THREADS = 2;
const POOL_SIZE = 8;
const MAX_CONNECTIONS = 300;

/**
 * The rows, in run order. `quickTargets` limits a row's targets under `--quick` (the extended row
 * only exists for the plan-cache comparison, which needs Sluice alone).
 */
const ROWS = [
  {
    id: 'select-prepared-64',
    label: 'select-only `-S -M prepared`, 64 clients',
    builtin: 'select-only',
    mode: 'prepared',
    clients: CLIENTS,
  },
  {
    id: 'select-extended-64',
    label: 'select-only `-S -M extended`, 64 clients',
    builtin: 'select-only',
    mode: 'extended',
    clients: CLIENTS,
    quickTargets: ['sluice'],
  },
  {
    id: 'tpcb-prepared-64',
    label: 'TPC-B (default script) `-M prepared`, 64 clients',
    builtin: 'tpcb-like',
    mode: 'prepared',
    clients: CLIENTS,
    balances: true,
  },
];

const log = (msg) => console.error(`[prepared] ${msg}`);

/**
 * @param {{ duration: number, quick: boolean, profile: boolean, targets: Set<string> }} opts
 */
export async function run(opts) {
  const startedAt = new Date();
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
      `PostgreSQL ${machine.postgres} started by ${pg.startedBy}; max_connections ${MAX_CONNECTIONS} ` +
        `(${CLIENTS} direct clients plus both pools of ${POOL_SIZE}).`,
    );
    log(`PostgreSQL ${machine.postgres} on ${pg.host}:${pg.port}; pgbench -i -s ${SCALE}…`);
    await initPgbench(direct, { scale: SCALE });

    Object.assign(targets, await startProxies(direct, { opts, machine, poolSize: POOL_SIZE, log }));

    // Warm-up in the simple protocol, which every target can do: a proxy dropped here could not
    // even pass queries, which is a different finding from failing at prepared statements.
    const active = await warmUp(targets, { quick: opts.quick, threads: WARMUP_THREADS, log });

    const plan = ROWS.map((row) => ({
      row,
      names: active.filter((t) => !opts.quick || !row.quickTargets || row.quickTargets.includes(t)),
    }));
    const total = plan.reduce((n, p) => n + p.names.length, 0);
    let done = 0;
    const results = [];
    for (const { row, names } of plan) {
      const cells = {};
      for (const name of names) {
        const r = await runCell(
          targets,
          name,
          direct,
          row,
          { duration: opts.duration, threads: THREADS, details: true },
          { before: row.balances ? balanceSums : undefined },
        );
        done++;
        if (r.exitCode !== undefined && row.balances)
          r.balances = checkBalances(r.pre, await balanceSums(direct));
        delete r.pre;
        cells[name] = r;
        log(`${done}/${total} ${row.id} ${TARGET_LABELS[name].padEnd(9)} ${cellLog(r)}`);
      }
      results.push(summariseRow(row, cells));
    }

    profiles = await finishTargets(targets, opts, machine);

    const finishedAt = new Date();
    const report = {
      scenario: 'prepared',
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      options: {
        duration: opts.duration,
        quick: opts.quick,
        profile: opts.profile,
        scale: SCALE,
        clients: CLIENTS,
        threads: THREADS,
        poolSize: POOL_SIZE,
        poolMode: 'transaction',
        maxConnections: MAX_CONNECTIONS,
        order: active,
      },
      machine,
      targets: targetsForReport(targets),
      rows: results,
      planCache: planCacheSummary(results, active),
      balances: balanceSummary(results),
      profiles,
      notes: [NOISE_NOTE, ...notes],
    };
    const markdown = renderMarkdown(report, active);
    const { jsonPath, mdPath } = await writeReport(`prepared-${stamp(startedAt)}`, report, markdown);
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

/** sum(abalance), sum(tbalance), sum(bbalance), sum(delta) and count(*) of history, read directly. */
async function balanceSums(direct) {
  const r = await psql(
    direct,
    'select (select coalesce(sum(abalance), 0) from pgbench_accounts), ' +
      '(select coalesce(sum(tbalance), 0) from pgbench_tellers), ' +
      '(select coalesce(sum(bbalance), 0) from pgbench_branches), ' +
      '(select coalesce(sum(delta), 0) from pgbench_history), ' +
      '(select count(*) from pgbench_history)',
    { timeoutMs: 120_000 },
  );
  if (r.code !== 0) throw new Error(`balance check failed: ${r.stderr.trim()}`);
  const [accounts, tellers, branches, history, historyRows] = r.stdout.trim().split('|').map(Number);
  return { accounts, tellers, branches, history, historyRows };
}

/**
 * Balances are consistent when accounts, tellers and branches all moved by the same amount during
 * the run, and that amount is what the run wrote to pgbench_history (emptied just before the run).
 * They must also still agree in absolute terms.
 */
function checkBalances(before, after) {
  const delta = {
    accounts: after.accounts - before.accounts,
    tellers: after.tellers - before.tellers,
    branches: after.branches - before.branches,
  };
  const consistent =
    delta.accounts === delta.tellers &&
    delta.tellers === delta.branches &&
    delta.branches === after.history &&
    after.accounts === after.tellers &&
    after.tellers === after.branches;
  return { before, after, delta, historyDelta: after.history, historyRows: after.historyRows, consistent };
}

function cellLog(r) {
  const parts = [];
  if (r.error) parts.push(`ERROR ${r.error}`);
  else parts.push(`${fmt.tps(r.tps)} tps, ${fmt.ms(r.latencyMs)} ms, failed ${r.failed ?? '?'}`);
  if (r.abortedClients) parts.push(`${r.abortedClients} clients aborted`);
  if (r.balances) parts.push(`balances ${r.balances.consistent ? 'consistent' : 'INCONSISTENT'}`);
  return parts.join('; ');
}

function summariseRow(row, cells) {
  const tps = (name) => (cells[name] && !cells[name].error ? (cells[name].tps ?? null) : null);
  const lat = (name) => (cells[name] && !cells[name].error ? (cells[name].latencyMs ?? null) : null);
  const added = (name) =>
    lat(name) != null && lat('direct') != null ? (lat(name) - lat('direct')) * 1000 : null;
  return {
    id: row.id,
    label: row.label,
    workload: { builtin: row.builtin, mode: row.mode, clients: row.clients, threads: THREADS },
    results: cells,
    ratios: {
      sluiceToDirect: ratio(tps('sluice'), tps('direct')),
      pgbouncerToDirect: ratio(tps('pgbouncer'), tps('direct')),
      sluiceToPgbouncer: ratio(tps('sluice'), tps('pgbouncer')),
    },
    addedLatencyUs: { sluice: added('sluice'), pgbouncer: added('pgbouncer') },
  };
}

/** Per target: `-S -M prepared` tps, `-S -M extended` tps and prepared ÷ extended. */
function planCacheSummary(results, active) {
  const prepared = results.find((r) => r.id === 'select-prepared-64');
  const extended = results.find((r) => r.id === 'select-extended-64');
  const tps = (row, name) => {
    const c = row?.results[name];
    return c && !c.error ? (c.tps ?? null) : null;
  };
  const out = {};
  for (const name of active) {
    if (!prepared?.results[name] && !extended?.results[name]) continue;
    const p = tps(prepared, name);
    const e = tps(extended, name);
    out[name] = {
      preparedTps: p,
      extendedTps: e,
      preparedToExtended: ratio(p, e),
      preparedError: prepared?.results[name]?.error ? shortError(prepared.results[name]) : undefined,
      extendedError: extended?.results[name]?.error ? shortError(extended.results[name]) : undefined,
      extendedRun: Boolean(extended?.results[name]),
    };
  }
  return out;
}

function balanceSummary(results) {
  const out = {};
  for (const row of results) {
    for (const [name, c] of Object.entries(row.results)) {
      if (c.balances) out[name] = { row: row.id, ...c.balances };
    }
  }
  return out;
}

/**
 * The most telling single error of a failed cell: the server's message that aborted the most
 * clients, else any server message pgbench printed, else pgbench's own line.
 */
function shortError(cell) {
  const errors = cell.errors ?? [];
  const byServer = (pick) => {
    const counts = new Map();
    for (const e of errors.filter(pick)) counts.set(e.server, (counts.get(e.server) ?? 0) + e.count);
    return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
  };
  return byServer((e) => e.server && e.aborted) ?? byServer((e) => e.server) ?? errors[0]?.line ?? cell.error;
}

const code = (s) => `\`${String(s).replaceAll('`', "'").replaceAll('|', '\\|')}\``;

function renderMarkdown(report, active) {
  const has = (name) => active.includes(name);
  const ran = (row, name) => row.results[name] !== undefined;
  const labels = active.map((t) => TARGET_LABELS[t]);
  const o = report.options;
  const failCell = (cell) => {
    if (!cell?.error) return undefined;
    const aborted = cell.abortedClients ? ` (${cell.abortedClients}/${o.clients} clients aborted)` : '';
    return `fails${aborted}: ${code(shortError(cell))}`;
  };
  const out = [];
  out.push('# Prepared statements in transaction mode: direct PostgreSQL vs Sluice vs PgBouncer', '');
  out.push(
    `${report.startedAt} · pgbench scale ${o.scale}, ${o.clients} clients, \`-j ${o.threads} -T ${o.duration}\` ` +
      `(one pgbench thread per client), one run per cell, targets run back to back within each row ` +
      `(${labels.join(' → ')}). Proxies in transaction mode, pool ${o.poolSize}.` +
      `${o.quick ? ' Quick run: the `-M extended` row through Sluice only.' : ''}`,
    '',
  );
  out.push(`> ${NOISE_NOTE}`, '');

  const header = ['workload', 'direct tps'];
  if (has('sluice')) header.push('Sluice tps (ratio)');
  if (has('pgbouncer')) header.push('PgBouncer tps (ratio)');
  if (has('sluice') && has('pgbouncer')) header.push('Sluice/PgBouncer');
  const tpsCell = (r, name, ratioValue) => {
    if (!ran(r, name)) return 'not run';
    const c = r.results[name];
    if (name === 'direct') return failCell(c) ?? fmt.tps(c.tps);
    return failCell(c) ?? `${fmt.tps(c.tps)} (${fmt.ratio(ratioValue)})`;
  };
  const tpsRows = report.rows.map((r) => {
    const cells = [r.label, tpsCell(r, 'direct')];
    if (has('sluice')) cells.push(tpsCell(r, 'sluice', r.ratios.sluiceToDirect));
    if (has('pgbouncer')) cells.push(tpsCell(r, 'pgbouncer', r.ratios.pgbouncerToDirect));
    if (has('sluice') && has('pgbouncer')) cells.push(fmt.ratio(r.ratios.sluiceToPgbouncer));
    return cells;
  });
  out.push(table(header, tpsRows), '');

  out.push('## Plan cache: `-S -M prepared` vs `-S -M extended`', '');
  out.push(
    '`-M extended` sends Parse/Bind/Execute with an unnamed statement every transaction, so the server ' +
      'plans each query again; `-M prepared` parses once per client and then only binds. Through a ' +
      "transaction pooler the named statement must follow the client to whichever server it gets — Sluice's " +
      'per-server statement cache. Same 64 clients, same run.',
    '',
  );
  const pc = report.planCache;
  const pcRows = Object.entries(pc).map(([name, p]) => [
    TARGET_LABELS[name],
    p.preparedError ? `fails: ${code(p.preparedError)}` : fmt.tps(p.preparedTps),
    !p.extendedRun ? 'not run' : p.extendedError ? `fails: ${code(p.extendedError)}` : fmt.tps(p.extendedTps),
    fmt.ratio(p.preparedToExtended),
  ]);
  out.push(table(['target', '`-M prepared` tps', '`-M extended` tps', 'prepared ÷ extended'], pcRows), '');
  if (pc.sluice) {
    const s = pc.sluice.preparedToExtended;
    const d = pc.direct?.preparedToExtended;
    out.push(
      `Sluice \`-M prepared\` ÷ \`-M extended\`: ${fmt.ratio(s)}` +
        (d != null ? ` (direct PostgreSQL: ${fmt.ratio(d)})` : '') +
        '. Above 1.00, prepared statements pay off through Sluice as they do without it.',
      '',
    );
  }

  out.push('## Latency, failures, errors', '');
  out.push(
    'Average latency per transaction as pgbench reports it (difference from direct in brackets); ' +
      `failed transactions as pgbench counts them and clients pgbench reports aborted (${labels.join(' / ')}; ` +
      '"—" where that target did not run the row). The error lines themselves are under Notes.',
    '',
  );
  const latHeader = ['workload', 'direct ms'];
  if (has('sluice')) latHeader.push('Sluice ms (added)');
  if (has('pgbouncer')) latHeader.push('PgBouncer ms (added)');
  latHeader.push('failed transactions', 'aborted clients');
  const latCell = (r, name) => {
    if (!ran(r, name)) return 'not run';
    const c = r.results[name];
    if (c.error) return 'fails';
    if (name === 'direct') return fmt.ms(c.latencyMs);
    return `${fmt.ms(c.latencyMs)} (${fmt.us(r.addedLatencyUs[name])})`;
  };
  const latRows = report.rows.map((r) => {
    const cells = [r.label, latCell(r, 'direct')];
    if (has('sluice')) cells.push(latCell(r, 'sluice'));
    if (has('pgbouncer')) cells.push(latCell(r, 'pgbouncer'));
    cells.push(
      active.map((t) => (ran(r, t) ? (r.results[t].failed ?? '?') : '—')).join(' / '),
      active.map((t) => (ran(r, t) ? (r.results[t].abortedClients ?? '?') : '—')).join(' / '),
    );
    return cells;
  });
  out.push(table(latHeader, latRows), '');

  out.push('## Balances after TPC-B', '');
  out.push(
    'Read directly from PostgreSQL after each TPC-B run. pgbench_history is emptied before every run, so ' +
      'consistent means: sum(abalance) over pgbench_accounts, sum(tbalance) over tellers and sum(bbalance) ' +
      'over branches each moved by exactly sum(delta) over the history the run wrote, and the three sums ' +
      'still agree. "history rows" should match the transactions pgbench processed.',
    '',
  );
  const bal = Object.entries(report.balances);
  if (bal.length === 0) out.push('No TPC-B run completed.', '');
  else {
    const balRows = bal.map(([name, b]) => {
      const processed = report.rows.find((r) => r.id === b.row)?.results[name]?.processed;
      return [
        TARGET_LABELS[name],
        String(b.delta.accounts),
        String(b.delta.tellers),
        String(b.delta.branches),
        String(b.historyDelta),
        String(b.historyRows),
        processed == null ? '—' : String(processed),
        b.consistent ? 'yes' : '**NO**',
      ];
    });
    out.push(
      table(
        [
          'target',
          'Δ sum(abalance)',
          'Δ sum(tbalance)',
          'Δ sum(bbalance)',
          'sum(delta) history',
          'history rows',
          'transactions processed',
          'consistent',
        ],
        balRows,
      ),
      '',
    );
  }

  out.push(...machineLines(report.machine));

  out.push('## Notes', '');
  for (const n of report.notes.slice(1)) out.push(`- ${n}`);
  out.push(...targetNotes(report.targets));
  out.push(`- ${MAINTAIN_NOTE}`);
  out.push(
    `- All measured runs are \`-c ${o.clients} -j ${o.threads}\`: pgbench 15 prepares synchronously, and with ` +
      'several clients per thread it deadlocks any transaction pooler (see /work/shared/ANCHORS.md). ' +
      `The unrecorded warm-up is \`-S -M simple -c 4 -j ${WARMUP_THREADS}\`.`,
  );
  if (report.targets.pgbouncer?.available && /PgBouncer 1\.(1\d|20)\b/.test(report.machine.pgbouncer ?? ''))
    out.push(
      `- ${report.machine.pgbouncer} has no prepared-statement support in transaction mode (added in 1.21): ` +
        'its `-M prepared` rows are expected to fail, and that failure is the result.',
    );
  if (has('pgbouncer'))
    out.push(
      "- PgBouncer's server connections keep whatever statements earlier clients prepared on them, across " +
        'clients and across rows (as they would in production): every pgbench client names its first ' +
        'statement `P_0`, so a later row can bind to a `P_0` a previous row left behind — hence errors ' +
        'such as "bind message supplies 0 parameters, but prepared statement "P_0" requires 1" in TPC-B. ' +
        'pgbench 15 only logs a failed Prepare ("already exists") and carries on; a client aborts when ' +
        'its Bind or Execute fails.',
    );
  out.push(
    "- Sluice's own plan-cache hit/miss counters are not exposed outside the process yet, so only the tps " +
      'effect is reported.',
  );
  for (const r of report.rows) {
    for (const [name, c] of Object.entries(r.results)) {
      if (!c.error && !(c.errors?.length > 0)) continue;
      const head = `${r.id}, ${TARGET_LABELS[name]}`;
      if (c.error) out.push(`- ${head}: ${c.error.split('\n')[0]}`);
      const lines = (c.errors ?? []).slice(0, 4);
      for (const e of lines) out.push(`  - ${e.count}× ${code(e.line)}`);
      if ((c.errors?.length ?? 0) > lines.length)
        out.push(`  - … ${c.errors.length - lines.length} more distinct lines in the JSON`);
      if (c.error && c.tps != null)
        out.push(
          `  - pgbench still printed ${fmt.tps(c.tps)} tps: what its clients completed before they aborted` +
            (c.abortedClients && c.abortedClients < o.clients
              ? `, and what the ${o.clients - c.abortedClients} that never aborted did.`
              : '.'),
        );
    }
  }
  for (const p of report.profiles) out.push(`- CPU profile of Sluice: \`${p}\``);
  return out.join('\n');
}
