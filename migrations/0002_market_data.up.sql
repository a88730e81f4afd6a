-- Market data: symbols, the latest price per symbol, 1-minute bars, ticks and daily bars.
-- bars_1m and ticks are time-series tables: TimescaleDB hypertables with compression and retention
-- policies when timescaledb is usable, else native monthly range partitions (the runner picks the
-- section; see README "Migrations").

CREATE TABLE symbols (
  symbol      text PRIMARY KEY,
  name        text NOT NULL,
  asset_class text NOT NULL CHECK (asset_class IN ('equity', 'crypto', 'fx', 'future', 'option')),
  exchange    text NOT NULL,
  currency    char(3) NOT NULL DEFAULT 'USD',
  active      boolean NOT NULL DEFAULT true,
  listed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX symbols_class_exchange_idx ON symbols (asset_class, exchange) WHERE active;

-- One row per symbol, overwritten by the feed: what "latest price" dashboards read.
CREATE TABLE prices (
  symbol text PRIMARY KEY REFERENCES symbols (symbol) ON DELETE CASCADE,
  price  numeric(18, 8) NOT NULL CHECK (price > 0),
  bid    numeric(18, 8) CHECK (bid > 0),
  ask    numeric(18, 8) CHECK (ask > 0),
  ts     timestamptz NOT NULL,
  CHECK (bid IS NULL OR ask IS NULL OR bid <= ask)
);

-- sluice:if timescaledb
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE bars_1m (
  symbol      text NOT NULL,
  ts          timestamptz NOT NULL,
  open        numeric(18, 8) NOT NULL CHECK (open > 0),
  high        numeric(18, 8) NOT NULL,
  low         numeric(18, 8) NOT NULL CHECK (low > 0),
  close       numeric(18, 8) NOT NULL CHECK (close > 0),
  volume      numeric(24, 8) NOT NULL DEFAULT 0 CHECK (volume >= 0),
  vwap        numeric(18, 8),
  trade_count integer NOT NULL DEFAULT 0 CHECK (trade_count >= 0),
  PRIMARY KEY (symbol, ts),
  CHECK (high >= low AND high >= open AND high >= close AND low <= open AND low <= close)
);
SELECT create_hypertable('bars_1m', 'ts', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
ALTER TABLE bars_1m SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                         timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('bars_1m', INTERVAL '7 days');
SELECT add_retention_policy('bars_1m', INTERVAL '2 years');

CREATE TABLE ticks (
  symbol   text NOT NULL,
  ts       timestamptz NOT NULL,
  price    numeric(18, 8) NOT NULL CHECK (price > 0),
  size     numeric(24, 8) NOT NULL CHECK (size > 0),
  bid      numeric(18, 8),
  ask      numeric(18, 8),
  exchange text NOT NULL
);
SELECT create_hypertable('ticks', 'ts', chunk_time_interval => INTERVAL '1 hour', create_default_indexes => false);
ALTER TABLE ticks SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                       timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('ticks', INTERVAL '1 day');
SELECT add_retention_policy('ticks', INTERVAL '30 days');
-- sluice:else
-- Creates the missing monthly partitions (UTC months) of a range-partitioned table from
-- months_back before the current month to months_ahead after it; returns how many it created.
-- Run it monthly (cron, pg_cron): rows past the last partition land in the default partition,
-- and a month whose rows already sit in the default partition cannot be split out by it.
CREATE FUNCTION ensure_monthly_partitions(parent regclass, months_back integer DEFAULT 3,
                                          months_ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  nsp     name;
  rel     name;
  month0  timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
  lo      timestamptz;
  hi      timestamptz;
  part    text;
  created integer := 0;
BEGIN
  SELECT n.nspname, c.relname INTO nsp, rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
  FOR i IN -months_back .. months_ahead LOOP
    lo := (month0 + make_interval(months => i)) AT TIME ZONE 'UTC';
    hi := (month0 + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
    part := rel || '_p' || to_char(month0 + make_interval(months => i), 'YYYYMM');
    IF to_regclass(format('%I.%I', nsp, part)) IS NULL THEN
      EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                     nsp, part, nsp, rel, lo, hi);
      created := created + 1;
    END IF;
  END LOOP;
  RETURN created;
END
$$;

CREATE TABLE bars_1m (
  symbol      text NOT NULL,
  ts          timestamptz NOT NULL,
  open        numeric(18, 8) NOT NULL CHECK (open > 0),
  high        numeric(18, 8) NOT NULL,
  low         numeric(18, 8) NOT NULL CHECK (low > 0),
  close       numeric(18, 8) NOT NULL CHECK (close > 0),
  volume      numeric(24, 8) NOT NULL DEFAULT 0 CHECK (volume >= 0),
  vwap        numeric(18, 8),
  trade_count integer NOT NULL DEFAULT 0 CHECK (trade_count >= 0),
  PRIMARY KEY (symbol, ts),
  CHECK (high >= low AND high >= open AND high >= close AND low <= open AND low <= close)
) PARTITION BY RANGE (ts);
CREATE TABLE bars_1m_default PARTITION OF bars_1m DEFAULT;
SELECT ensure_monthly_partitions('bars_1m', 3, 3);

CREATE TABLE ticks (
  symbol   text NOT NULL,
  ts       timestamptz NOT NULL,
  price    numeric(18, 8) NOT NULL CHECK (price > 0),
  size     numeric(24, 8) NOT NULL CHECK (size > 0),
  bid      numeric(18, 8),
  ask      numeric(18, 8),
  exchange text NOT NULL
) PARTITION BY RANGE (ts);
CREATE TABLE ticks_default PARTITION OF ticks DEFAULT;
SELECT ensure_monthly_partitions('ticks', 3, 3);

DO $$
BEGIN
  RAISE NOTICE 'timescaledb is not usable here: bars_1m and ticks use native monthly range partitions '
    '(3 months back, 3 ahead, plus a default partition; run ensure_monthly_partitions() monthly); '
    'no compression or retention policies, bars_1d is a plain materialized view';
END
$$;
-- sluice:end

-- Time-range scans across symbols ("everything in the last 5 minutes"); the primary key serves
-- per-symbol ranges.
CREATE INDEX bars_1m_ts_idx ON bars_1m (ts DESC);
CREATE INDEX ticks_symbol_ts_idx ON ticks (symbol, ts DESC);

-- Daily bars from the 1-minute bars.
-- sluice:if timescaledb
CREATE MATERIALIZED VIEW bars_1d WITH (timescaledb.continuous) AS
SELECT symbol,
       time_bucket(INTERVAL '1 day', ts) AS day,
       first(open, ts)  AS open,
       max(high)        AS high,
       min(low)         AS low,
       last(close, ts)  AS close,
       sum(volume)      AS volume,
       sum(trade_count) AS trade_count
  FROM bars_1m
 GROUP BY symbol, time_bucket(INTERVAL '1 day', ts)
  WITH NO DATA;
SELECT add_continuous_aggregate_policy('bars_1d', start_offset => INTERVAL '3 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
-- sluice:else
-- Refresh with REFRESH MATERIALIZED VIEW CONCURRENTLY bars_1d (`sluice seed` does after loading).
CREATE MATERIALIZED VIEW bars_1d AS
SELECT symbol,
       date_trunc('day', ts, 'UTC')                AS day,
       (array_agg(open ORDER BY ts))[1]            AS open,
       max(high)                                   AS high,
       min(low)                                    AS low,
       (array_agg(close ORDER BY ts DESC))[1]      AS close,
       sum(volume)                                 AS volume,
       sum(trade_count)                            AS trade_count
  FROM bars_1m
 GROUP BY symbol, date_trunc('day', ts, 'UTC');
CREATE UNIQUE INDEX bars_1d_symbol_day_idx ON bars_1d (symbol, day);
-- sluice:end
