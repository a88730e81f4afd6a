DROP TABLE bots;
DROP FUNCTION set_updated_at();
DROP TYPE order_side;
DROP TYPE bot_status;
