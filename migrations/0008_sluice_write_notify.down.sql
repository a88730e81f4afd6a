DO $$
DECLARE
  t regclass;
BEGIN
  FOR t IN SELECT tgrelid::regclass FROM pg_trigger WHERE tgname = 'sluice_write_notify' LOOP
    EXECUTE format('DROP TRIGGER sluice_write_notify ON %s', t);
  END LOOP;
END
$$;
DROP FUNCTION IF EXISTS sluice_unwatch_writes(regclass);
DROP FUNCTION IF EXISTS sluice_watch_writes(regclass);
DROP FUNCTION IF EXISTS sluice_notify_write();
