// Client limits through real sockets and drivers: auth_timeout (a silent client and one sending its
// startup one byte a second are dropped), max_user_client_connections and max_db_client_connections
// (53300), client_idle_timeout (57P05) and idle_transaction_timeout (25P03: the write is rolled
// back and the same server connection serves the next client).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  firstError,
  rawConnect,
  readUntilClose,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let otherDb: string;

beforeAll(async () => {
  db = await createTestDatabase('limits');
  otherDb = await createTestDatabase('limits_other');
  const c = await directClient(db);
  await c.query('CREATE TABLE ledger (id int PRIMARY KEY, note text)');
  await c.end();
});

afterAll(async () => {
  await dropTestDatabase(db);
  await dropTestDatabase(otherDb);
});

/** A pg client through the proxy whose asynchronous errors (a FATAL while idle) are collected. */
async function client(proxy: TestProxy, database = db): Promise<{ c: pg.Client; errors: Error[] }> {
  const errors: Error[] = [];
  const c = new pg.Client({ connectionString: proxy.url(database) });
  c.on('error', (err) => errors.push(err));
  await c.connect();
  return { c, errors };
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

describe('auth_timeout', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ auth: 'scram-sha-256', auth_timeout: 2 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('drops a client that connects and sends nothing within 2 s of the timeout', async () => {
    const socket = await rawConnect(proxy.port);
    const started = Date.now();
    const bytes = await readUntilClose(socket, 8000);
    const elapsed = Date.now() - started;
    expect(firstError(bytes)).toMatchObject({ S: 'FATAL', M: 'canceling authentication due to timeout' });
    expect(elapsed).toBeGreaterThanOrEqual(1900);
    expect(elapsed).toBeLessThan(4000);
  });

  it('drops a client that sends its startup packet one byte a second', async () => {
    const socket = await rawConnect(proxy.port);
    const packet = startupMessage({ user: pgInfo().user, database: db });
    const started = Date.now();
    let sent = 0;
    const drip = setInterval(() => {
      if (sent < packet.length && !socket.destroyed) socket.write(packet.subarray(sent, ++sent));
    }, 1000);
    try {
      const bytes = await readUntilClose(socket, 8000);
      const elapsed = Date.now() - started;
      // Still mid-packet when it was dropped: a byte a second never gets there in 2 s.
      expect(sent).toBeLessThan(packet.length);
      expect(firstError(bytes)).toMatchObject({ S: 'FATAL', M: 'canceling authentication due to timeout' });
      expect(elapsed).toBeLessThan(4000);
    } finally {
      clearInterval(drip);
    }
  });

  it('keeps serving logged-in clients meanwhile', async () => {
    const { c } = await client(proxy);
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await c.end();
  });
});

describe('max_user_client_connections and max_db_client_connections', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ max_user_client_connections: 3, max_db_client_connections: 2 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('refuses a third client of one database with 53300 and admits one once a slot frees', async () => {
    const a = await client(proxy);
    const b = await client(proxy);
    const refused = await client(proxy).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(codeOf(refused)).toBe('53300');
    expect(String(refused)).toMatch(/too many connections for database/);
    await a.c.end();
    await waitFor(() => false, 200);
    const c = await client(proxy);
    expect((await c.c.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    await Promise.all([b.c.end(), c.c.end()]);
  });

  it('refuses a fourth client of one user across databases with 53300', async () => {
    const clients = [await client(proxy), await client(proxy), await client(proxy, otherDb)];
    const refused = await client(proxy, otherDb).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(codeOf(refused)).toBe('53300');
    expect(String(refused)).toMatch(/too many connections for role/);
    await Promise.all(clients.map(({ c }) => c.end()));
  });
});

describe('client_idle_timeout', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ client_idle_timeout: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('closes a client idle between transactions with FATAL 57P05 within 2 s of the timeout', async () => {
    const { c, errors } = await client(proxy);
    await c.query('SELECT 1');
    const started = Date.now();
    expect(await waitFor(() => errors.length > 0, 5000)).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(codeOf(errors[0])).toBe('57P05');
    await c.end().catch(() => {});
  });

  it('leaves a client alone that keeps querying, and one inside a long query', async () => {
    const { c, errors } = await client(proxy);
    for (let i = 0; i < 8; i++) {
      await c.query('SELECT 1');
      await new Promise((r) => setTimeout(r, 300));
    }
    await c.query('SELECT pg_sleep(2)');
    expect(errors).toEqual([]);
    await c.end();
  });
});

describe('idle_transaction_timeout', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    // One server connection: the next client gets the very server the expired one held.
    proxy = await startProxy({ idle_transaction_timeout: 1, pool_size: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('closes a client idle in a transaction with 25P03, rolls back its write and reuses the server', async () => {
    const { c, errors } = await client(proxy);
    await c.query('BEGIN');
    await c.query("INSERT INTO ledger VALUES (1, 'abandoned')");
    const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    expect(await waitFor(() => errors.length > 0, 5000)).toBe(true);
    expect(codeOf(errors[0])).toBe('25P03');
    expect(String(errors[0])).toMatch(/idle-in-transaction timeout/);
    await c.end().catch(() => {});

    const direct = await directClient(db);
    try {
      expect((await direct.query('SELECT count(*)::int AS n FROM ledger WHERE id = 1')).rows[0].n).toBe(0);
    } finally {
      await direct.end();
    }

    const next = await client(proxy);
    try {
      // Same backend, and clean: outside any transaction, and the row can be written afresh.
      expect((await next.c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid).toBe(pid);
      await next.c.query("INSERT INTO ledger VALUES (1, 'kept')");
      const status = await next.c.query("SELECT count(*)::int AS n FROM ledger WHERE note = 'kept'");
      expect(status.rows[0].n).toBe(1);
    } finally {
      await next.c.end();
    }
  });

  it('does not touch a client idle outside a transaction', async () => {
    const { c, errors } = await client(proxy);
    await c.query('SELECT 1');
    await new Promise((r) => setTimeout(r, 2000));
    expect(errors).toEqual([]);
    expect((await c.query('SELECT 3 AS v')).rows[0].v).toBe(3);
    await c.end();
  });
});
