// Checks the parse-once query analysis on a corpus of trading/TimescaleDB statements, and its LRU.
import { performance } from 'node:perf_hooks';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  loadQueryParser,
  QueryAnalyzer,
  type RelationRef,
  type StatementKind,
} from '../../src/query/analysis.js';
import { shapeWithLiterals } from '../../src/query/literal-shape.js';

interface Case {
  sql: string;
  kind: StatementKind;
  readOnly: boolean;
  reads?: string[];
  writes?: string[];
  functions?: string[];
  locking?: boolean;
  writesUnknown?: boolean;
  hasWhere?: boolean;
  hasLimit?: boolean;
  statements?: number;
}

// 'schema.name' or 'name'; pseudo-functions show up as pg_catalog.now / pg_catalog.current_user.
const corpus: Case[] = [
  // --- dashboards and lookups
  {
    sql: "SELECT DISTINCT ON (symbol) symbol, ts, close FROM market_data WHERE ts > now() - interval '1 day' ORDER BY symbol, ts DESC",
    kind: 'select',
    readOnly: true,
    reads: ['market_data'],
    functions: ['now'],
    hasWhere: true,
  },
  {
    sql: `SELECT s.symbol, l.close
            FROM symbols s
            CROSS JOIN LATERAL (SELECT close FROM bars_1m b WHERE b.symbol = s.symbol ORDER BY ts DESC LIMIT 1) l`,
    kind: 'select',
    readOnly: true,
    reads: ['symbols', 'bars_1m'],
  },
  {
    sql: `SELECT b.name, count(*) AS open_positions, sum(p.qty * p.avg_price) AS exposure
            FROM bots b JOIN positions p ON p.bot_id = b.id
           WHERE p.closed_at IS NULL
           GROUP BY b.name ORDER BY exposure DESC LIMIT 20`,
    kind: 'select',
    readOnly: true,
    reads: ['bots', 'positions'],
    functions: ['count', 'sum'],
    hasWhere: true,
    hasLimit: true,
  },
  {
    sql: `SELECT bot_id, ts, pnl,
                 sum(pnl) OVER (PARTITION BY bot_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_pnl,
                 rank() OVER w
            FROM trades
           WHERE ts >= date_trunc('day', now())
          WINDOW w AS (PARTITION BY bot_id ORDER BY pnl DESC)`,
    kind: 'select',
    readOnly: true,
    reads: ['trades'],
    functions: ['sum', 'rank', 'date_trunc', 'now'],
    hasWhere: true,
  },
  {
    sql: `SELECT symbol, side, sum(qty * price) AS notional FROM trades
           WHERE ts >= '2024-01-01' GROUP BY GROUPING SETS ((symbol, side), (symbol), ())`,
    kind: 'select',
    readOnly: true,
    reads: ['trades'],
    functions: ['sum'],
    hasWhere: true,
  },
  {
    sql: `SELECT time_bucket('5 minutes', ts) AS bucket, symbol, first(open, ts), max(high), min(low),
                 last(close, ts), sum(volume)
            FROM ticks
           WHERE symbol = ANY($1) AND ts > now() - interval '6 hours'
           GROUP BY bucket, symbol ORDER BY bucket`,
    kind: 'select',
    readOnly: true,
    reads: ['ticks'],
    functions: ['time_bucket', 'first', 'max', 'min', 'last', 'sum', 'now'],
    hasWhere: true,
  },
  {
    sql: `WITH recent AS (SELECT * FROM trades WHERE ts > now() - interval '1 hour')
          SELECT symbol, count(*) FROM recent GROUP BY symbol`,
    kind: 'select',
    readOnly: true,
    reads: ['trades'],
    functions: ['now', 'count'],
  },
  {
    sql: `WITH RECURSIVE chain AS (
            SELECT id, parent_id FROM orders WHERE id = $1
            UNION ALL
            SELECT o.id, o.parent_id FROM orders o JOIN chain c ON o.id = c.parent_id)
          SELECT * FROM chain`,
    kind: 'select',
    readOnly: true,
    reads: ['orders'],
  },
  {
    sql: `SELECT b.* FROM bots b
           WHERE EXISTS (SELECT 1 FROM risk_alerts r WHERE r.bot_id = b.id AND r.severity = 'critical')
             AND b.id IN (SELECT bot_id FROM positions WHERE qty > 0)`,
    kind: 'select',
    readOnly: true,
    reads: ['bots', 'risk_alerts', 'positions'],
    hasWhere: true,
  },
  {
    sql: `SELECT p.*, (SELECT close FROM bars_1m WHERE symbol = p.symbol ORDER BY ts DESC LIMIT 1) AS last_close
            FROM positions p LIMIT $1`,
    kind: 'select',
    readOnly: true,
    reads: ['positions', 'bars_1m'],
    hasLimit: true,
  },
  {
    // One unfiltered arm scans a whole table, so the statement as a whole "has no WHERE".
    sql: 'SELECT symbol FROM positions WHERE qty <> 0 UNION SELECT symbol FROM watchlist',
    kind: 'select',
    readOnly: true,
    reads: ['positions', 'watchlist'],
  },
  {
    sql: 'SELECT * FROM orders ORDER BY id LIMIT ALL',
    kind: 'select',
    readOnly: true,
    reads: ['orders'],
  },
  {
    sql: 'SELECT * FROM trades ORDER BY ts DESC FETCH FIRST 100 ROWS ONLY',
    kind: 'select',
    readOnly: true,
    reads: ['trades'],
    hasLimit: true,
  },
  {
    sql: 'SELECT * FROM positions WHERE qty IS DISTINCT FROM target_qty AND bot_id = $1',
    kind: 'select',
    readOnly: true,
    reads: ['positions'],
    hasWhere: true,
  },
  {
    sql: `SELECT payload->>'reason' AS reason, count(*) FROM audit_log
           WHERE payload @> '{"kind":"risk"}' GROUP BY 1`,
    kind: 'select',
    readOnly: true,
    reads: ['audit_log'],
    functions: ['count'],
    hasWhere: true,
  },
  {
    sql: `SELECT ps.bot_id, ps.equity, ps.equity / lag(ps.equity) OVER (PARTITION BY ps.bot_id ORDER BY ps.ts) - 1 AS ret
            FROM portfolio_snapshots ps
           WHERE ps.ts BETWEEN $1 AND $2`,
    kind: 'select',
    readOnly: true,
    reads: ['portfolio_snapshots'],
    functions: ['lag'],
    hasWhere: true,
  },
  {
    sql: 'SELECT analytics.sharpe_ratio(returns) FROM portfolio_snapshots WHERE bot_id = $1',
    kind: 'select',
    readOnly: true,
    reads: ['portfolio_snapshots'],
    functions: ['analytics.sharpe_ratio'],
    hasWhere: true,
  },
  {
    sql: 'SELECT * FROM generate_series(1, 10) g(i) JOIN signals s ON s.id = g.i',
    kind: 'select',
    readOnly: true,
    reads: ['signals'],
    functions: ['generate_series'],
  },
  // --- names
  {
    sql: `SELECT * FROM trading.orders o JOIN public.bots b ON b.id = o.bot_id
           WHERE o.created_at > now() - interval '1 hour'`,
    kind: 'select',
    readOnly: true,
    reads: ['trading.orders', 'public.bots'],
    functions: ['now'],
    hasWhere: true,
  },
  {
    sql: 'SELECT "Symbol", "LastPrice" FROM "Analytics"."DailyStats" WHERE "Symbol" = $1',
    kind: 'select',
    readOnly: true,
    reads: ['Analytics.DailyStats'],
    hasWhere: true,
  },
  {
    sql: "SELECT * FROM Market_Data WHERE Symbol = 'ETH-USD'",
    kind: 'select',
    readOnly: true,
    reads: ['market_data'],
    hasWhere: true,
  },
  // --- clock and session functions
  {
    sql: "SELECT random(), clock_timestamp(), now(), CURRENT_TIMESTAMP, 'now'::timestamptz, CURRENT_USER",
    kind: 'select',
    readOnly: true,
    functions: ['random', 'clock_timestamp', 'now', 'pg_catalog.now', 'pg_catalog.current_user'],
  },
  {
    sql: "SELECT * FROM bars_1m WHERE ts >= 'today'::date AND ts < TIMESTAMP 'tomorrow'",
    kind: 'select',
    readOnly: true,
    reads: ['bars_1m'],
    functions: ['pg_catalog.now'],
    hasWhere: true,
  },
  {
    sql: "SELECT * FROM ticks WHERE ts > ' Now '::timestamp with time zone - interval '5 min'",
    kind: 'select',
    readOnly: true,
    reads: ['ticks'],
    functions: ['pg_catalog.now'],
    hasWhere: true,
  },
  {
    // The literal's type comes from the column, so its text decides.
    sql: "SELECT * FROM ticks WHERE ts > 'yesterday'",
    kind: 'select',
    readOnly: true,
    reads: ['ticks'],
    functions: ['pg_catalog.now'],
    hasWhere: true,
  },
  {
    sql: "SELECT * FROM signals WHERE created_at > 'now'::text::timestamptz - interval '1 minute'",
    kind: 'select',
    readOnly: true,
    reads: ['signals'],
    functions: ['pg_catalog.now'],
    hasWhere: true,
  },
  {
    sql: "SELECT 'now'::text AS word, ts::date FROM audit_log LIMIT 1",
    kind: 'select',
    readOnly: true,
    reads: ['audit_log'],
    hasLimit: true,
  },
  {
    sql: 'SELECT LOCALTIME, CURRENT_DATE, SESSION_USER, CURRENT_ROLE',
    kind: 'select',
    readOnly: true,
    functions: ['pg_catalog.now', 'pg_catalog.current_user'],
  },
  // --- TimescaleDB administration through functions (writes there are judged by volatility)
  {
    sql: "SELECT create_hypertable('bars', by_range('ts'))",
    kind: 'select',
    readOnly: true,
    functions: ['create_hypertable', 'by_range'],
  },
  {
    sql: `SELECT create_hypertable(relation => 'public.bars_1m', dimension => by_range('ts', interval '1 day'),
                                   if_not_exists => true)`,
    kind: 'select',
    readOnly: true,
    functions: ['create_hypertable', 'by_range'],
  },
  {
    sql: "SELECT add_retention_policy('ticks', drop_after => INTERVAL '30 days')",
    kind: 'select',
    readOnly: true,
    functions: ['add_retention_policy'],
  },
  {
    sql: "SELECT pg_notify('order_events', 'filled:' || $1)",
    kind: 'select',
    readOnly: true,
    functions: ['pg_notify'],
  },
  // --- locking reads
  {
    sql: `SELECT id, payload FROM signals WHERE processed_at IS NULL
           ORDER BY created_at LIMIT 10 FOR UPDATE SKIP LOCKED`,
    kind: 'select',
    readOnly: false,
    reads: ['signals'],
    locking: true,
    hasWhere: true,
    hasLimit: true,
  },
  {
    sql: 'SELECT o.* FROM orders o JOIN bots b ON b.id = o.bot_id WHERE b.id = $1 FOR NO KEY UPDATE OF o',
    kind: 'select',
    readOnly: false,
    reads: ['orders', 'bots'],
    locking: true,
    hasWhere: true,
  },
  {
    sql: 'SELECT * FROM account_balances WHERE account_id = $1 FOR KEY SHARE',
    kind: 'select',
    readOnly: false,
    reads: ['account_balances'],
    locking: true,
    hasWhere: true,
  },
  // --- writes
  {
    sql: `INSERT INTO positions (bot_id, symbol, qty, avg_price) VALUES ($1, $2, $3, $4)
          ON CONFLICT (bot_id, symbol) DO UPDATE
            SET qty = positions.qty + EXCLUDED.qty, avg_price = EXCLUDED.avg_price, updated_at = now()`,
    kind: 'insert',
    readOnly: false,
    writes: ['positions'],
    functions: ['now'],
  },
  {
    sql: `INSERT INTO ticks (symbol, ts, price, size) VALUES
            ('BTC-USD', '2024-05-01 12:00:00+00', 64000.5, 0.25),
            ('ETH-USD', '2024-05-01 12:00:00+00', 3100.25, 2)`,
    kind: 'insert',
    readOnly: false,
    writes: ['ticks'],
  },
  {
    sql: `INSERT INTO audit_log (actor, at, day) VALUES (SESSION_USER, LOCALTIMESTAMP, CURRENT_DATE)`,
    kind: 'insert',
    readOnly: false,
    writes: ['audit_log'],
    functions: ['pg_catalog.current_user', 'pg_catalog.now'],
  },
  {
    sql: `INSERT INTO portfolio_snapshots (bot_id, ts, equity)
          SELECT bot_id, now(), sum(qty * last_price) FROM positions GROUP BY bot_id RETURNING id`,
    kind: 'insert',
    readOnly: false,
    reads: ['positions'],
    writes: ['portfolio_snapshots'],
    functions: ['now', 'sum'],
  },
  {
    sql: `UPDATE orders o SET status = 'filled', filled_at = clock_timestamp()
            FROM trades t WHERE t.order_id = o.id AND o.status = 'open'`,
    kind: 'update',
    readOnly: false,
    reads: ['trades'],
    writes: ['orders'],
    functions: ['clock_timestamp'],
    hasWhere: true,
  },
  {
    sql: 'UPDATE bots SET enabled = false',
    kind: 'update',
    readOnly: false,
    writes: ['bots'],
  },
  {
    sql: 'DELETE FROM signals s USING bots b WHERE s.bot_id = b.id AND b.enabled = false',
    kind: 'delete',
    readOnly: false,
    reads: ['bots'],
    writes: ['signals'],
    hasWhere: true,
  },
  {
    sql: 'DELETE FROM risk_alerts',
    kind: 'delete',
    readOnly: false,
    writes: ['risk_alerts'],
  },
  {
    sql: `MERGE INTO account_balances AS a
          USING (SELECT account_id, sum(amount) AS delta FROM trades WHERE settled = false GROUP BY account_id) AS d
             ON a.account_id = d.account_id
           WHEN MATCHED THEN UPDATE SET balance = a.balance + d.delta
           WHEN NOT MATCHED THEN INSERT (account_id, balance) VALUES (d.account_id, d.delta)`,
    kind: 'merge',
    readOnly: false,
    reads: ['trades'],
    writes: ['account_balances'],
    functions: ['sum'],
  },
  {
    sql: `WITH moved AS (DELETE FROM orders WHERE status = 'cancelled' AND created_at < now() - interval '7 days' RETURNING *)
          INSERT INTO orders_archive SELECT * FROM moved`,
    kind: 'insert',
    readOnly: false,
    writes: ['orders', 'orders_archive'],
    functions: ['now'],
  },
  {
    sql: 'WITH upd AS (UPDATE bots SET last_seen = now() WHERE id = $1 RETURNING id) SELECT * FROM upd',
    kind: 'select',
    readOnly: false,
    writes: ['bots'],
    functions: ['now'],
  },
  {
    sql: "SELECT * INTO TEMP recent_trades FROM trades WHERE ts > now() - interval '1 hour'",
    kind: 'ddl',
    readOnly: false,
    reads: ['trades'],
    writes: ['recent_trades'],
    functions: ['now'],
    hasWhere: true,
  },
  {
    sql: 'TRUNCATE TABLE signals, risk_alerts RESTART IDENTITY',
    kind: 'truncate',
    readOnly: false,
    writes: ['signals', 'risk_alerts'],
  },
  {
    sql: 'TRUNCATE bots CASCADE',
    kind: 'truncate',
    readOnly: false,
    writes: ['bots'],
    writesUnknown: true,
  },
  // --- COPY
  {
    sql: 'COPY ticks (symbol, ts, price, size) FROM STDIN WITH (FORMAT csv)',
    kind: 'copy_from',
    readOnly: false,
    writes: ['ticks'],
  },
  {
    sql: 'COPY (SELECT * FROM trades WHERE ts::date = current_date) TO STDOUT WITH (FORMAT csv, HEADER)',
    kind: 'copy_to',
    readOnly: true,
    reads: ['trades'],
    functions: ['pg_catalog.now'],
  },
  {
    sql: 'COPY public.audit_log TO STDOUT',
    kind: 'copy_to',
    readOnly: true,
    reads: ['public.audit_log'],
  },
  {
    // Writes a server-side file.
    sql: "COPY trades TO '/tmp/trades.csv' CSV",
    kind: 'copy_to',
    readOnly: false,
    reads: ['trades'],
  },
  // --- transactions, session, notifications
  { sql: 'BEGIN ISOLATION LEVEL REPEATABLE READ', kind: 'transaction', readOnly: false },
  { sql: 'SAVEPOINT before_rebalance', kind: 'transaction', readOnly: false },
  { sql: 'ROLLBACK TO SAVEPOINT before_rebalance', kind: 'transaction', readOnly: false },
  { sql: 'COMMIT', kind: 'transaction', readOnly: false },
  { sql: 'SET search_path TO trading, public', kind: 'set', readOnly: false },
  { sql: "SET LOCAL statement_timeout = '5s'", kind: 'set', readOnly: false },
  { sql: 'RESET ALL', kind: 'set', readOnly: false },
  { sql: 'SHOW timezone', kind: 'show', readOnly: true },
  { sql: 'LISTEN order_events', kind: 'listen', readOnly: false },
  { sql: 'UNLISTEN *', kind: 'listen', readOnly: false },
  { sql: "NOTIFY order_events, 'filled:42'", kind: 'notify', readOnly: false },
  // --- EXPLAIN
  {
    sql: "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM bars_1m WHERE symbol = 'AAPL' AND ts > now() - interval '1 day'",
    kind: 'explain',
    readOnly: true,
    reads: ['bars_1m'],
    functions: ['now'],
    hasWhere: true,
  },
  {
    sql: "EXPLAIN ANALYZE DELETE FROM ticks WHERE ts < now() - interval '90 days'",
    kind: 'explain',
    readOnly: false,
    writes: ['ticks'],
    functions: ['now'],
    hasWhere: true,
  },
  {
    // Only planned: nothing is written.
    sql: "EXPLAIN UPDATE orders SET status = 'rejected' WHERE id = 1",
    kind: 'explain',
    readOnly: true,
    reads: ['orders'],
    hasWhere: true,
  },
  {
    sql: 'EXPLAIN (ANALYZE off, COSTS) SELECT * FROM signals FOR UPDATE',
    kind: 'explain',
    readOnly: true,
    reads: ['signals'],
  },
  // --- maintenance and utilities
  { sql: 'VACUUM (VERBOSE, ANALYZE) market_data', kind: 'utility', readOnly: false },
  { sql: 'VACUUM FULL ticks', kind: 'utility', readOnly: false },
  { sql: 'LOCK TABLE account_balances IN SHARE ROW EXCLUSIVE MODE', kind: 'utility', readOnly: false },
  {
    sql: "PREPARE cancel_order(bigint) AS UPDATE orders SET status = 'cancelled' WHERE id = $1",
    kind: 'utility',
    readOnly: false,
  },
  { sql: 'EXECUTE cancel_order(42)', kind: 'utility', readOnly: false, writesUnknown: true },
  {
    sql: 'DECLARE c CURSOR FOR SELECT * FROM trades WHERE bot_id = $1',
    kind: 'utility',
    readOnly: false,
    reads: ['trades'],
  },
  {
    sql: 'REFRESH MATERIALIZED VIEW CONCURRENTLY daily_pnl',
    kind: 'utility',
    readOnly: false,
    writes: ['daily_pnl'],
  },
  {
    sql: "CALL refresh_continuous_aggregate('bars_1h', now() - interval '1 week', now())",
    kind: 'call',
    readOnly: false,
    functions: ['refresh_continuous_aggregate', 'now'],
    writesUnknown: true,
  },
  {
    sql: 'DO $$ BEGIN PERFORM pg_sleep(1); UPDATE bots SET enabled = false; END $$',
    kind: 'do',
    readOnly: false,
    writesUnknown: true,
  },
  // --- DDL
  {
    sql: `CREATE TABLE IF NOT EXISTS bars_5m (symbol text NOT NULL, ts timestamptz NOT NULL,
            open numeric(18,8), high numeric(18,8), low numeric(18,8), close numeric(18,8), volume numeric DEFAULT 0)`,
    kind: 'ddl',
    readOnly: false,
    writes: ['bars_5m'],
  },
  {
    sql: 'CREATE INDEX CONCURRENTLY IF NOT EXISTS ticks_symbol_ts_idx ON ticks (symbol, ts DESC)',
    kind: 'ddl',
    readOnly: false,
    writes: ['ticks'],
  },
  {
    sql: 'ALTER TABLE orders ADD COLUMN IF NOT EXISTS client_order_id text',
    kind: 'ddl',
    readOnly: false,
    writes: ['orders'],
  },
  {
    sql: "ALTER TABLE ticks SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol')",
    kind: 'ddl',
    readOnly: false,
    writes: ['ticks'],
  },
  {
    sql: 'ALTER TABLE bars RENAME TO bars_1m_old',
    kind: 'ddl',
    readOnly: false,
    writes: ['bars', 'bars_1m_old'],
  },
  {
    sql: 'DROP TABLE IF EXISTS staging.ticks_import',
    kind: 'ddl',
    readOnly: false,
    writes: ['staging.ticks_import'],
  },
  { sql: 'DROP SCHEMA staging CASCADE', kind: 'ddl', readOnly: false, writesUnknown: true },
  {
    sql: `CREATE OR REPLACE FUNCTION mid_price(bid numeric, ask numeric) RETURNS numeric
          LANGUAGE sql IMMUTABLE AS $$ SELECT (bid + ask) / 2 $$`,
    kind: 'ddl',
    readOnly: false,
    writesUnknown: true,
  },
  { sql: 'CREATE EXTENSION IF NOT EXISTS timescaledb', kind: 'ddl', readOnly: false, writesUnknown: true },
  { sql: "ALTER TYPE order_side ADD VALUE 'short'", kind: 'ddl', readOnly: false, writesUnknown: true },
  {
    sql: `CREATE MATERIALIZED VIEW bars_1h WITH (timescaledb.continuous) AS
          SELECT time_bucket('1 hour', ts) AS bucket, symbol, max(high) AS high
            FROM bars_1m GROUP BY bucket, symbol WITH NO DATA`,
    kind: 'ddl',
    readOnly: false,
    reads: ['bars_1m'],
    writes: ['bars_1h'],
    functions: ['time_bucket', 'max'],
  },
  {
    sql: "CREATE TABLE trades_2023 AS SELECT * FROM trades WHERE ts < '2024-01-01'",
    kind: 'ddl',
    readOnly: false,
    reads: ['trades'],
    writes: ['trades_2023'],
  },
  {
    sql: 'GRANT SELECT ON trades, orders TO analyst',
    kind: 'ddl',
    readOnly: false,
    writes: ['trades', 'orders'],
  },
  { sql: 'GRANT analyst TO alice', kind: 'ddl', readOnly: false, writesUnknown: true },
  { sql: "COMMENT ON TABLE trades IS 'one row per fill'", kind: 'ddl', readOnly: false },
  // --- several statements in one Query
  {
    sql: `BEGIN;
          UPDATE account_balances SET balance = balance - 100 WHERE account_id = 7;
          INSERT INTO audit_log (action) VALUES ('debit');
          COMMIT;`,
    kind: 'multi',
    readOnly: false,
    writes: ['account_balances', 'audit_log'],
    hasWhere: true,
    statements: 4,
  },
  {
    sql: 'SELECT count(*) FROM orders; SELECT count(*) FROM trades',
    kind: 'multi',
    readOnly: true,
    reads: ['orders', 'trades'],
    functions: ['count'],
    statements: 2,
  },
  {
    // CTE names are scoped per statement: the second statement's "recent" is a table.
    sql: 'WITH recent AS (SELECT 1) SELECT * FROM recent; SELECT * FROM recent',
    kind: 'multi',
    readOnly: true,
    reads: ['recent'],
    statements: 2,
  },
];

const garbage = [
  'SELEC * FROM trades',
  "this is not sql 'secret' 42",
  "SELECT * FROM trades WHERE price > 'unterminated",
  'UPDATE SET WHERE',
  'SELECT (((1',
];

function names(refs: readonly RelationRef[]): string[] {
  return refs.map((r) => (r.schema === undefined ? r.name : `${r.schema}.${r.name}`)).sort();
}

// A literal left in a digest: a quote, a comment, or a number that is not a $n placeholder
// or part of an identifier such as bars_1m.
const LITERAL = /'|--|\/\*|(?<![$\w])\d/;

beforeAll(async () => {
  await loadQueryParser();
});

describe('QueryAnalyzer corpus', () => {
  const analyzer = new QueryAnalyzer();

  it('has a realistic corpus', () => {
    expect(corpus.length + garbage.length).toBeGreaterThanOrEqual(60);
  });

  it.each(corpus)('$kind: $sql', (c) => {
    const a = analyzer.analyze(c.sql);
    expect(a.parsed).toBe(true);
    expect(a.kind).toBe(c.kind);
    expect(a.statementCount).toBe(c.statements ?? 1);
    expect(a.readOnly).toBe(c.readOnly);
    expect(names(a.tablesRead)).toEqual([...(c.reads ?? [])].sort());
    expect(names(a.tablesWritten)).toEqual([...(c.writes ?? [])].sort());
    expect(names(a.functions)).toEqual([...(c.functions ?? [])].sort());
    expect(a.lockingClause).toBe(c.locking ?? false);
    expect(a.writesUnknown).toBe(c.writesUnknown ?? false);
    expect(a.hasWhere).toBe(c.hasWhere ?? false);
    expect(a.hasLimit).toBe(c.hasLimit ?? false);
    expect(a.digest).not.toMatch(LITERAL);
    expect(a.digest).not.toMatch(/\s{2}|\n/);
    expect(a.fingerprint).toMatch(/^[0-9a-f]{16}$/);
  });

  it.each(garbage)('passes unparsable text through as unknown: %s', (sql) => {
    const a = analyzer.analyze(sql);
    expect(a).toMatchObject({
      parsed: false,
      kind: 'unknown',
      statementCount: 0,
      readOnly: false,
      writesUnknown: true,
      lockingClause: false,
      hasWhere: false,
      hasLimit: false,
      fingerprint: '',
    });
    expect(a.tablesRead).toEqual([]);
    expect(a.tablesWritten).toEqual([]);
    expect(a.functions).toEqual([]);
    expect(a.digest).not.toMatch(LITERAL);
    expect(a.digest.length).toBeGreaterThan(0);
  });
});

describe('QueryAnalyzer digest and fingerprint', () => {
  const analyzer = new QueryAnalyzer();

  it('gives statements that differ only in constants, spacing and comments one digest and fingerprint', () => {
    const a = analyzer.analyze("SELECT * FROM ticks WHERE symbol = 'BTC-USD' AND price > 100 LIMIT 5");
    const b = analyzer.analyze(
      "/* app=bot-7 */ SELECT *\n  FROM ticks\n WHERE symbol = 'ETH-USD' -- hot path\n AND price > 2.5 LIMIT 50",
    );
    expect(a.digest).toBe('SELECT * FROM ticks WHERE symbol = $1 AND price > $2 LIMIT $3');
    expect(b.digest).toBe(a.digest);
    expect(b.fingerprint).toBe(a.fingerprint);
  });

  it('numbers placeholders after the parameters already in the text', () => {
    const a = analyzer.analyze("CREATE TABLE t (p numeric(10,2) DEFAULT 0, s text DEFAULT 'x')");
    expect(a.digest).toBe('CREATE TABLE t (p numeric($1,$2) DEFAULT $3, s text DEFAULT $4)');
  });

  it('keeps multibyte identifiers intact while scrubbing literals after them', () => {
    const a = analyzer.analyze(`COPY "prix_€" TO '/tmp/x.csv'`);
    expect(a.digest).toBe('COPY "prix_€" TO $1');
  });

  it('treats empty and comment-only text as zero statements that write nothing', () => {
    for (const sql of ['', '   ', '-- nothing here']) {
      const a = analyzer.analyze(sql);
      expect(a).toMatchObject({
        parsed: true,
        kind: 'utility',
        statementCount: 0,
        readOnly: true,
        writesUnknown: false,
        digest: '',
      });
    }
  });

  it('truncates the digest of long unparsable text to 1000 characters', () => {
    const a = analyzer.analyze('garbage '.repeat(500));
    expect(a.parsed).toBe(false);
    expect(a.digest.length).toBeLessThanOrEqual(1000);
  });
});

describe('QueryAnalyzer operators', () => {
  const names = (sql: string) =>
    new QueryAnalyzer()
      .analyze(sql)
      .operators.map((o) => (o.schema ? `${o.schema}.${o.name}` : o.name))
      .sort();

  it('lists the operators of expressions, IN/ANY subqueries and explicit OPERATOR() syntax', () => {
    expect(names("select price from prices where symbol = 'S' || $1 and qty > 0")).toEqual(['=', '>', '||']);
    expect(names('select 1 from t where a like $1 and b in (select c from u where d <> 1)')).toEqual([
      '<>',
      '~~',
    ]);
    expect(names('select 1 from t where a = any (select c from u)')).toEqual(['=']);
    expect(names('select 1 from t where a operator(myschema.===) 1')).toEqual(['myschema.===']);
    expect(names('select count(*) from t')).toEqual([]);
  });
});

describe('QueryAnalyzer cache', () => {
  it('parses each distinct text once and serves repeats from the LRU', () => {
    const analyzer = new QueryAnalyzer();
    const sql = 'SELECT close FROM bars_1m WHERE symbol = $1 ORDER BY ts DESC LIMIT 1';
    const first = analyzer.analyze(sql);
    const second = analyzer.analyze(sql);
    expect(second).toBe(first);
    expect(analyzer.stats).toEqual({ hits: 1, misses: 1, unparsable: 0 });
    analyzer.analyze(`${sql} `); // a different text is a different entry
    expect(analyzer.stats).toEqual({ hits: 1, misses: 2, unparsable: 0 });
  });

  it('counts unparsable texts once per distinct text and caches them too', () => {
    const analyzer = new QueryAnalyzer();
    analyzer.analyze('SELEC 1');
    analyzer.analyze('SELEC 1');
    analyzer.analyze('SELEC 2');
    expect(analyzer.stats).toEqual({ hits: 1, misses: 2, unparsable: 2 });
  });

  it('evicts the least recently used text beyond maxEntries', () => {
    const analyzer = new QueryAnalyzer(2);
    analyzer.analyze('SELECT 1');
    analyzer.analyze('SELECT 2');
    analyzer.analyze('SELECT 1'); // hit: SELECT 2 is now the oldest
    analyzer.analyze('SELECT 3'); // evicts SELECT 2
    analyzer.analyze('SELECT 1'); // still cached
    analyzer.analyze('SELECT 2'); // parsed again
    expect(analyzer.stats).toEqual({ hits: 2, misses: 4, unparsable: 0 });
  });

  it('does not keep a text larger than the whole text budget', () => {
    const analyzer = new QueryAnalyzer(10, 100);
    const big = `SELECT ${'1, '.repeat(100)}1`;
    analyzer.analyze(big);
    analyzer.analyze(big);
    expect(analyzer.stats).toEqual({ hits: 0, misses: 2, unparsable: 0 });
  });

  it('hands out frozen analyses', () => {
    const a = new QueryAnalyzer().analyze('SELECT * FROM orders o JOIN trades t ON t.order_id = o.id');
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a.tablesRead)).toBe(true);
    expect(Object.isFrozen(a.tablesRead[0])).toBe(true);
  });
});

describe('literal shapes', () => {
  // The result cache judges a simple-protocol text by its literal shape (parsed once for every
  // text that differs only in values): that is sound only if the shape reads, writes, calls and
  // locks exactly what the text does.
  const analyzer = new QueryAnalyzer();
  const shaped = corpus.filter((c) => shapeWithLiterals(c.sql) !== undefined);

  it('covers most of the corpus', () => {
    expect(shaped.length).toBeGreaterThanOrEqual(20);
  });

  it.each(shaped)('judges $sql like its shape', (c) => {
    const text = analyzer.analyze(c.sql);
    const shape = analyzer.analyze(shapeWithLiterals(c.sql)!.shape);
    // A shape the parser rejects (interval $1) is never used: the text is analyzed instead.
    if (!shape.parsed) return;
    expect(shape.kind).toBe(text.kind);
    expect(shape.readOnly).toBe(text.readOnly);
    expect(names(shape.tablesRead)).toEqual(names(text.tablesRead));
    expect(names(shape.tablesWritten)).toEqual(names(text.tablesWritten));
    expect(names(shape.functions)).toEqual(names(text.functions));
    expect(shape.lockingClause).toBe(text.lockingClause);
    expect(shape.writesUnknown).toBe(text.writesUnknown);
    expect(shape.operators).toEqual(text.operators);
  });
});

describe('QueryAnalyzer timings', () => {
  // Reported, not asserted (STYLE.md: results are reports, not test conditions).
  it('reports the median miss and the hit-path cost over the corpus', () => {
    const texts = [...corpus.map((c) => c.sql), ...garbage];
    // One-entry analyzers made up front, so each timed call is a miss and allocates no cache.
    const fresh = Array.from({ length: 32 }, () => new QueryAnalyzer(1));
    const perText: number[] = [];
    let n = 0;
    for (const sql of texts) {
      const runs: number[] = [];
      for (let i = 0; i < 25; i++) {
        const analyzer = fresh[n++ % fresh.length]!;
        const t0 = performance.now();
        analyzer.analyze(sql);
        runs.push(performance.now() - t0);
      }
      perText.push(median(runs.slice(5)));
    }
    expect(fresh.reduce((sum, a) => sum + a.stats.hits, 0)).toBe(0);
    const warm = new QueryAnalyzer();
    for (const sql of texts) warm.analyze(sql);
    const rounds = 10_000;
    const t0 = performance.now();
    let sink = 0;
    for (let r = 0; r < rounds; r++) {
      for (const sql of texts) sink += warm.analyze(sql).statementCount;
    }
    const hitNs = ((performance.now() - t0) * 1e6) / (rounds * texts.length);
    console.log(
      `query analysis over ${texts.length} texts: median miss ${(median(perText) * 1000).toFixed(1)} µs, ` +
        `p90 miss ${(quantile(perText, 0.9) * 1000).toFixed(1)} µs, hit ${hitNs.toFixed(0)} ns (sink ${sink > 0})`,
    );
    expect(warm.stats.hits).toBe(rounds * texts.length);
  });
});

function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}
