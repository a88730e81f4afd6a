DROP TABLE trades;
DROP TABLE orders;
DROP TYPE trade_status;
DROP TYPE order_status;
DROP TYPE order_type;
