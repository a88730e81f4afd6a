// Owns integration tests' direct access to the shared embedded PostgreSQL: per-file databases,
// roles with a chosen password encryption, and clients that bypass the proxy.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { MD5_AUTH_ROLE } from '../../../src/embedded/embedded-postgres.js';
import type { PgInfo } from '../global-setup.js';

export type PasswordMethod = 'scram-sha-256' | 'md5';

/** The embedded server started by global-setup.ts. */
export function pgInfo(): PgInfo {
  return inject('pg');
}

/** A connected client straight to PostgreSQL, as the superuser unless `as` says otherwise. */
export async function directClient(
  database: string,
  as?: { user: string; password: string },
): Promise<pg.Client> {
  const { host, port, user, password } = pgInfo();
  const client = new pg.Client({
    host,
    port,
    database,
    user: as?.user ?? user,
    password: as?.password ?? password,
  });
  // An idle client whose backend is terminated (dropTestDatabase) emits 'error'; unhandled, that
  // would crash the worker. The next query on it still rejects, so nothing is hidden.
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Creates `<prefix>_<random>` (lowercase, at most 63 bytes) and returns its name. */
export async function createTestDatabase(prefix: string): Promise<string> {
  const base = prefix
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .slice(0, 50);
  const name = `${base}_${randomBytes(5).toString('hex')}`;
  await asSuperuser((c) => c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}`));
  return name;
}

/** Terminates the database's backends, then drops it. */
export async function dropTestDatabase(name: string): Promise<void> {
  await asSuperuser(async (c) => {
    await c.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [name],
    );
    // WITH (FORCE) covers a client that reconnected between the two statements.
    await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`);
  });
}

/**
 * Creates a LOGIN role whose password is stored with `method`. md5 roles are also made members
 * of MD5_AUTH_ROLE, the only roles pg_hba lets log in with md5; all others must use SCRAM.
 * Roles are cluster-wide: give each test file its own names.
 */
export async function createRole(name: string, password: string, method: PasswordMethod): Promise<void> {
  await asSuperuser(async (c) => {
    await c.query(`SET password_encryption = ${c.escapeLiteral(method)}`);
    await c.query(`CREATE ROLE ${c.escapeIdentifier(name)} LOGIN PASSWORD ${c.escapeLiteral(password)}`);
    if (method === 'md5') await c.query(`GRANT ${MD5_AUTH_ROLE} TO ${c.escapeIdentifier(name)}`);
  });
}

/** Drops a role made by createRole (after dropping the databases holding its objects). */
export async function dropRole(name: string): Promise<void> {
  await asSuperuser((c) => c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(name)}`));
}

async function asSuperuser<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await directClient('postgres');
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
