DROP TABLE portfolio_snapshots;
DROP TABLE account_balances;
DROP TABLE positions;
DROP TYPE position_status;
