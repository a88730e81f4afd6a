// The market-data ingestion scenario (suite only): 1-minute bars written into `bars_1m` by
// several connections at once, as COPY batches (postgres.js) and as multi-row INSERTs
// (node-postgres, one parameterised statement per batch), through every suite target; rows/s, and
// the latency of each batch in an HDR histogram.

import pg from 'pg';
import postgres from 'postgres';
import { wasSignalled } from './lib/cleanup.mjs';
import { newHistogram, recordUs, summarise } from './lib/latency.mjs';
import { psql } from './lib/processes.mjs';

export const title = 'Market-data ingestion';
export const description = 'COPY and multi-row INSERT of 1-minute bars into bars_1m, rows/s';

const WRITERS = 4;
const SYMBOLS = 500;
const BASE_MS = Date.parse('2026-01-05T00:00:00Z');
const COLUMNS = ['symbol', 'ts', 'open', 'high', 'low', 'close', 'volume'];
const METHODS = [
  {
    id: 'copy',
    label: `COPY, ${WRITERS} writers × 5 000-row batches`,
    short: 'COPY 5 000-row batches',
    batch: 5000,
  },
  {
    id: 'insert',
    label: `multi-row INSERT, ${WRITERS} writers × 500-row batches`,
    short: 'INSERT 500-row batches',
    batch: 500,
  },
];

const TABLE =
  'create table if not exists bars_1m (symbol text not null, ts timestamptz not null, open numeric not null, ' +
  'high numeric not null, low numeric not null, close numeric not null, volume bigint not null, primary key (symbol, ts))';

export function suitePlan(opts) {
  return METHODS.map((m) => ({ label: m.short, seconds: opts.duration + 3, perTarget: true }));
}

export async function suite(ctx) {
  const setup = await psql(ctx.direct, TABLE);
  if (setup.code !== 0) throw new Error(`creating bars_1m failed: ${setup.stderr.trim()}`);
  // One direct connection for the resets and the counts (no psql per step).
  const admin = new pg.Client(ctx.direct);
  admin.on('error', () => {});
  await admin.connect();
  try {
    return await measure(ctx, admin);
  } finally {
    await admin.end().catch(() => {});
  }
}

async function measure(ctx, admin) {
  const { opts } = ctx;
  const rows = [];
  for (const method of METHODS) {
    const cells = {};
    for (const name of ctx.active) {
      ctx.step(method.short, name);
      const gone = ctx.gone(name);
      if (gone) {
        cells[name] = { throughput: null, latency: null, errors: 0, error: gone };
        continue;
      }
      // Every target starts from an empty table and no pending checkpoint.
      await admin.query('truncate bars_1m');
      await admin.query('checkpoint');
      const run = await drive(ctx.connFor(name), method, opts.duration);
      if (wasSignalled()) throw new Error('interrupted');
      const stored = Number((await admin.query('select count(*) as n from bars_1m')).rows[0].n);
      cells[name] = {
        throughput: run.seconds > 0 ? run.rows / run.seconds : null,
        latency: summarise(run.histogram),
        errors: run.errors,
        errorSamples: run.errorSamples,
        rows: run.rows,
        batches: run.batches,
        rowsStored: stored,
        seconds: run.seconds,
      };
      if (run.rows === 0) cells[name].error = run.errorSamples[0] ?? 'no batch completed';
      else if (stored !== run.rows)
        cells[name].error = `${run.rows} rows acknowledged but ${stored} in the table`;
      ctx.progress.note(
        cells[name].error
          ? `ERROR ${cells[name].error}`
          : `${Math.round(cells[name].throughput).toLocaleString('en-US')} rows/s, batch p50 ` +
              `${(cells[name].latency.p50 / 1000).toFixed(1)} ms, p99 ${(cells[name].latency.p99 / 1000).toFixed(1)} ms, ${run.errors} errors`,
      );
    }
    rows.push({
      id: method.id,
      label: method.label,
      short: method.short,
      unit: 'rows/s',
      latencyOf: 'latency per batch',
      cells,
    });
  }
  return {
    title,
    description:
      `${WRITERS} connections write 1-minute bars (symbol, ts, open, high, low, close, volume; ${SYMBOLS} symbols, ` +
      "primary key (symbol, ts), every row new) for the cell's duration: COPY FROM STDIN batches through " +
      'postgres.js, and multi-row `INSERT … VALUES ($1, …), …` batches through node-postgres (extended protocol, ' +
      'one unnamed statement per batch). Throughput is rows acknowledged per second (checked against ' +
      '`count(*)` afterwards); latency is per batch. The table is emptied and a checkpoint taken before each cell.',
    rows,
    notes: ['`bars_1m` here is a plain table in `sluice_bench` (no hypertable, no partitions).'],
  };
}

/** Row numbers are handed out from one counter, so every (symbol, ts) is new across writers. */
function makeBatches() {
  let next = 0;
  const row = (i) => {
    const symbol = `S${i % SYMBOLS}`;
    const ts = new Date(BASE_MS + Math.floor(i / SYMBOLS) * 60_000).toISOString();
    const open = 100 + (i % 97) / 10;
    return [symbol, ts, open, open + 0.5, open - 0.5, open + 0.1, 1000 + (i % 5000)];
  };
  return (size) => {
    const out = [];
    for (let k = 0; k < size; k++) out.push(row(next++));
    return out;
  };
}

async function drive(conn, method, duration) {
  const histogram = newHistogram();
  const stats = { rows: 0, batches: 0, errors: 0, errorSamples: [] };
  const take = makeBatches();
  const fail = (err) => {
    stats.errors++;
    if (stats.errorSamples.length < 5 && !stats.errorSamples.includes(err.message))
      stats.errorSamples.push(err.message);
  };
  let close;
  let writer;
  if (method.id === 'copy') {
    const sql = postgres({
      host: conn.host,
      port: conn.port,
      user: conn.user,
      password: conn.password,
      database: conn.database,
      max: WRITERS,
      prepare: false,
      onnotice: () => {},
      connect_timeout: 10,
    });
    close = () => sql.end({ timeout: 5 });
    writer = async () => {
      const lines = take(method.batch)
        .map((r) => `${r.join('\t')}\n`)
        .join('');
      const stream =
        await sql`copy bars_1m (symbol, ts, open, high, low, close, volume) from stdin`.writable();
      await new Promise((resolve, reject) => {
        stream.on('error', reject);
        stream.on('finish', resolve);
        stream.end(lines);
      });
    };
  } else {
    const pool = new pg.Pool({ ...conn, max: WRITERS, connectionTimeoutMillis: 10_000 });
    pool.on('error', () => {});
    close = () => pool.end();
    const text = (n) => {
      const tuples = [];
      for (let r = 0; r < n; r++)
        tuples.push(`(${COLUMNS.map((_, c) => `$${r * COLUMNS.length + c + 1}`).join(', ')})`);
      return `INSERT INTO bars_1m (${COLUMNS.join(', ')}) VALUES ${tuples.join(', ')}`;
    };
    const sqlText = text(method.batch);
    writer = async () => {
      await pool.query(sqlText, take(method.batch).flat());
    };
  }
  const t0 = performance.now();
  const deadline = t0 + duration * 1000;
  try {
    await Promise.all(
      Array.from({ length: WRITERS }, async () => {
        let failuresInARow = 0;
        while (performance.now() < deadline && failuresInARow < 20 && !wasSignalled()) {
          const start = performance.now();
          try {
            await writer();
            recordUs(histogram, (performance.now() - start) * 1000);
            stats.rows += method.batch;
            stats.batches++;
            failuresInARow = 0;
          } catch (err) {
            failuresInARow++;
            fail(err);
          }
        }
      }),
    );
  } finally {
    const seconds = (performance.now() - t0) / 1000;
    stats.seconds = seconds;
    await close().catch(() => {});
  }
  return { ...stats, histogram };
}
