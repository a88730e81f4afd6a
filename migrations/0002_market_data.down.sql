-- The timescaledb extension, when the up file created it, stays: extensions in other schemas or an
-- operator may rely on it, and dropping it needs more than this migration's rights.
DROP MATERIALIZED VIEW bars_1d;
DROP TABLE ticks;
DROP TABLE bars_1m;
-- sluice:if partitions
DROP FUNCTION ensure_monthly_partitions(regclass, integer, integer);
-- sluice:end
DROP TABLE prices;
DROP TABLE symbols;
