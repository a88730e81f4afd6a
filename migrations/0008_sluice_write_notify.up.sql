-- Lets Sluice's result cache see writes that bypass it (a market-data feed or a risk service
-- writing straight to PostgreSQL): a statement-level trigger NOTIFYs channel `sluice_writes` with
-- the table's "schema.name" when the transaction commits, and every Sluice with the cache on
-- LISTENs there and orphans what it cached from that table (`cache_notify_writes`).
--
-- Writes through Sluice are left out: Sluice's server connections carry the startup parameter
-- `sluice.origin`, and Sluice has already invalidated those writes itself, per row where it can.
-- Sluice's catalog reader knows this trigger writes nothing, so it does not make the table's
-- writes invalidate the whole database as other user triggers do.
CREATE OR REPLACE FUNCTION sluice_notify_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('sluice.origin', true), '') = '' THEN
    PERFORM pg_notify('sluice_writes', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
  END IF;
  RETURN NULL;
END
$$;

-- Installs the trigger on one more table: SELECT sluice_watch_writes('my_table');
CREATE OR REPLACE FUNCTION sluice_watch_writes(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS sluice_write_notify ON %s', target);
  EXECUTE format(
    'CREATE TRIGGER sluice_write_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
    'FOR EACH STATEMENT EXECUTE FUNCTION sluice_notify_write()', target);
END
$$;

CREATE OR REPLACE FUNCTION sluice_unwatch_writes(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS sluice_write_notify ON %s', target);
END
$$;

-- The tables the bots read and something other than the bots may write. A table where the
-- trigger cannot go (missing, or a storage that refuses statement triggers) is skipped with a NOTICE.
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['symbols', 'prices', 'bars_1m', 'ticks', 'signals', 'news_articles',
                           'orders', 'trades', 'positions', 'account_balances', 'risk_alerts'] LOOP
    BEGIN
      PERFORM sluice_watch_writes(t::regclass);
    EXCEPTION WHEN undefined_table OR feature_not_supported OR wrong_object_type THEN
      RAISE NOTICE 'sluice_write_notify not installed on %: %', t, SQLERRM;
    END;
  END LOOP;
END
$$;
