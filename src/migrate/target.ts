// Owns finding the database `sluice migrate` and `sluice seed` work on: --upstream, else the
// embedded PostgreSQL of `npm start` (the running one, or started for the duration of the command).
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { defaultEmbeddedDataDir } from '../app.js';
import { type RunningPostgres, startEmbeddedPostgres } from '../embedded/embedded-postgres.js';

export interface Target {
  client: pg.Client;
  /** For messages: host:port/database, without the password. */
  label: string;
  close(): Promise<void>;
}

/** The embedded defaults `startSluice` uses (user and password postgres). */
const EMBEDDED_USER = 'postgres';
const EMBEDDED_PASSWORD = 'postgres';

export async function openTarget(upstream: string | undefined, applicationName: string): Promise<Target> {
  let embedded: RunningPostgres | undefined;
  let url = upstream;
  if (url === undefined) {
    const dataDir = defaultEmbeddedDataDir();
    const port = await runningPort(dataDir);
    if (port !== undefined) {
      url = `postgres://${EMBEDDED_USER}:${EMBEDDED_PASSWORD}@127.0.0.1:${port}/postgres`;
    } else {
      embedded = await startEmbeddedPostgres({ persistent: true, dataDir });
      url = embedded.url;
    }
  }
  const client = new pg.Client({ connectionString: url, application_name: applicationName });
  client.on('error', () => {}); // a dead connection surfaces from the next query
  try {
    await client.connect();
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
  const u = new URL(url);
  return {
    client,
    label: `${u.hostname}:${u.port || 5432}/${decodeURIComponent(u.pathname.slice(1)) || 'postgres'}${embedded || upstream === undefined ? ' (embedded)' : ''}`,
    async close() {
      await client.end().catch(() => {});
      await embedded?.stop();
    },
  };
}

/** The port of a server already running on dataDir (postmaster.pid line 4), if its process lives. */
async function runningPort(dataDir: string): Promise<number | undefined> {
  let lines: string[];
  try {
    lines = (await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n');
  } catch {
    return undefined;
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port) || port <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: alive but another user's (the server runs as `postgres` when we are root).
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  return port;
}
