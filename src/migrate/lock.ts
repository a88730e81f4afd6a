// Owns the advisory lock that keeps two migrators (CLI runs, Sluice instances starting) from
// migrating the same database at once.
import type pg from 'pg';

/**
 * One session-level advisory lock per database (0x736c7569636501: "sluice" in ASCII, then 01). Advisory locks are keyed
 * by database, so migrating two databases of one cluster in parallel is fine. Passed as text: it does
 * not fit a double exactly.
 */
export const MIGRATION_LOCK_KEY = '32488873856820481';

const LOCK_POLL_MS = 200;

export class MigrationLockTimeout extends Error {
  constructor(holder: string, timeoutMs: number) {
    super(`another migrator (${holder}) held the migration lock for more than ${timeoutMs / 1000} s`);
    this.name = 'MigrationLockTimeout';
  }
}

/**
 * Takes the lock, waiting up to timeoutMs for a holder to finish (its work is then already done,
 * and the caller reads the applied versions after this returns). Returns the release function.
 */
export async function acquireMigrationLock(
  client: pg.Client,
  timeoutMs: number,
  onWait: (holder: string) => void,
): Promise<() => Promise<void>> {
  const release = async () => {
    await client.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]);
  };
  const tried = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [
    MIGRATION_LOCK_KEY,
  ]);
  if (tried.rows[0]?.ok) return release;
  const holder = await describeHolder(client);
  onWait(holder);
  // Polled, not pg_advisory_lock(): a backend blocked in that statement holds a snapshot, and the
  // holder's CREATE INDEX CONCURRENTLY waits for every older snapshot to go: a deadlock (40P01).
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
    const again = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [
      MIGRATION_LOCK_KEY,
    ]);
    if (again.rows[0]?.ok) break;
    if (Date.now() >= deadline) throw new MigrationLockTimeout(holder, timeoutMs);
  }
  return release;
}

async function describeHolder(client: pg.Client): Promise<string> {
  const key = BigInt(MIGRATION_LOCK_KEY);
  const { rows } = await client.query<{ pid: number; app: string | null; addr: string | null }>(
    `SELECT l.pid, a.application_name AS app, a.client_addr::text AS addr
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 1`,
    [String(key >> 32n), String(key & 0xffffffffn)],
  );
  const r = rows[0];
  if (!r) return 'unknown backend';
  return `backend pid ${r.pid}${r.app ? `, ${r.app}` : ''}${r.addr ? ` from ${r.addr}` : ''}`;
}
