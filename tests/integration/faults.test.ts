// Network faults on either side of Sluice, injected by our own TCP relay (harness/fault-relay.ts):
// delays, drops (a partition), truncation, resets mid-message and blackholes. Under each: no
// COMMIT a client saw acknowledged is lost (read back straight from PostgreSQL), the pool's next
// client gets a clean server (no open transaction, no temp tables, default settings), clients get
// an error (or their own timeout where nothing can answer) within bounded time, and service
// resumes once the fault clears.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { FaultRelay } from './harness/fault-relay.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
/** Ids whose COMMIT the client saw acknowledged: all must be in PostgreSQL at the end. */
const acknowledged: number[] = [];
let nextId = 1;

beforeAll(async () => {
  db = await createTestDatabase('faults');
  const c = await directClient(db);
  await c.query('create table ledger (id int primary key, note text)');
  await c.end();
});

afterAll(async () => {
  // The durability check covering every test in the file.
  if (db) {
    const c = await directClient(db);
    const { rows } = await c.query<{ id: number }>('select id from ledger');
    await c.end();
    const present = new Set(rows.map((r) => r.id));
    expect(acknowledged.filter((id) => !present.has(id))).toEqual([]);
    await dropTestDatabase(db);
  }
});

function client(port: number, extra: Partial<pg.ClientConfig> = {}): pg.Client {
  const { user, password } = pgInfo();
  const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: db, ...extra });
  c.on('error', () => {});
  return c;
}

/** Resolves `p`, or rejects after `ms` and destroys the client's socket (a client giving up). */
async function within<T>(c: pg.Client, p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
      reject(new Error(`client timeout after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One transaction; records the id when COMMIT is acknowledged. */
async function transfer(c: pg.Client, id = nextId++): Promise<number> {
  await c.query('begin');
  await c.query('insert into ledger (id, note) values ($1, $2)', [id, 'tx']);
  await c.query('commit');
  acknowledged.push(id);
  return id;
}

/** What a server handed to a new client must look like. */
async function expectCleanServer(port: number): Promise<void> {
  const c = client(port);
  await within(c, c.connect(), 10_000);
  const { rows } = await within(
    c,
    c.query(`select now() = statement_timestamp() as fresh,
                    pg_current_xact_id_if_assigned() is null as no_xact,
                    (select count(*) from pg_class where relnamespace = pg_my_temp_schema())::int as temps,
                    current_setting('statement_timeout') as timeout`),
    10_000,
  );
  await c.end();
  expect(rows[0]).toEqual({ fresh: true, no_xact: true, temps: 0, timeout: '0' });
}

/** A transaction left open on the server, with a temp table and a setting, when the fault hits. */
async function openDirtyTransaction(c: pg.Client): Promise<number> {
  const id = nextId++;
  await c.query('begin');
  await c.query('create temp table scratch (a int) on commit preserve rows');
  await c.query("set local statement_timeout = '5s'");
  await c.query('insert into ledger (id, note) values ($1, $2)', [id, 'open']);
  return id;
}

async function presentInPostgres(id: number): Promise<boolean> {
  const c = await directClient(db);
  const { rowCount } = await c.query('select 1 from ledger where id = $1', [id]);
  await c.end();
  return rowCount === 1;
}

async function expectError(p: Promise<unknown>, ms: number): Promise<Error & { code?: string }> {
  const started = Date.now();
  const err = await p.then(
    () => undefined,
    (e: Error & { code?: string }) => e,
  );
  expect(err, 'expected the query to fail').toBeInstanceOf(Error);
  expect(Date.now() - started).toBeLessThan(ms);
  return err as Error & { code?: string };
}

describe('between the client and Sluice', () => {
  let proxy: TestProxy;
  let relay: FaultRelay;

  beforeAll(async () => {
    // One server: the next client is certain to get the one the faulted client had.
    proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1 });
    relay = await FaultRelay.start({ host: proxy.host, port: proxy.port });
  });

  afterAll(async () => {
    await relay?.stop();
    await proxy?.stop();
  });

  afterEach(async () => {
    relay.clear();
    // Service resumes: a transaction through the relay commits.
    const c = client(relay.port);
    await within(c, c.connect(), 10_000);
    await within(c, transfer(c), 10_000);
    await c.end();
    await expectCleanServer(proxy.port);
  });

  it('delay: transactions still commit', async () => {
    relay.set('delay', { delayMs: 100 });
    const c = client(relay.port);
    await c.connect();
    for (let i = 0; i < 3; i++) await transfer(c);
    await c.end();
  });

  for (const kind of ['reset', 'truncate'] as const) {
    it(`${kind} mid-COMMIT: the open transaction is rolled back, the server comes back clean`, async () => {
      const c = client(relay.port);
      await c.connect();
      const id = await openDirtyTransaction(c);
      relay.set(kind, { direction: 'up', keepBytes: 3 });
      const err = await expectError(within(c, c.query('commit'), 5000), 3000);
      expect(err.message).not.toMatch(/client timeout/);
      expect(await presentInPostgres(id)).toBe(false);
      await expectCleanServer(proxy.port);
    });
  }

  it('drop (partition) mid-transaction: the client gives up; once healed the server is rolled back', async () => {
    const c = client(relay.port);
    await c.connect();
    const id = await openDirtyTransaction(c);
    relay.set('drop');
    await expectError(within(c, c.query('commit'), 1500), 3000);
    relay.clear();
    expect(await presentInPostgres(id)).toBe(false);
    await expectCleanServer(proxy.port);
  });

  it('drop of the replies only: a COMMIT whose ack is lost may be in, never half in', async () => {
    const c = client(relay.port);
    await c.connect();
    const id = await openDirtyTransaction(c);
    relay.set('drop', { direction: 'down' });
    await expectError(within(c, c.query('commit'), 1500), 3000);
    relay.clear();
    // Not acknowledged, so either outcome keeps the promise; the row is whole if present.
    const check = await directClient(db);
    const { rows } = await check.query('select note from ledger where id = $1', [id]);
    await check.end();
    expect(rows.length === 0 || rows[0].note === 'open').toBe(true);
  });

  it('blackhole: a new client is never answered and gives up on its own', async () => {
    relay.set('blackhole');
    const c = client(relay.port, { connectionTimeoutMillis: 1000 });
    await expectError(c.connect(), 3000);
  });
});

describe('between Sluice and PostgreSQL', () => {
  let proxy: TestProxy;
  let relay: FaultRelay;

  beforeAll(async () => {
    const { host, port, user, password } = pgInfo();
    relay = await FaultRelay.start({ host, port });
    proxy = await startProxy({
      upstream: `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${relay.port}/postgres`,
      pool_mode: 'transaction',
      pool_size: 2,
      server_connect_timeout: 2,
      query_wait_timeout: 5,
    });
  });

  afterAll(async () => {
    await proxy?.stop();
    await relay?.stop();
  });

  afterEach(async () => {
    relay.clear();
    const c = client(proxy.port);
    await within(c, c.connect(), 10_000);
    // The first attempt may meet a pooled server the fault killed; the one after must commit.
    await within(c, transfer(c), 10_000).catch(async () => {
      await c.end().catch(() => {});
    });
    const d = client(proxy.port);
    await within(d, d.connect(), 10_000);
    await within(d, transfer(d), 10_000);
    await d.end();
    await c.end().catch(() => {});
    await expectCleanServer(proxy.port);
  });

  it('delay: transactions still commit', async () => {
    relay.set('delay', { delayMs: 100 });
    const c = client(proxy.port);
    await c.connect();
    for (let i = 0; i < 3; i++) await transfer(c);
    await c.end();
  });

  for (const [kind, direction] of [
    ['reset', 'up'],
    ['reset', 'down'],
    ['truncate', 'down'],
  ] as const) {
    it(`${kind} ${direction === 'up' ? 'of a query' : 'of a reply'} mid-transaction: the client gets an error at once`, async () => {
      const c = client(proxy.port);
      await c.connect();
      const id = await openDirtyTransaction(c);
      relay.set(kind, { direction, keepBytes: 3 });
      const err = await expectError(within(c, c.query('commit'), 5000), 3000);
      expect(err.message).not.toMatch(/client timeout/);
      // A reset of the query means PostgreSQL never saw COMMIT.
      if (direction === 'up') expect(await presentInPostgres(id)).toBe(false);
    });
  }

  it('blackhole: a client waiting for a new server connection gets an error in bounded time', async () => {
    relay.resetAll();
    relay.set('blackhole');
    const c = client(proxy.port);
    const started = Date.now();
    const err = await (async () => {
      try {
        await within(c, c.connect(), 15_000);
        await within(c, c.query('select 1'), 15_000);
        return undefined;
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).toBeInstanceOf(Error);
    expect(err?.message).not.toMatch(/client timeout/);
    expect(Date.now() - started).toBeLessThan(10_000);
    await c.end().catch(() => {});
  });

  it('drop mid-query: the client gives up; the stuck server never serves anyone else', async () => {
    const c = client(proxy.port);
    await c.connect();
    const id = await openDirtyTransaction(c);
    relay.set('drop');
    await expectError(within(c, c.query('commit'), 1500), 3000);
    relay.clear();
    expect(await presentInPostgres(id)).toBe(false);
  });
});
