-- sluice:no-transaction
-- seed 003's idx_trades_timestamp_symbol, built without blocking the bots' writes to trades
-- (CONCURRENTLY cannot run in a transaction; IF NOT EXISTS makes a retry after a failure safe,
-- but an invalid index left by a failed build must be dropped by hand first).
CREATE INDEX CONCURRENTLY IF NOT EXISTS trades_entry_time_symbol_idx ON trades (entry_time, symbol);
