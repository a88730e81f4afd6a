// LISTEN under transaction pooling when the listening server connection dies, against real
// PostgreSQL: the listening clients are told (08006, FATAL) instead of silently missing
// notifications for ever, other clients are untouched, and listening again works.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('lhub');
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2 });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
});

async function connect(): Promise<{ client: pg.Client; errors: Error[]; notes: string[] }> {
  const client = new pg.Client({ connectionString: proxy.url(db) });
  const errors: Error[] = [];
  const notes: string[] = [];
  client.on('error', (err) => errors.push(err));
  client.on('notification', (n) => notes.push(n.payload ?? ''));
  await client.connect();
  return { client, errors, notes };
}

async function until(check: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return check();
}

describe('the listen hub losing its server', () => {
  it('closes the listening clients with 08006, spares the others, and a new LISTEN works', async () => {
    const direct = await directClient(db);
    const listener = await connect();
    const bystander = await connect();
    await listener.client.query('LISTEN ticks');
    await direct.query(`NOTIFY ticks, 'one'`);
    expect(await until(() => listener.notes.includes('one'))).toBe(true);

    const killed = await direct.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = $1 AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()`,
      [db],
    );
    expect(killed.rowCount).toBe(1);
    expect(await until(() => listener.errors.length > 0)).toBe(true);
    expect((listener.errors[0] as Error & { code?: string }).code).toBe('08006');
    expect(listener.errors[0]?.message).toMatch(/notifications may have been missed/);

    // A client that was not listening goes on as before.
    expect((await bystander.client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect(bystander.errors).toEqual([]);

    // Listening again (on a fresh hub server) delivers again.
    const again = await connect();
    await again.client.query('LISTEN ticks');
    await direct.query(`NOTIFY ticks, 'two'`);
    expect(await until(() => again.notes.includes('two'))).toBe(true);

    await again.client.end();
    await bystander.client.end();
    await listener.client.end().catch(() => {});
    await direct.end();
  });
});
