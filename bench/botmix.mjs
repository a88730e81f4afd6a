// The bot-mix scenario (suite only): trading bots' statements — latest price per symbol, open
// positions per bot, P&L dashboards, and writes that insert an order and its trade — driven from
// Node with node-postgres, at a configurable write ratio, against every suite target. Each target
// gets its own database, so PostgreSQL's per-table scan counts show how many reads reached it: the
// cache hit rate, measured from outside.

import pg from 'pg';
import { wasSignalled } from './lib/cleanup.mjs';
import { newHistogram, recordUs, summarise } from './lib/latency.mjs';
import { psql, sleep, waitFor } from './lib/processes.mjs';

export const title = 'Bot mix';
export const description =
  'trading bots (latest price, positions, P&L dashboards, orders + trades) at --write-ratio; hit rate';

const CLIENTS = 16;
const SYMBOLS = 100;
const BARS_PER_SYMBOL = 60;
const BOTS = 10;
const POSITIONS_PER_BOT = 20;
/** Start of the "trading day" the P&L dashboard sums from: a literal, so the text is cacheable. */
const DAY_START = '2026-01-02T00:00:00Z';
const HIT_GOAL = 0.85;

/** Reads, by weight among reads; each statement scans exactly one table (the hit rate counts scans). */
const READS = [
  {
    id: 'latest-price',
    weight: 50,
    table: 'bars_1m',
    sql: 'SELECT close, ts FROM bars_1m WHERE symbol = $1 ORDER BY ts DESC LIMIT 1',
    params: () => [`S${1 + rand(SYMBOLS)}`],
  },
  {
    id: 'open-positions',
    weight: 30,
    table: 'positions',
    sql: 'SELECT symbol, qty, avg_price FROM positions WHERE bot_id = $1 AND qty <> 0 ORDER BY symbol',
    params: () => [1 + rand(BOTS)],
  },
  {
    id: 'pnl-dashboard',
    weight: 20,
    table: 'trades',
    sql:
      "SELECT symbol, sum(CASE side WHEN 'sell' THEN qty * price ELSE -qty * price END) AS cash_flow, " +
      "sum(CASE side WHEN 'buy' THEN qty ELSE -qty END) AS net_qty, count(*) AS fills " +
      'FROM trades WHERE bot_id = $1 AND executed_at >= $2 GROUP BY symbol ORDER BY symbol',
    params: () => [1 + rand(BOTS), DAY_START],
  },
];
/** The write: an order and its fill in one statement (one round trip, atomic). */
const WRITE = {
  id: 'order-and-trade',
  sql:
    'WITH o AS (INSERT INTO orders (bot_id, symbol, side, qty, price, status) ' +
    "VALUES ($1, $2, $3, $4, $5, 'filled') RETURNING id, bot_id, symbol, side, qty, price) " +
    'INSERT INTO trades (order_id, bot_id, symbol, side, qty, price) ' +
    'SELECT id, bot_id, symbol, side, qty, price FROM o',
  params: () => [
    1 + rand(BOTS),
    `S${1 + rand(SYMBOLS)}`,
    Math.random() < 0.5 ? 'buy' : 'sell',
    1 + rand(100),
    (9000 + rand(2000)) / 100,
  ],
};
const READ_WEIGHT = READS.reduce((n, r) => n + r.weight, 0);

const rand = (n) => Math.floor(Math.random() * n);

const SCHEMA = [
  'create table bars_1m (symbol text not null, ts timestamptz not null, open numeric not null, high numeric not null, ' +
    'low numeric not null, close numeric not null, volume bigint not null, primary key (symbol, ts))',
  'create table positions (bot_id int not null, symbol text not null, qty numeric not null, avg_price numeric not null, ' +
    'primary key (bot_id, symbol))',
  'create table orders (id bigint generated always as identity primary key, bot_id int not null, symbol text not null, ' +
    "side text not null check (side in ('buy', 'sell')), qty numeric not null, price numeric not null, " +
    'status text not null, created_at timestamptz not null default now())',
  'create table trades (id bigint generated always as identity primary key, order_id bigint not null references orders, ' +
    'bot_id int not null, symbol text not null, side text not null, qty numeric not null, price numeric not null, ' +
    'executed_at timestamptz not null default now())',
  'create index trades_bot_time on trades (bot_id, executed_at)',
  `insert into bars_1m select 'S' || s, timestamptz '${DAY_START}' + m * interval '1 minute', 100 + s, 101 + s, 99 + s, ` +
    `100 + s + (m % 7) * 0.01, 1000 * m from generate_series(1, ${SYMBOLS}) s, generate_series(0, ${BARS_PER_SYMBOL - 1}) m`,
  `insert into positions select b, 'S' || ((b * 7 + j) % ${SYMBOLS} + 1), case when j % 5 = 0 then 0 else 10 * j end, 100 ` +
    `from generate_series(1, ${BOTS}) b, generate_series(1, ${POSITIONS_PER_BOT}) j`,
  'vacuum analyze bars_1m',
  'vacuum analyze positions',
  'analyze orders',
  'analyze trades',
];

export function suitePlan(opts) {
  return [
    { label: 'creating one database per target', seconds: 4 },
    {
      label: `${CLIENTS} clients, write ratio ${opts.writeRatio}`,
      seconds: opts.duration + 3,
      perTarget: true,
    },
  ];
}

export async function suite(ctx) {
  const { opts } = ctx;
  ctx.step('creating one database per target');
  const databases = {};
  // Side by side: creating a database copies template1 and waits on its flush.
  await Promise.all(
    ctx.active.map(async (name) => {
      databases[name] = await ctx.createDatabase(`bot_${name.replace('-', '_')}`);
      const r = await psql({ ...ctx.admin, database: databases[name] }, SCHEMA, { timeoutMs: 120_000 });
      if (r.code !== 0) throw new Error(`bot-mix tables in ${databases[name]}: ${r.stderr.trim()}`);
    }),
  );
  const label = `${CLIENTS} clients, write ratio ${opts.writeRatio}`;
  const cells = {};
  const hits = {};
  for (const name of ctx.active) {
    ctx.step(label, name);
    const gone = ctx.gone(name);
    if (gone) {
      cells[name] = { throughput: null, latency: null, errors: 0, error: gone };
      continue;
    }
    // One direct connection per target for the checkpoint and the statistics (no psql per step).
    const admin = new pg.Client({ ...ctx.admin, database: databases[name] });
    admin.on('error', () => {});
    await admin.connect();
    let run;
    let before;
    let after;
    try {
      await admin.query('checkpoint');
      before = await readScans(admin);
      run = await drive(ctx.connFor(name, databases[name]), opts);
      if (wasSignalled()) throw new Error('interrupted');
      // Pooled server connections report their statistics up to 10 s late while idle; ending them
      // makes each report as it exits. Nothing uses this database after this run.
      await endBackends(admin);
      after = await readScans(admin);
    } finally {
      await admin.end().catch(() => {});
    }
    hits[name] = hitRate(run, before, after);
    cells[name] = {
      throughput: run.seconds > 0 ? run.ops / run.seconds : null,
      latency: summarise(run.all),
      errors: run.errors,
      errorSamples: run.errorSamples,
      ops: run.ops,
      byOperation: Object.fromEntries(
        Object.entries(run.byOp).map(([k, v]) => [k, { count: v.count, latency: summarise(v.histogram) }]),
      ),
      hitRate: hits[name],
    };
    if (run.errors > 0 && run.ops === 0) cells[name].error = run.errorSamples[0] ?? 'every operation failed';
    ctx.progress.note(
      `${Math.round(cells[name].throughput ?? 0).toLocaleString('en-US')} ops/s, p50 ${fmtMs(cells[name].latency?.p50)} ms, ` +
        `p99 ${fmtMs(cells[name].latency?.p99)} ms, hit rate ${pct(hits[name]?.total)}, ${run.errors} errors`,
    );
  }

  const row = {
    id: 'mix',
    label: `bot mix, ${CLIENTS} clients, ${pctInt(opts.writeRatio)} writes`,
    short: `bot mix ${CLIENTS} clients`,
    unit: 'ops/s',
    cells,
  };
  const opRows = [...READS.map((r) => r.id), WRITE.id].map((op) => ({
    id: op,
    label: `${op} (within the mix)`,
    short: op,
    unit: 'ops/s',
    detail: true,
    latencyOf: 'latency within the mix',
    cells: Object.fromEntries(
      Object.entries(cells)
        .filter(([, c]) => c.byOperation?.[op])
        .map(([t, c]) => [
          t,
          {
            throughput: c.byOperation[op].count / opts.duration,
            latency: c.byOperation[op].latency,
            errors: 0,
          },
        ]),
    ),
  }));
  const hitRows = Object.entries(hits).map(([t, h]) => [
    ctx.targets[t].label,
    String(h.reads),
    String(h.reachedServer),
    pct(h.total),
    ...READS.map((r) => pct(h.byTable[r.table])),
  ]);
  return {
    title,
    description:
      `${CLIENTS} node-postgres clients (extended protocol, unnamed statements), each running one statement after ` +
      `another for ${opts.duration} s: ${pctInt(opts.writeRatio)} writes (an order and its fill trade in one ` +
      'statement) and reads weighted 50 : 30 : 20 — latest 1-minute bar of a symbol (`bars_1m`, 100 symbols), ' +
      "open positions of a bot (`positions`, 10 bots), a P&L dashboard of a bot summed from today's `trades`. " +
      'Each target has its own copy of the tables (database `sluice_bench_bot_<target>`). The first row is the ' +
      'whole mix; the others are its operations, counted within it.',
    rows: [row, ...opRows],
    tables: [
      {
        title: 'Cache hit rate on the bot mix',
        text:
          'hit rate = 1 − reads that reached PostgreSQL ÷ reads sent, where reads that reached PostgreSQL are the ' +
          'Δ(seq_scan + idx_scan) of the read tables in `pg_stat_user_tables` (every read scans one table once; ' +
          'the writes scan none of them). Direct, cache off and PgBouncer should read ≈ 0 %: they check the method. ' +
          `Goal for the cache on: ≥ ${pctInt(HIT_GOAL)}. Writes into \`trades\` invalidate the dashboard reads of ` +
          'that table, so its hit rate falls as the write ratio rises.',
        header: [
          'target',
          'reads sent',
          'reached PostgreSQL',
          'hit rate',
          ...READS.map((r) => `${r.id} (${r.table})`),
        ],
        rows: hitRows,
      },
    ],
    hitRate: Object.fromEntries(Object.entries(hits).map(([t, h]) => [t, h])),
    notes: [
      `Write ratio ${opts.writeRatio} (\`--write-ratio\`); writes do not touch \`positions\` or \`bars_1m\`, so those reads stay cacheable.`,
    ],
  };
}

/** Runs CLIENTS connections for opts.duration seconds, every operation timed. */
async function drive(conn, opts) {
  const all = newHistogram();
  const byOp = Object.fromEntries(
    [...READS, WRITE].map((o) => [o.id, { count: 0, histogram: newHistogram() }]),
  );
  const stats = { ops: 0, reads: 0, writes: 0, errors: 0, errorSamples: [], readsByTable: {} };
  const clients = [];
  const connectErrors = [];
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const c = new pg.Client({ ...conn, connectionTimeoutMillis: 10_000 });
      c.on('error', () => {});
      try {
        await c.connect();
        clients.push(c);
      } catch (err) {
        connectErrors.push(err.message);
      }
    }),
  );
  stats.errors += connectErrors.length;
  stats.errorSamples.push(...connectErrors.slice(0, 3));
  const t0 = performance.now();
  const deadline = t0 + opts.duration * 1000;
  await Promise.all(
    clients.map(async (c) => {
      // Bounded: stops at the deadline, or after a run of failures (a dead connection).
      let failuresInARow = 0;
      while (performance.now() < deadline && failuresInARow < 50 && !wasSignalled()) {
        const op = Math.random() < opts.writeRatio ? WRITE : pickRead();
        const start = performance.now();
        try {
          await c.query({ text: op.sql, values: op.params() });
          const us = (performance.now() - start) * 1000;
          recordUs(all, us);
          recordUs(byOp[op.id].histogram, us);
          byOp[op.id].count++;
          stats.ops++;
          if (op === WRITE) stats.writes++;
          else {
            stats.reads++;
            stats.readsByTable[op.table] = (stats.readsByTable[op.table] ?? 0) + 1;
          }
          failuresInARow = 0;
        } catch (err) {
          stats.errors++;
          failuresInARow++;
          if (stats.errorSamples.length < 5 && !stats.errorSamples.includes(err.message))
            stats.errorSamples.push(err.message);
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((c) => c.end().catch(() => {})));
  return { ...stats, seconds, all, byOp };
}

function pickRead() {
  let n = Math.random() * READ_WEIGHT;
  for (const r of READS) {
    n -= r.weight;
    if (n < 0) return r;
  }
  return READS[READS.length - 1];
}

async function readScans(admin) {
  const sql =
    'select relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) as scans from pg_stat_user_tables ' +
    'where relname = any($1) order by relname';
  const tables = READS.map((r) => r.table);
  // Two equal readings in a row: a backend that just exited may still be flushing its counts.
  let last;
  for (let i = 0; i < 20; i++) {
    const { rows } = await admin.query(sql, [tables]);
    const text = JSON.stringify(rows);
    if (text === last) return Object.fromEntries(rows.map((r) => [r.relname, Number(r.scans)]));
    last = text;
    await sleep(150);
  }
  throw new Error('pg_stat_user_tables did not settle');
}

/** Ends every other backend on this database and waits (bounded) until they are gone. */
async function endBackends(admin) {
  const others = 'from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()';
  await admin.query(`select count(pg_terminate_backend(pid)) ${others}`);
  await waitFor(
    async () => {
      const { rows } = await admin.query(`select count(*)::int as n ${others}`);
      return rows[0].n === 0;
    },
    { timeoutMs: 10_000, intervalMs: 100 },
  );
}

function hitRate(run, before, after) {
  const byTable = {};
  let reached = 0;
  for (const r of READS) {
    const sent = run.readsByTable[r.table] ?? 0;
    const got = (after[r.table] ?? 0) - (before[r.table] ?? 0);
    reached += got;
    byTable[r.table] = sent > 0 ? 1 - got / sent : null;
  }
  return {
    reads: run.reads,
    writes: run.writes,
    reachedServer: reached,
    total: run.reads > 0 ? 1 - reached / run.reads : null,
    byTable,
  };
}

const fmtMs = (us) => (us == null ? '—' : (us / 1000).toFixed(3));
const pct = (v) => (v == null ? '—' : `${(v * 100).toFixed(1)} %`);
const pctInt = (v) => `${Math.round(v * 1000) / 10} %`;
