// Owns applying the package's pending migrations when Sluice starts (migrate_on_start), so
// `npm start` serves the trading schema on a fresh embedded cluster.
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { logger } from '../observe/logger.js';
import { Migrator } from './runner.js';

/** migrations/ next to dist/ (this file is dist/migrate/on-start.js, or src/migrate/ in tests). */
export const PACKAGE_MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));

export async function migrateOnStart(upstreamUrl: string, dir = PACKAGE_MIGRATIONS_DIR): Promise<void> {
  const log = logger.child({ component: 'migrate' });
  const client = new pg.Client({ connectionString: upstreamUrl, application_name: 'sluice migrate' });
  client.on('error', () => {});
  await client.connect();
  try {
    const result = await new Migrator(client, { dir, log: (line) => log.info(line) }).up();
    if (result.steps.length > 0) {
      log.info({ from: result.from, to: result.to }, 'migrations applied at start');
    }
  } finally {
    await client.end().catch(() => {});
  }
}
