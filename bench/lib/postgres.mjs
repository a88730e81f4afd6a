// Owns the PostgreSQL server a benchmark measures: started through the project's own
// startEmbeddedPostgres (built to dist/embedded/embedded-postgres.js), stopped on cleanup.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { onCleanup } from './cleanup.mjs';
import { isAlive, psql, run, stopProcess } from './processes.mjs';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EMBEDDED_MODULE = path.join(REPO_ROOT, 'dist/embedded/embedded-postgres.js');

/**
 * Starts PostgreSQL through startEmbeddedPostgres and registers its shutdown. Resolves
 * { host, port, user, password, dataDir, pid, startedBy, stop }.
 */
export async function startPostgres({ maxConnections = 300 } = {}) {
  if (!existsSync(EMBEDDED_MODULE)) {
    throw new Error('dist/embedded/embedded-postgres.js not found: run `npm run build` (or `npm ci`) first');
  }
  // The project's pino logger reads SLUICE_LOG_LEVEL once, when first imported, and writes to
  // stdout, where this bench prints its Markdown: quiet it for this process only (the Sluice child
  // gets the caller's environment unchanged).
  const level = process.env.SLUICE_LOG_LEVEL;
  process.env.SLUICE_LOG_LEVEL = 'warn';
  let startEmbeddedPostgres;
  try {
    ({ startEmbeddedPostgres } = await import(pathToFileURL(EMBEDDED_MODULE).href));
  } finally {
    if (level === undefined) delete process.env.SLUICE_LOG_LEVEL;
    else process.env.SLUICE_LOG_LEVEL = level;
  }
  // fast: false — default durability (fsync, synchronous_commit, full_page_writes on), as a
  // production server runs; TPC-B tps is bound by commit flushes and would mean little otherwise.
  // No port: it picks a free one and retries if another process takes it first.
  const pg = await startEmbeddedPostgres({ fast: false, maxConnections, persistent: false });
  const stop = once(async () => {
    try {
      await pg.stop();
    } finally {
      // Whatever stop() did, the postmaster must be gone: SIGINT is PostgreSQL's fast shutdown.
      if (pg.pid && isAlive(pg.pid)) await stopProcess(pg.pid, { signal: 'SIGINT', graceMs: 15_000 });
    }
  });
  onCleanup('postgres', stop);
  return {
    host: pg.host,
    port: pg.port,
    user: pg.user,
    password: pg.password,
    dataDir: pg.dataDir,
    pid: pg.pid,
    startedBy: 'startEmbeddedPostgres (dist/embedded/embedded-postgres.js), fast: false',
    stop,
  };
}

/** uid/gid of the `postgres` user, which PostgreSQL and PgBouncer run as when we are root. */
export async function postgresIds() {
  const uid = await run('id', ['-u', 'postgres']);
  const gid = await run('id', ['-g', 'postgres']);
  if (uid.code !== 0 || gid.code !== 0) throw new Error('running as root but there is no `postgres` user');
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** The server's version string, e.g. "17.10". */
export async function serverVersion(conn) {
  const r = await psql(conn, 'show server_version');
  return r.code === 0 ? r.stdout.trim() : 'unknown';
}

function once(fn) {
  let p;
  return () => {
    p ??= fn();
    return p;
  };
}
