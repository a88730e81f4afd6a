// The result-cache scenario: hot point reads (100 keys) and a trading-bot mix with 5 % writes, run
// straight into PostgreSQL, through Sluice with the cache off and on, and through PgBouncer (all
// proxies in transaction mode, pool 20), back to back within each row. Reports tps and ratios, the
// 1-client latency percentiles, and the cache hit rate measured from PostgreSQL's own statistics.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cellLine, pgbenchCell } from './lib/cells.mjs';
import { onCleanup, runCleanup, wasSignalled } from './lib/cleanup.mjs';
import { clockTicks, mainThreadSched, processTimes, treeTicks } from './lib/cpu.mjs';
import { pgbenchVersion, quantile, readTransactionLog, runPgbench } from './lib/pgbench.mjs';
import { PGBOUNCER_BIN, pgbouncerVersion, startPgbouncer } from './lib/pgbouncer.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { psql, sleep } from './lib/processes.mjs';
import { summariseProfile } from './lib/profile.mjs';
import { fmt, machineFacts, NOISE_NOTE, ratio, stamp, table, writeReport } from './lib/report.mjs';
import { sluiceUnavailable, startSluice } from './lib/sluice.mjs';
import { machineLines, startTarget } from './lib/targets.mjs';

export const description =
  'result cache: hot point reads and a bot mix with 5 % writes; direct vs Sluice cache off/on vs PgBouncer';
/** Target names only this scenario knows (see run.mjs `--targets`). */
export const extraTargets = ['sluice-cache'];

const ORDER = ['direct', 'sluice', 'sluice-cache', 'pgbouncer'];
const LABELS = {
  direct: 'direct',
  sluice: 'Sluice cache off',
  'sluice-cache': 'Sluice cache on',
  pgbouncer: 'PgBouncer',
};
/**
 * Each target reads and writes its own copy of the tables, so PostgreSQL's per-database and
 * per-table statistics count exactly what reached the server from that target (see hit rate).
 */
const DATABASES = {
  direct: 'cache_direct',
  sluice: 'cache_sluice',
  'sluice-cache': 'cache_sluice_cache',
  pgbouncer: 'cache_pgbouncer',
};

const CLIENTS = 16;
const THREADS = 2;
const POOL_SIZE = 20;
const MAX_CONNECTIONS = 300;
const SYMBOLS = 100;
const BOTS = 10;
const POSITIONS_PER_BOT = 20;
/** Issue targets: cache-on hot-read tps ÷ direct (goal and done-when), bot-mix hit rate. */
const HOT_GOAL = 3;
const HOT_DONE = 2;
const HIT_GOAL = 0.85;
/**
 * A backend under load reports its statistics at most once a second; once idle, the rest comes
 * PGSTAT_IDLE_INTERVAL (10 s) later. Pooled server connections stay idle after a run, so their
 * counts are read only this long after it. Direct clients' backends exit and report at once.
 */
const SETTLE_MS = { pooled: 11_500, direct: 1_500 };

/**
 * Instruments are keyed by an integer id (1..100), as a bot's driver would send a key: a literal
 * in `-M simple`, a parameter otherwise. (pgbench variables are numbers; building text keys with
 * `'S' || :k` would make every key an expression, which no driver sends for a key lookup.)
 */
const SCRIPTS = {
  'hot-read': `\\set k random(1, ${SYMBOLS})\nSELECT price FROM prices WHERE instrument_id = :k;\n`,
  'read-price': `\\set k random(1, ${SYMBOLS})\nSELECT price, ts FROM prices WHERE instrument_id = :k;\n`,
  'read-positions': `\\set b random(1, ${BOTS})\nSELECT symbol, qty FROM positions WHERE bot = :b ORDER BY symbol;\n`,
  'update-price':
    `\\set k random(1, ${SYMBOLS})\n\\set p random(9000, 11000)\n` +
    `UPDATE prices SET price = :p * 0.01, ts = now() WHERE instrument_id = :k;\n`,
  'insert-order':
    `\\set b random(1, ${BOTS})\n\\set k random(1, ${SYMBOLS})\n\\set q random(1, 100)\n` +
    `INSERT INTO orders (bot, symbol, qty, price) VALUES (:b, 'S' || :k::text, :q, 100);\n`,
};

/** The bot mix: one statement per pgbench transaction, picked by weight (pgbench `-f file@weight`). */
const BOT_MIX = [
  { script: 'read-price', weight: 48, write: false },
  { script: 'read-positions', weight: 47, write: false },
  { script: 'update-price', weight: 2, write: true },
  { script: 'insert-order', weight: 3, write: true },
];

const HOT = [{ script: 'hot-read' }];

/** Rows in run order; `quick` marks the `--quick` subset; `only` limits a row's targets. */
const ROWS = [
  {
    id: 'hot-simple-16',
    label: 'hot read `-M simple`, 16 clients',
    mix: HOT,
    mode: 'simple',
    clients: CLIENTS,
    threads: THREADS,
    hot: true,
    quick: true,
  },
  {
    id: 'hot-extended-16',
    label: 'hot read `-M extended`, 16 clients',
    mix: HOT,
    mode: 'extended',
    clients: CLIENTS,
    threads: THREADS,
    hot: true,
  },
  {
    id: 'hot-prepared-16',
    label: 'hot read `-M prepared`, 16 clients (`-j 16`)',
    mix: HOT,
    mode: 'prepared',
    clients: CLIENTS,
    // pgbench 15 prepares synchronously: -j below -c deadlocks a transaction pooler (ANCHORS.md).
    threads: CLIENTS,
    hot: true,
    only: ['direct', 'sluice', 'sluice-cache'],
    notRun: {
      pgbouncer:
        'not run: PgBouncer in transaction mode has no prepared statements here (1.18 has none; later versions need max_prepared_statements)',
    },
  },
  {
    id: 'latency-simple-1',
    label: 'hot read `-M simple`, 1 client (latency)',
    mix: HOT,
    mode: 'simple',
    clients: 1,
    threads: 1,
    latency: true,
  },
  {
    id: 'latency-extended-1',
    label: 'hot read `-M extended`, 1 client (latency)',
    mix: HOT,
    mode: 'extended',
    clients: 1,
    threads: 1,
    latency: true,
    quick: true,
  },
  {
    id: 'bot-simple-16',
    label: 'bot mix `-M simple`, 16 clients',
    mix: BOT_MIX,
    mode: 'simple',
    clients: CLIENTS,
    threads: THREADS,
    bot: true,
  },
  {
    id: 'bot-extended-16',
    label: 'bot mix `-M extended`, 16 clients',
    mix: BOT_MIX,
    mode: 'extended',
    clients: CLIENTS,
    threads: THREADS,
    bot: true,
    quick: true,
  },
];

const log = (msg) => console.error(`[cache] ${msg}`);

// ---------------------------------------------------------------------------------------------
// In the suite (`npm run bench`): the hot point reads against all four suite targets, latency from
// pgbench's per-transaction log. The bot mix's hit rate is measured by botmix.mjs.

export const title = 'Cached hot reads (pgbench)';

const SUITE_TABLE = [
  'create table hot_prices (instrument_id int primary key, symbol text not null, price numeric not null, ts timestamptz not null)',
  `insert into hot_prices select i, 'S' || i, 100 + i, '2026-01-01T00:00:00Z' from generate_series(1, ${SYMBOLS}) i`,
  'vacuum analyze hot_prices',
];
const SUITE_HOT = `\\set k random(1, ${SYMBOLS})\nSELECT price FROM hot_prices WHERE instrument_id = :k;\n`;
const SUITE_ROWS = ROWS.filter((r) => r.hot || r.latency).map((r) => ({
  ...r,
  short: r.label.replace(/`/g, '').replace(' (`-j 16`)', ''),
}));
const suiteRows = (opts) => (opts.quick ? SUITE_ROWS.filter((r) => r.quick) : SUITE_ROWS);

export function suitePlan(opts) {
  return [
    { label: 'hot_prices table', seconds: 1 },
    ...suiteRows(opts).map((r) => ({
      label: r.short,
      seconds: opts.duration + 1,
      perTarget: true,
      only: r.only,
    })),
  ];
}

export async function suite(ctx) {
  const { opts } = ctx;
  ctx.step('hot_prices table');
  const t = await psql(ctx.direct, SUITE_TABLE);
  if (t.code !== 0) throw new Error(`creating hot_prices failed: ${t.stderr.trim()}`);
  const script = path.join(ctx.tmpDir, 'hot-read.sql');
  await writeFile(script, SUITE_HOT);
  const rows = [];
  for (const row of suiteRows(opts)) {
    const cells = {};
    const notRun = {};
    for (const name of ctx.active) {
      if (row.only && !row.only.includes(name)) {
        notRun[name] = row.notRun?.[name] ?? 'not run';
        continue;
      }
      ctx.step(row.short, name);
      cells[name] = await pgbenchCell(
        ctx,
        name,
        ctx.connFor(name),
        { scripts: [{ file: script }], mode: row.mode, clients: row.clients },
        { duration: opts.duration, threads: row.threads, before: () => psql(ctx.direct, 'checkpoint') },
      );
      ctx.progress.note(cellLine(cells[name], 'tps'));
    }
    rows.push({ id: row.id, label: row.label, short: row.short, unit: 'tps', cells, notRun });
  }
  return {
    title,
    description:
      `pgbench custom script \`SELECT price FROM hot_prices WHERE instrument_id = :k\`, k random in 1..${SYMBOLS} ` +
      '(the hot point reads of the result cache), 16 clients and 1 client. With the cache on, nearly every read ' +
      'after the first second is a hit. The hit rate on a realistic mix is in the bot-mix section; ' +
      '`npm run bench -- cache` is the full result-cache study (CPU per statement, hit rate per table).',
    rows,
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

  /** name -> { available, conn?, proxy?, reason? } */
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

    const scriptDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-bench-cache-'));
    onCleanup('cache scripts', () => rm(scriptDir, { recursive: true, force: true }));
    const scriptFiles = {};
    for (const [name, text] of Object.entries(SCRIPTS)) {
      scriptFiles[name] = path.join(scriptDir, `${name}.sql`);
      await writeFile(scriptFiles[name], text);
    }

    log(`PostgreSQL ${machine.postgres} on ${pg.host}:${pg.port}; creating one database per target…`);
    for (const name of ORDER) await createDatabase(direct, DATABASES[name]);

    const sluiceCheck = async () => {
      const unavailable = await sluiceUnavailable();
      if (unavailable) throw new Error(unavailable);
    };
    targets.sluice = await startTarget(
      'sluice',
      opts,
      async () => {
        await sluiceCheck();
        return startSluice(direct, { poolSize: POOL_SIZE, profile: opts.profile });
      },
      log,
    );
    targets['sluice-cache'] = await startTarget(
      'sluice-cache',
      opts,
      async () => {
        await sluiceCheck();
        return startSluice(direct, { poolSize: POOL_SIZE, profile: opts.profile, extraArgs: ['--cache'] });
      },
      log,
    );
    targets.pgbouncer = await startTarget(
      'pgbouncer',
      opts,
      async () => {
        if (!machine.pgbouncer) throw new Error(`PgBouncer is not installed (no ${PGBOUNCER_BIN})`);
        return startPgbouncer(direct, { poolSize: POOL_SIZE, maxClientConn: 1000 });
      },
      log,
    );

    const state = {
      direct,
      postgresPid: pg.pid,
      ticksPerSecond: await clockTicks(),
      targets,
      scriptFiles,
      lastEnd: {},
      pending: [],
      duration: opts.duration,
    };
    const active = await warmUp(state, opts);

    const plan = rows.map((row) => ({ row, names: active.filter((t) => !row.only || row.only.includes(t)) }));
    const total = plan.reduce((n, p) => n + p.names.length, 0);
    let done = 0;
    const cellsByRow = [];
    for (const { row, names } of plan) {
      const cells = {};
      for (const name of names) {
        cells[name] = await runCell(state, name, row);
        done++;
        log(`${done}/${total} ${row.id} ${LABELS[name].padEnd(16)} ${cellLog(cells[name])}`);
      }
      cellsByRow.push({ row, cells });
    }
    log('reading the last statistics (PostgreSQL reports idle pooled connections 10 s late)…');
    await settlePending(state, { all: true });

    profiles = await finish(targets, opts, machine);

    const results = cellsByRow.map(({ row, cells }) => summariseRow(row, cells, active));
    const finishedAt = new Date();
    const report = {
      scenario: 'cache',
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      options: {
        duration: opts.duration,
        quick: opts.quick,
        profile: opts.profile,
        clients: CLIENTS,
        threads: THREADS,
        poolSize: POOL_SIZE,
        poolMode: 'transaction',
        maxConnections: MAX_CONNECTIONS,
        symbols: SYMBOLS,
        bots: BOTS,
        positionsPerBot: POSITIONS_PER_BOT,
        botMix: BOT_MIX,
        scripts: SCRIPTS,
        databases: DATABASES,
        order: active,
      },
      goals: { hotReadToDirect: HOT_GOAL, hotReadDoneWhen: HOT_DONE, botMixHitRate: HIT_GOAL },
      machine,
      targets: Object.fromEntries(
        Object.entries(targets).map(([name, t]) => [
          name,
          { label: LABELS[name], available: t.available, reason: t.reason, command: t.proxy?.command },
        ]),
      ),
      rows: results,
      summary: summarise(results),
      profiles,
      notes: [NOISE_NOTE, ...notes],
    };
    const markdown = renderMarkdown(report, active);
    const { jsonPath, mdPath } = await writeReport(`cache-${stamp(startedAt)}`, report, markdown);
    process.stdout.write(`${markdown}\n`);
    log(`wrote ${mdPath}`);
    log(`wrote ${jsonPath}`);
    for (const p of profiles)
      log(`CPU profile of ${p.label}: ${p.file} (open in Chrome DevTools → Performance)`);
    if (opts.profile && profiles.length === 0)
      log('no CPU profile was written: Sluice must exit normally on SIGTERM for --cpu-prof to flush');
    return report;
  } finally {
    log('stopping everything this run started…');
    await runCleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// Tables, reset, statistics

async function createDatabase(direct, db) {
  const c = await psql(direct, `create database ${db}`);
  if (c.code !== 0) throw new Error(`create database ${db} failed: ${c.stderr.trim()}`);
  const r = await psql({ ...direct, database: db }, [
    'create table prices (instrument_id int primary key, symbol text not null unique, price numeric not null, ' +
      'ts timestamptz not null)',
    'create table positions (bot int, symbol text, qty int not null, primary key (bot, symbol))',
    'create table orders (id bigint generated always as identity primary key, bot int not null, ' +
      'symbol text not null, qty int not null, price numeric not null, ts timestamptz not null default now())',
    `insert into prices select i, 'S' || i, 100 + i, '2026-01-01T00:00:00Z' from generate_series(1, ${SYMBOLS}) i`,
    `insert into positions select b, 'S' || ((b * 7 + j) % ${SYMBOLS} + 1), 10 * j ` +
      `from generate_series(1, ${BOTS}) b, generate_series(1, ${POSITIONS_PER_BOT}) j`,
    'vacuum analyze prices',
    'vacuum analyze positions',
    'vacuum analyze orders',
  ]);
  if (r.code !== 0) throw new Error(`creating the tables in ${db} failed: ${r.stderr.trim()}`);
}

/**
 * Before every run, directly against PostgreSQL: bot-mix rows put prices back and empty orders (so
 * every target starts from the same state); every row then checkpoints, so none lands mid-run.
 */
async function prepareDatabase(conn, row) {
  const sql = [];
  if (row.bot) {
    sql.push(
      "update prices set price = 100 + instrument_id, ts = '2026-01-01T00:00:00Z'",
      'truncate orders restart identity',
      'vacuum prices',
      'vacuum orders',
    );
  }
  sql.push('checkpoint');
  const r = await psql(conn, sql, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`pre-run reset failed: ${r.stderr.trim()}`);
}

/** PostgreSQL's cumulative counters for one target's database. */
async function readCounters(conn) {
  const scans = (t) =>
    `(select coalesce(seq_scan, 0) + coalesce(idx_scan, 0) from pg_stat_user_tables where relname = '${t}')`;
  const r = await psql(
    conn,
    'select (select xact_commit + xact_rollback from pg_stat_database where datname = current_database()), ' +
      `${scans('prices')}, ${scans('positions')}, ` +
      "(select n_tup_upd from pg_stat_user_tables where relname = 'prices'), " +
      "(select n_tup_ins from pg_stat_user_tables where relname = 'orders')",
  );
  if (r.code !== 0) throw new Error(`reading pg_stat_database failed: ${r.stderr.trim()}`);
  const [xacts, pricesScans, positionsScans, pricesUpdated, ordersInserted] = r.stdout
    .trim()
    .split('|')
    .map(Number);
  return { xacts, pricesScans, positionsScans, pricesUpdated, ordersInserted };
}

/** CPU ticks so far of PostgreSQL's process tree and of the proxy's process. */
async function serverTicks(state, target) {
  const [postgres, proxy] = await Promise.all([
    treeTicks(state.postgresPid),
    target.proxy ? processTimes(target.proxy.pid) : undefined,
  ]);
  return { postgres, proxy };
}

/**
 * CPU µs per statement (pgbench transaction) of pgbench, PostgreSQL (every process of the
 * server, background ones included) and the proxy, over the run; and the share of the machine
 * (all cores × the run's length) the three used together.
 */
function cpuPerStatement(state, r, before, after) {
  const n = r.processed;
  if (!(n > 0)) return null;
  const us = (ticks) => (ticks == null ? null : (ticks / state.ticksPerSecond) * 1e6);
  const per = (ticks) => (ticks == null ? null : us(ticks) / n);
  const pgbench = r.cpuTicks;
  const postgres =
    after.postgres != null && before.postgres != null ? after.postgres - before.postgres : null;
  const hasProxy = after.proxy != null && before.proxy != null;
  const proxyUser = hasProxy ? after.proxy.user - before.proxy.user : null;
  const proxySystem = hasProxy ? after.proxy.system - before.proxy.system : null;
  const proxy = hasProxy ? proxyUser + proxySystem : null;
  const total = (pgbench ?? 0) + (postgres ?? 0) + (proxy ?? 0);
  return {
    pgbenchUs: per(pgbench),
    postgresUs: per(postgres),
    proxyUs: per(proxy),
    proxyUserUs: per(proxyUser),
    proxySystemUs: per(proxySystem),
    totalUs: per(total),
    machineShare: us(total) / (os.availableParallelism() * state.duration * 1e6),
    ticks: { pgbench, postgres, proxy, perSecond: state.ticksPerSecond },
  };
}

const settleMs = (name) => (name === 'direct' ? SETTLE_MS.direct : SETTLE_MS.pooled);

/**
 * Reads the "after" counters of runs whose statistics have settled (`all`: waits for every one),
 * or of one target's run (`name`: waits for it). Bounded: each wait is at most SETTLE_MS.
 */
async function settlePending(state, { all = false, name } = {}) {
  const keep = [];
  for (const p of state.pending) {
    const mine = all || p.name === name;
    if (!mine && Date.now() < p.dueAt) {
      keep.push(p);
      continue;
    }
    const wait = p.dueAt - Date.now();
    if (wait > 0) await sleep(wait);
    const after = await readCounters(p.conn);
    Object.assign(p.cell, countStatements(p.row, p.cell, p.before, after));
  }
  state.pending = keep;
}

// ---------------------------------------------------------------------------------------------
// Runs

function workloadFor(state, row, extraArgs) {
  return {
    scripts: row.mix.map((m) => ({ file: state.scriptFiles[m.script], weight: m.weight })),
    mode: row.mode,
    clients: row.clients,
    extraArgs,
  };
}

/**
 * A short unrecorded hot-read run per target, `-M simple`, 4 clients: fills pools (and, with the
 * cache on, the simple-protocol hot-read entries) and proves each path works. A proxy that fails
 * it is stopped and left out. Resolves the targets still in.
 */
async function warmUp(state, opts) {
  const order = ORDER.filter((t) => state.targets[t]?.available);
  for (const name of order) {
    const t = state.targets[name];
    const w = await runPgbench(
      { ...t.conn, database: DATABASES[name] },
      workloadFor(state, { mix: HOT, mode: 'simple', clients: 4 }),
      { duration: opts.quick ? 1 : 2, threads: 2 },
    );
    state.lastEnd[name] = Date.now();
    if (!w.error) continue;
    if (name === 'direct') throw new Error(`warm-up against PostgreSQL failed: ${w.error}`);
    t.available = false;
    t.reason = `warm-up failed: ${w.error}`;
    log(`${LABELS[name]} dropped: ${t.reason}`);
    await t.proxy.stop();
  }
  return order.filter((t) => state.targets[t].available);
}

/**
 * One measured cell: settles the target's previous statistics, resets its database, reads the
 * counters, runs pgbench through the target, and queues the "after" read for when PostgreSQL has
 * reported everything (runs of other targets go on meanwhile: each has its own database).
 */
async function runCell(state, name, row) {
  if (wasSignalled()) throw new Error('interrupted');
  const t = state.targets[name];
  if (t.proxy?.child.exitInfo) {
    const { code, signal } = t.proxy.child.exitInfo;
    return { error: `${LABELS[name]} had exited (code ${code}, signal ${signal})` };
  }
  await settlePending(state, { name });
  const since = Date.now() - (state.lastEnd[name] ?? 0);
  if (since < settleMs(name)) await sleep(settleMs(name) - since);
  const conn = { ...state.direct, database: DATABASES[name] };
  await prepareDatabase(conn, row);
  // The reset's backend reports its statistics as it exits, and is reaped: PostgreSQL's CPU time
  // is read while no backend is on its way out (one that is might be counted in neither place).
  await sleep(300);
  const cpu0 = await serverTicks(state, t);
  const before = await readCounters(conn);

  let logDir;
  let extraArgs;
  if (row.latency) {
    logDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-bench-cache-log-'));
    onCleanup('pgbench log dir', () => rm(logDir, { recursive: true, force: true }));
    extraArgs = ['-l', '--log-prefix', path.join(logDir, 'tx')];
  }
  const sched0 = t.proxy ? await mainThreadSched(t.proxy.pid) : undefined;
  const wall0 = process.hrtime.bigint();
  const r = await runPgbench({ ...t.conn, database: DATABASES[name] }, workloadFor(state, row, extraArgs), {
    duration: state.duration,
    threads: row.threads,
    details: true,
    cpu: true,
  });
  const wallNs = Number(process.hrtime.bigint() - wall0);
  const sched1 = t.proxy ? await mainThreadSched(t.proxy.pid) : undefined;
  state.lastEnd[name] = Date.now();
  await sleep(300); // direct: pgbench's backends exit and are reaped (their CPU moves to cutime)
  const cpu1 = await serverTicks(state, t);
  r.cpu = cpuPerStatement(state, r, cpu0, cpu1);
  if (r.cpu && sched0 && sched1) {
    // The proxy's event-loop thread: share of the run it was running, and waiting for a CPU.
    r.cpu.proxyThreadRunning = (sched1.runNs - sched0.runNs) / wallNs;
    r.cpu.proxyThreadWaiting = (sched1.waitNs - sched0.waitNs) / wallNs;
  }
  if (wasSignalled()) throw new Error('interrupted');
  if (logDir) {
    const { latenciesUs, failed } = await readTransactionLog(path.join(logDir, 'tx'));
    r.latencyLog = {
      transactions: latenciesUs.length,
      failed,
      p50Us: quantile(latenciesUs, 0.5),
      p90Us: quantile(latenciesUs, 0.9),
      p99Us: quantile(latenciesUs, 0.99),
      p999Us: quantile(latenciesUs, 0.999),
      maxUs: latenciesUs.length > 0 ? latenciesUs[latenciesUs.length - 1] : null,
    };
    await rm(logDir, { recursive: true, force: true });
  }
  if (r.exitCode !== undefined && !r.error)
    state.pending.push({ name, row, cell: r, conn, before, dueAt: state.lastEnd[name] + settleMs(name) });
  return r;
}

/**
 * What reached PostgreSQL during one run, against what pgbench sent. Every script is one
 * autocommit statement, so pgbench's transactions are client statements, and every statement that
 * reaches the server is one server transaction (committed or rolled back). Writes always reach it.
 */
function countStatements(row, cell, before, after) {
  const d = (k) => after[k] - before[k];
  const perScript = {};
  if (row.mix.length > 1) {
    for (const [i, m] of row.mix.entries()) perScript[m.script] = cell.scripts?.[i]?.transactions ?? null;
  }
  const statements = cell.processed ?? null;
  const writes =
    row.mix.length > 1
      ? row.mix.filter((m) => m.write).reduce((n, m) => n + (perScript[m.script] ?? 0), 0)
      : 0;
  const reads = statements == null ? null : statements - writes;
  const serverTransactions = d('xacts');
  const serverReads = serverTransactions - writes;
  const counts = {
    statements,
    reads,
    writes,
    serverTransactions,
    serverReads,
    hitRate: reads > 0 ? 1 - serverReads / reads : null,
    raw: { before, after },
  };
  if (row.bot) {
    const priceReads = perScript['read-price'];
    const priceUpdates = perScript['update-price'];
    const positionReads = perScript['read-positions'];
    const pricesAtServer = d('pricesScans') - priceUpdates;
    const positionsAtServer = d('positionsScans');
    counts.tables = {
      perScript,
      prices: {
        reads: priceReads,
        atServer: pricesAtServer,
        hitRate: priceReads > 0 ? 1 - pricesAtServer / priceReads : null,
        updates: priceUpdates,
        rowsUpdated: d('pricesUpdated'),
        estimate: tableInvalidationEstimate(priceReads, priceUpdates, SYMBOLS),
      },
      positions: {
        reads: positionReads,
        atServer: positionsAtServer,
        hitRate: positionReads > 0 ? 1 - positionsAtServer / positionReads : null,
      },
      orders: { inserts: perScript['insert-order'], rowsInserted: d('ordersInserted') },
    };
  }
  return { counts };
}

/**
 * The price hit rate to expect when every price update invalidates every cached price read (the
 * cache versions whole tables), in a simple model: price reads of uniformly random keys and price
 * updates arrive in random order (each statement on the table is an update with probability
 * q = updates ÷ (reads + updates)), every read is answered before the next statement, and only the
 * first read of each distinct key after an update misses. The reads between two updates, n, are
 * geometric: E[n] = (1 − q)/q, and E[distinct keys] = K·(1 − q/(1 − (1 − q)(1 − 1/K))).
 * Reads in flight across an update, and the second invalidation when the write's transaction
 * ends, cost more misses than this; coalesced reads save some.
 */
function tableInvalidationEstimate(reads, updates, keys) {
  if (!(reads > 0)) return null;
  if (!(updates > 0)) return 1;
  const q = updates / (reads + updates);
  const meanReads = (1 - q) / q;
  const meanDistinct = keys * (1 - q / (1 - (1 - q) * (1 - 1 / keys)));
  return 1 - meanDistinct / meanReads;
}

async function finish(targets, opts, machine) {
  const profiles = [];
  for (const name of ['sluice-cache', 'sluice']) {
    const proxy = targets[name]?.proxy;
    if (!proxy) continue;
    await proxy.stop();
    if (!opts.profile) continue;
    // Both Sluice targets write into one directory: a profile's name carries its process id.
    for (const file of await proxy.newProfiles()) {
      if (!path.basename(file).includes(`.${proxy.pid}.`)) continue;
      let summary;
      try {
        summary = await summariseProfile(file, { top: 15 });
      } catch (err) {
        summary = { error: err.message };
      }
      profiles.push({ target: name, label: LABELS[name], file, summary });
    }
  }
  machine.loadAverageAtEnd = os.loadavg().map((l) => Math.round(l * 100) / 100);
  return profiles;
}

// ---------------------------------------------------------------------------------------------
// Report

function cellLog(r) {
  if (r.error) return `ERROR ${r.error}`;
  const parts = [`${fmt.tps(r.tps)} tps, ${fmt.ms(r.latencyMs)} ms, failed ${r.failed ?? '?'}`];
  if (r.latencyLog) parts.push(`p50 ${int(r.latencyLog.p50Us)} µs, p99 ${int(r.latencyLog.p99Us)} µs`);
  return parts.join('; ');
}

const ok = (cell) => cell && !cell.error;

function summariseRow(row, cells, active) {
  const tps = (name) => (ok(cells[name]) ? (cells[name].tps ?? null) : null);
  return {
    id: row.id,
    label: row.label,
    workload: {
      mode: row.mode,
      clients: row.clients,
      threads: Math.min(row.threads, row.clients),
      scripts: row.mix.map((m) => (m.weight == null ? m.script : `${m.script}@${m.weight}`)),
    },
    hot: Boolean(row.hot),
    latency: Boolean(row.latency),
    bot: Boolean(row.bot),
    notRun: Object.fromEntries(active.filter((t) => !cells[t]).map((t) => [t, row.notRun?.[t] ?? 'not run'])),
    results: cells,
    ratios: {
      sluiceToDirect: ratio(tps('sluice'), tps('direct')),
      cacheToDirect: ratio(tps('sluice-cache'), tps('direct')),
      pgbouncerToDirect: ratio(tps('pgbouncer'), tps('direct')),
      cacheToSluice: ratio(tps('sluice-cache'), tps('sluice')),
      cacheToPgbouncer: ratio(tps('sluice-cache'), tps('pgbouncer')),
    },
  };
}

function summarise(results) {
  const hot = results
    .filter((r) => r.hot)
    .map((r) => ({
      row: r.id,
      cacheToDirect: r.ratios.cacheToDirect,
      meetsGoal: r.ratios.cacheToDirect == null ? null : r.ratios.cacheToDirect >= HOT_GOAL,
      meetsDoneWhen: r.ratios.cacheToDirect == null ? null : r.ratios.cacheToDirect >= HOT_DONE,
    }));
  const bot = results
    .filter((r) => r.bot)
    .map((r) => {
      const hit = r.results['sluice-cache']?.counts?.hitRate ?? null;
      return { row: r.id, hitRate: hit, meetsGoal: hit == null ? null : hit >= HIT_GOAL };
    });
  const latency = results
    .filter((r) => r.latency)
    .map((r) => ({
      row: r.id,
      ...Object.fromEntries(
        Object.entries(r.results).map(([t, c]) => [
          t,
          c.latencyLog ? { p50Us: c.latencyLog.p50Us, p99Us: c.latencyLog.p99Us } : null,
        ]),
      ),
    }));
  const cpuBounds = results
    .filter((r) => r.hot && ok(r.results.direct) && ok(r.results['sluice-cache']))
    .map((r) => {
      const c = r.results['sluice-cache'];
      const sluiceUs = c.cpu?.proxyUs;
      const oneCore = sluiceUs > 0 ? 1e6 / sluiceUs : null;
      return {
        row: r.id,
        label: r.label,
        directTps: r.results.direct.tps,
        cacheTps: c.tps,
        sluiceUsPerHit: sluiceUs ?? null,
        sluiceOneCoreTps: oneCore,
        oneCoreToDirect: ratio(oneCore, r.results.direct.tps),
        threadRunning: c.cpu?.proxyThreadRunning ?? null,
        threadWaiting: c.cpu?.proxyThreadWaiting ?? null,
        machineShare: c.cpu?.machineShare ?? null,
        directMachineShare: r.results.direct.cpu?.machineShare ?? null,
      };
    });
  return { hotRead: hot, botMix: bot, latency, cpuBounds };
}

const int = (v) => (v == null ? '—' : Math.round(v).toLocaleString('en-US'));
const pct = (v) => (v == null ? '—' : `${(v * 100).toFixed(1).replace(/^-/, '−')} %`);
const count = (v) => (v == null ? '—' : Math.round(v).toLocaleString('en-US'));
const verdict = (met) => (met == null ? 'no figure' : met ? 'met' : 'not met');

function renderMarkdown(report, active) {
  const has = (name) => active.includes(name);
  const o = report.options;
  const labels = active.map((t) => LABELS[t]);
  const out = [];
  out.push('# Result cache: direct PostgreSQL vs Sluice cache off / on vs PgBouncer', '');
  out.push(
    `${report.startedAt} · ${o.clients} clients \`-j ${o.threads} -T ${o.duration}\` (\`-M prepared\`: \`-j ${o.clients}\`; ` +
      `latency rows: 1 client \`-j 1\`), one run per cell, targets back to back within each row ` +
      `(${labels.join(' → ')}), each target on its own copy of the tables. Proxies in transaction mode, ` +
      `pool ${o.poolSize}; Sluice cache on is the same build with \`--cache\` (in-process tier only, no Redis).` +
      `${o.quick ? ' Quick run (subset of rows).' : ''}`,
    '',
  );
  out.push(`> ${NOISE_NOTE}`, '');
  out.push(`> ${coresNote(report.machine)}`, '');

  // --- Throughput
  out.push('## Throughput', '');
  const header = ['workload', 'direct tps'];
  for (const t of ['sluice', 'sluice-cache', 'pgbouncer'])
    if (has(t)) header.push(`${LABELS[t]} tps (÷ direct)`);
  if (has('sluice-cache') && has('sluice')) header.push('cache on ÷ off');
  if (has('sluice-cache') && has('pgbouncer')) header.push('cache on ÷ PgBouncer');
  const ratioKey = {
    sluice: 'sluiceToDirect',
    'sluice-cache': 'cacheToDirect',
    pgbouncer: 'pgbouncerToDirect',
  };
  const tpsCell = (r, t) => {
    const c = r.results[t];
    if (!c) return 'not run';
    if (c.error) return 'error';
    return t === 'direct' ? fmt.tps(c.tps) : `${fmt.tps(c.tps)} (${fmt.ratio(r.ratios[ratioKey[t]])})`;
  };
  const tpsRows = report.rows.map((r) => {
    const cells = [r.label, tpsCell(r, 'direct')];
    for (const t of ['sluice', 'sluice-cache', 'pgbouncer']) if (has(t)) cells.push(tpsCell(r, t));
    if (has('sluice-cache') && has('sluice')) cells.push(fmt.ratio(r.ratios.cacheToSluice));
    if (has('sluice-cache') && has('pgbouncer')) cells.push(fmt.ratio(r.ratios.cacheToPgbouncer));
    return cells;
  });
  out.push(table(header, tpsRows), '');
  if (has('sluice-cache')) {
    out.push(
      `Hot reads with the cache on, tps ÷ direct (issue goal ≥ ${HOT_GOAL}×; done when ≥ ${HOT_DONE}×): ` +
        report.summary.hotRead
          .map(
            (h) =>
              `${report.rows.find((r) => r.id === h.row).label.replace(/, 16 clients.*$/, '')} ` +
              `**${fmt.ratio(h.cacheToDirect)}×** (goal ${verdict(h.meetsGoal)}, done-when ${verdict(h.meetsDoneWhen)})`,
          )
          .join('; ') +
        '.',
      '',
    );
  }

  // --- Hit rate
  out.push('## Hit rate', '');
  out.push(
    "Measured from outside Sluice (it exposes no counters yet), with PostgreSQL's own statistics for the " +
      "target's database: **hit rate = 1 − (reads that reached PostgreSQL ÷ reads pgbench sent)**, where " +
      'reads that reached PostgreSQL = Δ(xact_commit + xact_rollback) of `pg_stat_database` over the run − ' +
      'writes. Every pgbench transaction here is one autocommit statement, so each statement that reaches the ' +
      'server is one server transaction, and writes always reach it; reads and writes sent come from pgbench ' +
      '(its transaction count, split by script in the bot mix). The counters are read before the run and ' +
      `${SETTLE_MS.pooled / 1000} s after it (idle pooled backends report their statistics up to 10 s late). ` +
      'A read answered by a read already in flight counts as a hit: it did not reach PostgreSQL. Direct, cache ' +
      "off and PgBouncer should read ≈ 0 % — they check the method (a few server transactions are pgbench's " +
      "and the bench's own connections), and a small negative figure is that overhead.",
    '',
  );
  const hitHeader = ['workload'];
  if (has('sluice-cache')) hitHeader.push('cache on: reads sent', 'reached PostgreSQL', '**hit rate**');
  for (const t of ['sluice', 'direct', 'pgbouncer']) if (has(t)) hitHeader.push(`${LABELS[t]}: hit rate`);
  const hitCell = (r, t) => {
    const c = r.results[t];
    if (!c) return 'not run';
    if (c.error) return 'error';
    return pct(c.counts?.hitRate);
  };
  const hitRows = report.rows.map((r) => {
    const cells = [r.label];
    if (has('sluice-cache')) {
      const c = r.results['sluice-cache'];
      const k = ok(c) ? c.counts : undefined;
      cells.push(
        count(k?.reads),
        count(k?.serverReads),
        k ? `**${pct(k.hitRate)}**` : c ? 'error' : 'not run',
      );
    }
    for (const t of ['sluice', 'direct', 'pgbouncer']) if (has(t)) cells.push(hitCell(r, t));
    return cells;
  });
  out.push(table(hitHeader, hitRows), '');
  if (has('sluice-cache')) {
    out.push(
      `Bot mix hit rate with the cache on (issue goal ≥ ${pct(HIT_GOAL)}): ` +
        report.summary.botMix
          .map((b) => `${b.row} **${pct(b.hitRate)}** (${verdict(b.meetsGoal)})`)
          .join('; ') +
        '.',
      '',
    );
  }

  // --- Bot mix by table
  const botRows = report.rows.filter((r) => r.bot);
  if (botRows.length > 0 && has('sluice-cache')) {
    out.push('### Bot mix by table (cache on)', '');
    out.push(
      `The mix, one statement per pgbench transaction: ${BOT_MIX.map((m) => `${m.script} ${m.weight} %`).join(', ')} ` +
        `(scripts under Notes). ${SYMBOLS} symbols, ${BOTS} bots with ${POSITIONS_PER_BOT} positions each. ` +
        'Per table, reads that reached PostgreSQL = Δ(seq_scan + idx_scan) of `pg_stat_user_tables` (one scan ' +
        'per statement) − the updates that scanned it. Sluice versions `prices` per primary-key value (a price ' +
        'update of one instrument orphans only that instrument\'s entries). For comparison, "model if whole-table" is the ' +
        'price hit rate that whole-table invalidation would allow when price reads (random symbols) and price ' +
        'updates come in random order and only the first read of each symbol after an update misses: ' +
        `1 − E[distinct symbols read between two updates] ÷ E[reads between two updates] (${SYMBOLS} symbols; ` +
        'details in bench/cache.mjs). ' +
        'Updates and inserts are also cross-checked against n_tup_upd / n_tup_ins.',
      '',
    );
    const tRows = botRows.map((r) => {
      const c = r.results['sluice-cache'];
      const t = ok(c) ? c.counts?.tables : undefined;
      if (!t) return [r.label, c ? 'error' : 'not run', '', '', '', '', '', '', '', ''];
      return [
        r.label,
        count(t.prices.reads),
        count(t.prices.atServer),
        `**${pct(t.prices.hitRate)}**`,
        pct(t.prices.estimate),
        count(t.positions.reads),
        count(t.positions.atServer),
        `**${pct(t.positions.hitRate)}**`,
        `${count(t.prices.updates)} (rows ${count(t.prices.rowsUpdated)})`,
        `${count(t.orders.inserts)} (rows ${count(t.orders.rowsInserted)})`,
      ];
    });
    out.push(
      table(
        [
          'workload',
          'price reads',
          'reached PostgreSQL',
          'price hit rate',
          'model if whole-table invalidation',
          'position reads',
          'reached PostgreSQL',
          'position hit rate',
          'price updates',
          'orders inserted',
        ],
        tRows,
      ),
      '',
    );
  }

  // --- Latency
  const latRows = report.rows.filter((r) => r.latency);
  if (latRows.length > 0) {
    out.push('## Latency at 1 client', '');
    out.push(
      "Per-transaction latency from pgbench's transaction log (`-l`): p50 / p99 in µs, every transaction of " +
        "the run; pgbench's average in brackets (ms). With the cache on and the entries warm, every transaction is a hit, " +
        'so that column is the hit latency as a client sees it (pgbench → Sluice → pgbench, over loopback).',
      '',
    );
    const header2 = ['workload'];
    for (const t of active) header2.push(`${LABELS[t]} p50 / p99 µs (avg ms)`);
    const rowsL = latRows.map((r) => [
      r.label,
      ...active.map((t) => {
        const c = r.results[t];
        if (!c) return 'not run';
        if (c.error || !c.latencyLog) return 'error';
        return `${int(c.latencyLog.p50Us)} / ${int(c.latencyLog.p99Us)} (${fmt.ms(c.latencyMs)})`;
      }),
    ]);
    out.push(table(header2, rowsL), '');
  }

  // --- CPU
  out.push('## CPU per statement', '');
  out.push(
    "User + system CPU time over the run, from /proc, ÷ the statements pgbench completed, in µs: pgbench's " +
      "(sampled every 50 ms while it runs), PostgreSQL's (every process of the server) and the proxy's. " +
      `"machine" is what the three used together ÷ (${report.machine.nproc} cores × the run's length); near 100 % ` +
      'the cores were the limit, and what is missing went to other processes on the machine (see the load average). ' +
      "The last column is the proxy's main (event-loop) thread: the share of the run it was running, and waiting on " +
      'a run queue for a CPU.',
    '',
  );
  const us = (v) => (v == null ? '—' : v < 10 ? v.toFixed(1) : String(Math.round(v)));
  const cpuRows = [];
  for (const r of report.rows) {
    for (const t of active) {
      const c = r.results[t];
      if (!c || c.error || !c.cpu) continue;
      cpuRows.push([
        r.label,
        LABELS[t],
        us(c.cpu.pgbenchUs),
        us(c.cpu.postgresUs),
        t === 'direct' ? '—' : `${us(c.cpu.proxyUs)} (${us(c.cpu.proxyUserUs)} + ${us(c.cpu.proxySystemUs)})`,
        us(c.cpu.totalUs),
        pct(c.cpu.machineShare),
        c.cpu.proxyThreadRunning == null
          ? '—'
          : `${pct(c.cpu.proxyThreadRunning)} / ${pct(c.cpu.proxyThreadWaiting)}`,
      ]);
    }
  }
  out.push(
    table(
      [
        'workload',
        'target',
        'pgbench µs',
        'PostgreSQL µs',
        'proxy µs (user + system)',
        'total µs',
        'machine',
        'proxy thread running / waiting',
      ],
      cpuRows,
    ),
    '',
  );
  const bounds = report.summary.cpuBounds ?? [];
  if (bounds.length > 0) {
    out.push(
      'What bounds the hot reads with the cache on. Sluice answers every hit on one event-loop thread, so it ' +
        'cannot answer more than 1,000,000 ÷ (its CPU µs per hit) a second even with a core to itself; on ' +
        `${report.machine.nproc} cores shared with pgbench and PostgreSQL it gets less. "thread" is how much of the run that thread ` +
        'was running / waiting on a run queue for a CPU (/proc/<pid>/task/<pid>/schedstat): together near 100 % ' +
        'means the thread was never idle — the single thread, not the cores, was the limit.',
      '',
    );
    out.push(
      table(
        [
          'workload',
          'direct tps',
          'cache on tps',
          'Sluice CPU µs per hit',
          'one core of that, tps (÷ direct)',
          'Sluice thread running / waiting',
          'machine used, cache on / direct',
        ],
        bounds.map((b) => [
          b.label,
          fmt.tps(b.directTps),
          fmt.tps(b.cacheTps),
          us(b.sluiceUsPerHit),
          `${fmt.tps(b.sluiceOneCoreTps)} (${fmt.ratio(b.oneCoreToDirect)})`,
          `${pct(b.threadRunning)} / ${pct(b.threadWaiting)}`,
          `${pct(b.machineShare)} / ${pct(b.directMachineShare)}`,
        ]),
      ),
      '',
    );
  }

  // --- Failures
  const failRows = report.rows.map((r) => [
    r.label,
    active.map((t) => (r.results[t] ? (r.results[t].failed ?? '?') : '—')).join(' / '),
    active.map((t) => (r.results[t] ? (r.results[t].abortedClients ?? '?') : '—')).join(' / '),
  ]);
  out.push('## Failures', '');
  out.push(`Failed transactions and aborted clients as pgbench reports them (${labels.join(' / ')}).`, '');
  out.push(table(['workload', 'failed transactions', 'aborted clients'], failRows), '');

  // --- Profiles
  for (const p of report.profiles) {
    out.push(`## CPU profile: ${p.label}`, '');
    if (p.summary.error) {
      out.push(`Could not read \`${p.file}\`: ${p.summary.error}`, '');
      continue;
    }
    out.push(
      `\`${path.relative(process.cwd(), p.file)}\` — the whole life of the process (every row, hits and misses, ` +
        `and the idle time while other targets ran, which is left out): ${(p.summary.busyMs / 1000).toFixed(1)} s busy. ` +
        'Self time by function, then by file (share of busy time). The profiler samples wall-clock time: ' +
        "`writeBuffer` (the socket write) holds the kernel's loopback TCP work and the time the thread was " +
        'preempted inside that call, waiting for a CPU — compare the user/system split and the thread figures ' +
        'under "CPU per statement".',
      '',
    );
    out.push(
      table(
        ['function', 'self ms', 'share'],
        p.summary.functions.map((f) => [
          `\`${f.name.replaceAll('|', '\\|')}\``,
          count(f.selfMs),
          pct(f.share),
        ]),
      ),
      '',
    );
    out.push(
      table(
        ['file', 'self ms', 'share'],
        p.summary.files.map((f) => [`\`${f.name.replaceAll('|', '\\|')}\``, count(f.selfMs), pct(f.share)]),
      ),
      '',
    );
  }

  out.push(...machineLines(report.machine));

  out.push('## Notes', '');
  for (const n of report.notes.slice(1)) out.push(`- ${n}`);
  for (const [name, t] of Object.entries(report.targets)) {
    if (name === 'direct') continue;
    if (!t.available) out.push(`- ${LABELS[name]} not in this run: ${t.reason.split('\n')[0]}`);
    else if (t.command) out.push(`- ${LABELS[name]}: \`${t.command.replace(/\S*\/(dist\/cli\.js)/, '$1')}\``);
  }
  out.push(
    `- Tables, created directly in PostgreSQL, one database per target (${Object.values(DATABASES)
      .map((d) => `\`${d}\``)
      .join(', ')}): ` +
      `\`prices(instrument_id int primary key, symbol text unique, price numeric, ts timestamptz)\` with ${SYMBOLS} instruments 1…${SYMBOLS} ('S1'…'S${SYMBOLS}'), ` +
      `\`positions(bot int, symbol text, qty int, primary key (bot, symbol))\` with ${BOTS} bots × ${POSITIONS_PER_BOT}, ` +
      '`orders(id identity primary key, bot, symbol, qty, price, ts default now())`, empty. Before every bot-mix run ' +
      'the bench puts prices back and empties orders, directly; every run starts after a checkpoint. All runs use `pgbench -n`.',
  );
  out.push(
    `- Scripts: hot read \`${oneLine(SCRIPTS['hot-read'])}\`; bot mix ${BOT_MIX.map((m) => `${m.script}@${m.weight} \`${oneLine(SCRIPTS[m.script])}\``).join('; ')}.`,
  );
  out.push(
    '- `-M simple` substitutes `:k` into the text (100 distinct hot-read texts, and a new text for nearly every ' +
      'write); `-M extended` / `-M prepared` send it as a parameter (one text). Price reads and updates name one instrument by its ' +
      'primary key, so Sluice versions them per key value: an update of one instrument leaves the others cached.',
  );
  out.push(
    '- The cache-on target starts warm: its warm-up (hot read `-M simple`, 4 clients) fills the simple-protocol ' +
      'hot-read entries, and later rows reuse what earlier rows stored (entries live 60 s, the default ' +
      '`cache_ttl`). The bot-mix reads are different texts from the hot read, so the bot mix starts cold.',
  );
  if (report.rows.some((r) => r.id === 'hot-prepared-16'))
    out.push(
      '- `-M prepared` runs with `-j 16` (one pgbench thread per client): pgbench 15 prepares synchronously ' +
        'and deadlocks a transaction pooler otherwise (/work/shared/ANCHORS.md). PgBouncer does not run it.',
    );
  for (const r of report.rows) {
    for (const [name, c] of Object.entries(r.results)) {
      if (c?.error) out.push(`- ${r.id}, ${LABELS[name]}: ${c.error.split('\n')[0]}`);
      if (c?.latencyLog?.failed)
        out.push(`- ${r.id}, ${LABELS[name]}: ${c.latencyLog.failed} failed transactions in the log`);
    }
  }
  return out.join('\n');
}

function oneLine(script) {
  return script.trim().split('\n').join(' ');
}

function coresNote(m) {
  return (
    `${m.nproc} ${m.nproc === 1 ? 'core' : 'cores'}, shared: pgbench, PostgreSQL and the proxy under test all ` +
    'run on them, so every CPU cycle the proxy spends is taken from PostgreSQL and pgbench. A cache hit saves ' +
    "PostgreSQL's work but not pgbench's, nor Sluice's own per-message work; on a machine with spare cores the " +
    'ratios would differ.'
  );
}
