// Transaction pooling without surprises: named prepared statements follow the client across
// servers, session settings never leak between clients, unmovable state pins, startup
// parameters are honoured. node-postgres and postgres.js, pool much smaller than client count.
import pg from 'pg';
import { serialize } from 'pg-protocol';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { firstError, rawConnect, startProxy, startupMessage, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('txstate');
  const c = await directClient(db);
  await c.query(`
    create schema alpha; create schema beta;
    create table alpha.quotes(symbol text primary key, price numeric);
    create table beta.quotes(symbol text primary key, price numeric);
    insert into alpha.quotes values ('BTC', 100); insert into beta.quotes values ('BTC', 200);
    create table fills(id serial primary key, symbol text, qty int);`);
  await c.end();
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2 });
});

afterAll(async () => {
  await proxy.stop();
  await dropTestDatabase(db);
});

async function connect(options: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: proxy.url(db), ...options });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** Keeps the other server busy in turns so that `c` is moved between servers. */
async function churn(others: pg.Client[]): Promise<void> {
  await Promise.all(others.map((o) => o.query('select pg_sleep(0.005)')));
}

describe('named prepared statements', () => {
  it('keep working as the client moves between servers (node-postgres)', async () => {
    const clients = await Promise.all([connect(), connect(), connect(), connect()]);
    const pids = new Set<number>();
    for (let round = 0; round < 15; round++) {
      await Promise.all(
        clients.map(async (c, i) => {
          const r = await c.query({
            name: 'fill_count',
            text: 'select $1::int * 2 as doubled, pg_backend_pid() as pid',
            values: [round * 10 + i],
          });
          expect(r.rows[0].doubled).toBe((round * 10 + i) * 2);
          if (i === 0) pids.add(r.rows[0].pid);
        }),
      );
    }
    // Four clients on two servers: client 0 must have met both.
    expect(pids.size).toBe(2);
    await Promise.all(clients.map((c) => c.end()));
  });

  it('work with postgres.js defaults (prepare: true, pipelining)', async () => {
    const sql = postgres(proxy.url(db), { max: 4, onnotice: () => {} });
    try {
      for (let round = 0; round < 5; round++) {
        const rows = await Promise.all(
          Array.from(
            { length: 40 },
            (_, i) => sql`select ${i}::int + ${round}::int as v, ${`s${i}`}::text as s`,
          ),
        );
        expect(rows.map((r) => r[0]!.v)).toEqual(Array.from({ length: 40 }, (_, i) => i + round));
        expect(rows[7]![0]!.s).toBe('s7');
      }
      const inserted = await sql.begin(async (tx) => {
        await tx`insert into fills(symbol, qty) values (${'ETH'}, ${3})`;
        return tx`select count(*)::int as n from fills where symbol = ${'ETH'}`;
      });
      expect(inserted[0]!.n).toBe(1);
    } finally {
      await sql.end();
    }
  });

  it('answer 26000 for an unknown statement and 42P05 for a duplicate name, as PostgreSQL does', async () => {
    // node-postgres refuses a duplicate name itself, so speak the protocol by hand.
    const socket = await rawConnect(proxy.port);
    const replies: Buffer[] = [];
    socket.on('data', (b: Buffer) => replies.push(b));
    const until = async (predicate: (all: Buffer) => boolean) => {
      for (let i = 0; i < 200 && !predicate(Buffer.concat(replies)); i++)
        await new Promise((r) => setTimeout(r, 10));
      return Buffer.concat(replies);
    };
    const readyCount = (all: Buffer) => all.toString('latin1').split('Z\0\0\0\x05').length - 1;
    socket.write(startupMessage({ user: pgInfo().user, database: db }));
    await until((all) => readyCount(all) >= 1);
    replies.length = 0;
    socket.write(
      Buffer.concat([
        serialize.parse({ name: 'dup', text: 'select 1' }),
        serialize.parse({ name: 'dup', text: 'select 2' }),
        serialize.bind({ statement: 'dup' }),
        serialize.execute(),
        serialize.sync(),
      ]),
    );
    let all = await until((b) => readyCount(b) >= 1);
    expect(firstError(all)).toMatchObject({ C: '42P05', M: 'prepared statement "dup" already exists' });
    // Everything after the error up to Sync was skipped; the first statement still answers.
    replies.length = 0;
    socket.write(
      Buffer.concat([serialize.bind({ statement: 'dup' }), serialize.execute(), serialize.sync()]),
    );
    all = await until((b) => readyCount(b) >= 1);
    expect(firstError(all)).toBeUndefined();
    expect(all.includes(Buffer.from('SELECT 1\0'))).toBe(true);
    replies.length = 0;
    socket.write(
      Buffer.concat([serialize.bind({ statement: 'nope' }), serialize.execute(), serialize.sync()]),
    );
    all = await until((b) => readyCount(b) >= 1);
    expect(firstError(all)).toMatchObject({ C: '26000', M: 'prepared statement "nope" does not exist' });
    socket.destroy();
  });

  it('count plan-cache hits: the same statement is planned once per server, not per client', async () => {
    // The plan-cache counters of this Sluice (each running Sluice counts its own).
    const statementCacheStats = proxy.sluice.metrics!.statementCache;
    const before = { ...statementCacheStats };
    const clients = await Promise.all(Array.from({ length: 6 }, () => connect()));
    for (let round = 0; round < 5; round++) {
      await Promise.all(clients.map((c) => c.query({ name: 'hot', text: 'select 42 as answer' })));
    }
    const hits = statementCacheStats.hits - before.hits;
    const misses = statementCacheStats.misses - before.misses;
    expect(hits).toBeGreaterThan(misses);
    await Promise.all(clients.map((c) => c.end()));
  });
});

describe('result-type-changing DDL under cached statements', () => {
  const twoRows = (v: (n: number) => unknown) => [
    { id: 1, v: v(10) },
    { id: 2, v: v(20) },
  ];

  it('gives node-postgres the new rows on every pooled client after ALTER ... TYPE bigint, without an error', async () => {
    // The plan-cache counters of this Sluice (each running Sluice counts its own).
    const statementCacheStats = proxy.sluice.metrics!.statementCache;
    const setup = await directClient(db);
    await setup.query(
      'create table ddl_np(id int primary key, v int not null); insert into ddl_np values (1, 10), (2, 20)',
    );
    await setup.end();
    const clients = await Promise.all(Array.from({ length: 4 }, () => connect()));
    const run = () =>
      Promise.all(
        clients.flatMap((c) =>
          [0, 1, 2].map(
            async () =>
              (await c.query({ name: 'ddl_np_all', text: 'select * from ddl_np order by id' })).rows,
          ),
        ),
      );
    // Every server ends up with the statement prepared (4 clients, 2 servers).
    for (const rows of await run()) expect(rows).toEqual(twoRows((n) => n));
    const changedBefore = statementCacheStats.changed;
    const ddl = await connect();
    await ddl.query('alter table ddl_np alter column v type bigint');
    // node-postgres describes the portal every time: Sluice re-parses and the client reads the new
    // type (int8 comes back as a string). Directly, PostgreSQL would answer 0A000 here.
    for (let round = 0; round < 2; round++) {
      for (const rows of await run()) expect(rows).toEqual(twoRows((n) => String(n)));
    }
    expect(statementCacheStats.changed).toBeGreaterThan(changedBefore);
    await ddl.query('alter table ddl_np add column w text default $$x$$');
    for (const rows of await run())
      expect(rows).toEqual(twoRows((n) => String(n)).map((r) => ({ ...r, w: 'x' })));
    for (const c of [...clients, ddl]) await c.end();
  });

  it('lets postgres.js re-prepare after the change (it retries on PostgreSQL’s 0A000), with correct rows', async () => {
    const setup = await directClient(db);
    await setup.query(
      'create table ddl_pj(id int primary key, v int not null); insert into ddl_pj values (1, 10), (2, 20)',
    );
    await setup.end();
    const sql = postgres(proxy.url(db), { max: 4, onnotice: () => {} });
    try {
      const run = () => Promise.all(Array.from({ length: 12 }, () => sql`select * from ddl_pj order by id`));
      for (const rows of await run()) expect([...rows]).toEqual(twoRows((n) => n));
      await sql`alter table ddl_pj alter column v type bigint`;
      for (let round = 0; round < 2; round++) {
        for (const rows of await run()) expect([...rows]).toEqual(twoRows((n) => String(n)));
      }
    } finally {
      await sql.end();
    }
  });
});

describe('session settings', () => {
  it('stay with the client that SET them, whichever server runs its queries', async () => {
    const a = await connect();
    const b = await connect();
    const others = [await connect(), await connect()];
    await a.query("set timezone = 'Asia/Tokyo'");
    await a.query('set search_path to alpha');
    await b.query("set timezone = 'America/New_York'");
    await b.query('set search_path = beta');
    for (let i = 0; i < 10; i++) {
      await churn(others);
      const [ra, rb] = await Promise.all([
        a.query('show timezone'),
        b.query('select current_setting($1) as tz, (select price::int from quotes) as price', ['TimeZone']),
      ]);
      expect(ra.rows[0].TimeZone).toBe('Asia/Tokyo');
      expect(rb.rows[0]).toEqual({ tz: 'America/New_York', price: 200 });
      expect((await a.query('select price::int as price from quotes')).rows[0].price).toBe(100);
    }
    // A client that never SET anything sees the defaults, not a neighbour's.
    const fresh = await connect();
    for (let i = 0; i < 4; i++) {
      const r = await fresh.query(
        "select current_setting('search_path') as sp, current_setting('TimeZone') as tz",
      );
      expect(r.rows[0].sp).toBe('"$user", public');
      expect(r.rows[0].tz).not.toMatch(/Tokyo|New_York/);
    }
    // RESET returns the client to its defaults; a rolled-back SET never happened.
    await a.query('reset search_path');
    await expect(a.query('select * from quotes')).rejects.toMatchObject({ code: '42P01' });
    await a.query('begin');
    await a.query('set search_path to beta');
    await a.query('rollback');
    await churn(others);
    await expect(a.query('select * from quotes')).rejects.toMatchObject({ code: '42P01' });
    expect((await a.query('show timezone')).rows[0].TimeZone).toBe('Asia/Tokyo');
    for (const c of [a, b, fresh, ...others]) await c.end();
  });

  it('honours startup parameters (options -c, application_name, statement_timeout) as session defaults', async () => {
    const c = await connect({
      application_name: 'momentum-bot',
      options: '-c search_path=beta -c statement_timeout=1500',
    });
    const others = [await connect(), await connect()];
    for (let i = 0; i < 4; i++) {
      await churn(others);
      const r = await c.query(
        "select current_setting('application_name') as app, current_setting('statement_timeout') as st, (select price::int from quotes) as price",
      );
      expect(r.rows[0]).toEqual({ app: 'momentum-bot', st: '1500ms', price: 200 });
    }
    await c.query('set statement_timeout = 0');
    await c.query('reset all');
    await churn(others);
    const after = await c.query("select current_setting('statement_timeout') as st");
    expect(after.rows[0].st).toBe('1500ms');
    for (const x of [c, ...others]) await x.end();
  });
});

describe('startup validation', () => {
  it('refuses a login whose startup settings PostgreSQL rejects, with its SQLSTATE, and serves others', async () => {
    const bad = new pg.Client({ connectionString: proxy.url(db), options: '-c statement_timeout=banana' });
    bad.on('error', () => {});
    await expect(bad.connect()).rejects.toMatchObject({
      code: '22023',
      message: expect.stringContaining('statement_timeout'),
    });
    const good = await connect({ options: '-c statement_timeout=2500' });
    expect((await good.query('show statement_timeout')).rows[0].statement_timeout).toBe('2500ms');
    await good.end();
  });
});

describe('pinning', () => {
  it('keeps a client with a temporary table on its server, and closes that server afterwards', async () => {
    const c = await connect();
    const others = [await connect()];
    await c.query('create temp table scratch(x int)');
    const pid = (await c.query('select pg_backend_pid() as pid')).rows[0].pid;
    for (let i = 0; i < 5; i++) {
      await churn(others);
      await c.query('insert into scratch values ($1)', [i]);
      expect((await c.query('select pg_backend_pid() as pid')).rows[0].pid).toBe(pid);
    }
    expect((await c.query('select count(*)::int as n from scratch')).rows[0].n).toBe(5);
    await c.end();
    // The temp table dies with its server: nobody else can ever see it.
    const direct = await directClient(db);
    for (let i = 0; i < 50; i++) {
      const r = await direct.query('select 1 from pg_stat_activity where pid = $1', [pid]);
      if (r.rowCount === 0) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    expect((await direct.query('select 1 from pg_stat_activity where pid = $1', [pid])).rowCount).toBe(0);
    await direct.end();
    for (const o of others) await o.end();
  });

  it('refuses replication connections with a clear error', async () => {
    const c = new pg.Client({ connectionString: proxy.url(db), replication: 'database' } as pg.ClientConfig);
    c.on('error', () => {});
    await expect(c.connect()).rejects.toMatchObject({ code: '0A000' });
  });
});
