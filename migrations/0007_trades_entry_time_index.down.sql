-- sluice:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS trades_entry_time_symbol_idx;
