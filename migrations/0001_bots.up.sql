-- Bots (one row per trading bot, seed 002's trading.bots) and what later migrations share: the
-- order side type and the updated_at trigger function.
CREATE TYPE bot_status AS ENUM ('active', 'paused', 'stopped', 'error');
CREATE TYPE order_side AS ENUM ('buy', 'sell');

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

CREATE TABLE bots (
  bot_id          text PRIMARY KEY CHECK (bot_id ~ '^[a-z0-9_]+$'),
  bot_name        text NOT NULL,
  strategy        text NOT NULL,
  status          bot_status NOT NULL DEFAULT 'active',
  initial_capital numeric(18, 2) NOT NULL CHECK (initial_capital > 0),
  current_equity  numeric(18, 2) NOT NULL CHECK (current_equity >= 0),
  config          jsonb NOT NULL DEFAULT '{}',
  last_heartbeat  timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- "Which active bots stopped sending heartbeats": only active bots are ever asked about.
CREATE INDEX bots_active_heartbeat_idx ON bots (last_heartbeat) WHERE status = 'active';

CREATE TRIGGER bots_set_updated_at BEFORE UPDATE ON bots
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();
