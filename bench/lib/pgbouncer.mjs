// Owns the PgBouncer a benchmark compares against: Debian's /usr/sbin/pgbouncer (or $PGBOUNCER_BIN),
// transaction mode, configured in a temp dir, run in the foreground as `postgres` so we hold its PID.

import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { onCleanup } from './cleanup.mjs';
import { postgresIds } from './postgres.mjs';
import { freePort, run, spawnLogged, stopProcess, waitUntilServing } from './processes.mjs';

export const PGBOUNCER_BIN = process.env.PGBOUNCER_BIN || '/usr/sbin/pgbouncer';

/** "PgBouncer 1.18.0", or undefined when no binary is installed. */
export async function pgbouncerVersion() {
  if (!existsSync(PGBOUNCER_BIN)) return undefined;
  const r = await run(PGBOUNCER_BIN, ['--version']);
  return r.code === 0 ? r.stdout.split('\n')[0].trim() : undefined;
}

/**
 * Starts PgBouncer in front of `upstream` ({ host, port, user, password }). Clients log in with
 * trust; PgBouncer logs into PostgreSQL with the plaintext password from its auth_file, which is
 * what lets it answer the server's SCRAM challenge. Resolves { host, port, pid, logFile, stop }.
 */
export async function startPgbouncer(upstream, { poolSize = 20, maxClientConn = 1000 } = {}) {
  const root = userInfo().uid === 0;
  const dir = await mkdtemp(path.join(tmpdir(), 'sluice-bench-pgbouncer-'));
  onCleanup('pgbouncer dir', () => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const ini = path.join(dir, 'pgbouncer.ini');
  const userlist = path.join(dir, 'userlist.txt');
  const logFile = path.join(dir, 'pgbouncer.log');
  const quote = (s) => `"${String(s).replaceAll('"', '""')}"`;
  await writeFile(userlist, `${quote(upstream.user)} ${quote(upstream.password)}\n`, { mode: 0o600 });
  await writeFile(
    ini,
    [
      '[databases]',
      `* = host=${upstream.host} port=${upstream.port}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${userlist}`,
      'pool_mode = transaction',
      `default_pool_size = ${poolSize}`,
      `max_client_conn = ${maxClientConn}`,
      `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
      // PgBouncer writes its own log to stderr, which goes to logFile.
      'logfile =',
      'ignore_startup_parameters = extra_float_digits',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  // PgBouncer refuses to run as root: -u makes it switch to `postgres`, which must read its files.
  const args = [];
  if (root) {
    const ids = await postgresIds();
    for (const f of [dir, ini, userlist]) await chown(f, ids.uid, ids.gid);
    await chmod(dir, 0o700);
    args.push('-u', 'postgres');
  }
  args.push(ini);
  const child = spawnLogged(PGBOUNCER_BIN, args, { logFile });
  // SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for clients to leave).
  const stop = () => stopProcess(child, { signal: 'SIGTERM', graceMs: 10_000 });
  onCleanup('pgbouncer', stop);
  const conn = { host: '127.0.0.1', port, user: upstream.user, password: '' };
  const problem = await waitUntilServing(conn, { child, timeoutMs: 20_000, logFile });
  if (problem) {
    await stop();
    throw new Error(`PgBouncer ${problem}`);
  }
  return { ...conn, pid: child.pid, child, logFile, stop };
}
