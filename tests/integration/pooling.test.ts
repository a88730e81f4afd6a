// Pool behaviour through real drivers: transaction/session/statement modes, release points,
// dirty disconnects, wait timeouts, and many clients on a small pool.
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

let db: string;

beforeAll(async () => {
  db = await createTestDatabase('pooling');
  const c = await directClient(db);
  await c.query('create table ledger (id serial primary key, note text not null)');
  await c.end();
});

afterAll(async () => {
  await dropTestDatabase(db);
});

async function withClient<T>(proxy: TestProxy, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: proxy.url(db) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function backendPid(c: pg.Client): Promise<number> {
  return (await c.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
}

describe('transaction mode', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2, query_wait_timeout: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('keeps one server for a whole transaction and shares servers between transactions', async () => {
    const a = new pg.Client({ connectionString: proxy.url(db) });
    const b = new pg.Client({ connectionString: proxy.url(db) });
    await a.connect();
    await b.connect();
    await a.query('begin');
    const first = await backendPid(a);
    await b.query('select 1');
    expect(await backendPid(a)).toBe(first);
    await a.query('commit');
    // With the transaction over, both clients can run on either of the 2 servers.
    const pids = new Set<number>();
    for (let i = 0; i < 10; i++) pids.add(await backendPid(i % 2 ? a : b));
    expect(pids.size).toBeLessThanOrEqual(2);
    await a.end();
    await b.end();
  });

  it('runs multi-statement simple queries, notices, empty queries and errors like PostgreSQL', async () => {
    await withClient(proxy, async (c) => {
      const notices: string[] = [];
      c.on('notice', (n) => notices.push(n.message ?? ''));
      const results = (await c.query(
        "select 1 as a; select 'x' as b; do $$ begin raise notice 'hello'; end $$",
      )) as unknown as pg.QueryResult[];
      expect(results.map((r) => r.rows[0])).toEqual([{ a: 1 }, { b: 'x' }, undefined]);
      expect(notices).toEqual(['hello']);
      const empty = await c.query('');
      expect(empty.rows).toEqual([]);
      await expect(c.query('select 1/0')).rejects.toMatchObject({ code: '22012' });
      await c.query('begin');
      await expect(c.query('select nope')).rejects.toMatchObject({ code: '42703' });
      await expect(c.query('select 1')).rejects.toMatchObject({ code: '25P02' });
      await c.query('rollback');
      expect((await c.query('select 2 as two')).rows).toEqual([{ two: 2 }]);
    });
  });

  it('never returns a server dirty when a client disconnects mid-transaction', async () => {
    const c = new pg.Client({ connectionString: proxy.url(db) });
    await c.connect();
    c.on('error', () => {});
    await c.query('begin');
    await c.query("insert into ledger(note) values ('uncommitted')");
    const pid = await backendPid(c);
    // Drop the socket without Terminate, as a crashed bot would.
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    const direct = await directClient(db);
    try {
      for (let i = 0; i < 100; i++) {
        const r = await direct.query('select 1 from pg_stat_activity where pid = $1', [pid]);
        if (r.rowCount === 0) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      const alive = await direct.query('select 1 from pg_stat_activity where pid = $1', [pid]);
      expect(alive.rowCount).toBe(0);
      const rows = await direct.query("select count(*)::int as n from ledger where note = 'uncommitted'");
      expect(rows.rows[0].n).toBe(0);
    } finally {
      await direct.end();
    }
    await withClient(proxy, async (d) => {
      expect((await d.query('select 1 as ok')).rows).toEqual([{ ok: 1 }]);
    });
  });

  it('answers 57014 when no server frees up within query_wait_timeout, and the client goes on', async () => {
    const holders = [
      new pg.Client({ connectionString: proxy.url(db) }),
      new pg.Client({ connectionString: proxy.url(db) }),
    ];
    for (const h of holders) {
      await h.connect();
      await h.query('begin');
      await h.query('select 1');
    }
    await withClient(proxy, async (waiter) => {
      const started = Date.now();
      await expect(waiter.query('select 1')).rejects.toMatchObject({ code: '57014' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      for (const h of holders) await h.query('commit');
      expect((await waiter.query('select 3 as three')).rows).toEqual([{ three: 3 }]);
    });
    for (const h of holders) await h.end();
  });

  it('serves 200 clients on a pool of 5 with every transaction committed', async () => {
    const many = await startProxy({ pool_mode: 'transaction', pool_size: 5 });
    try {
      const clients = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const c = new pg.Client({ connectionString: many.url(db), application_name: `bot${i}` });
          await c.connect();
          return c;
        }),
      );
      await Promise.all(
        clients.map(async (c, i) => {
          await c.query('begin');
          await c.query('insert into ledger(note) values ($1)', [`bot-${i}`]);
          await c.query('commit');
        }),
      );
      const direct = await directClient(db);
      const r = await direct.query("select count(*)::int as n from ledger where note like 'bot-%'");
      const servers = await direct.query(
        'select count(*)::int as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
        [db],
      );
      await direct.end();
      expect(r.rows[0].n).toBe(200);
      expect(servers.rows[0].n).toBeLessThanOrEqual(5 + 2);
      const stats = many.sluice.pools.stats().find((s) => s.database === db)!;
      expect(stats.active + stats.idle + stats.connecting).toBeLessThanOrEqual(5);
      await Promise.all(clients.map((c) => c.end()));
    } finally {
      await many.stop();
    }
  });

  it('works with postgres.js (extended protocol, pipelined queries)', async () => {
    // Named prepared statements across pooled servers are issue 4; until then postgres.js runs
    // with prepare: false, as PgBouncer's docs also ask of it.
    const sql = postgres(proxy.url(db), { max: 4, prepare: false, onnotice: () => {} });
    try {
      const rows = await Promise.all(
        Array.from({ length: 50 }, (_, i) => sql`select ${i}::int as i, ${'v' + i} as v`),
      );
      expect(rows.map((r) => r[0]!.i)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      const inserted = await sql.begin(async (tx) => {
        await tx`insert into ledger(note) values ('pjs-1')`;
        await tx`insert into ledger(note) values ('pjs-2')`;
        return tx`select count(*)::int as n from ledger where note like 'pjs-%'`;
      });
      expect(inserted[0]!.n).toBe(2);
      await expect(sql`select 1/0`).rejects.toMatchObject({ code: '22012' });
      await expect(
        sql.begin(async (tx) => {
          await tx`insert into ledger(note) values ('pjs-rolled-back')`;
          await tx`select nope`;
        }),
      ).rejects.toMatchObject({ code: '42703' });
      const after = await sql`select count(*)::int as n from ledger where note = 'pjs-rolled-back'`;
      expect(after[0]!.n).toBe(0);
    } finally {
      await sql.end();
    }
  });
});

describe('session mode', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ pool_mode: 'session', pool_size: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('keeps session state for the whole session and resets it before the next client', async () => {
    await withClient(proxy, async (c) => {
      await c.query("set application_name = 'session-bot'");
      await c.query('create temp table scratch(x int)');
      await c.query('insert into scratch values (1)');
      expect((await c.query('select count(*)::int as n from scratch')).rows[0].n).toBe(1);
      expect((await c.query('show application_name')).rows[0].application_name).toBe('session-bot');
    });
    // Same single server, but DISCARD ALL ran in between.
    await withClient(proxy, async (c) => {
      expect((await c.query('show application_name')).rows[0].application_name).toBe('');
      await expect(c.query('select * from scratch')).rejects.toMatchObject({ code: '42P01' });
    });
  });
});

describe('statement mode', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ pool_mode: 'statement', pool_size: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('runs autocommit statements and refuses a transaction block with a clear error', async () => {
    await withClient(proxy, async (c) => {
      expect((await c.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    });
    const c = new pg.Client({ connectionString: proxy.url(db) });
    await c.connect();
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await c.query('begin').catch(() => {});
    await expect(c.query('select 1')).rejects.toBeTruthy();
    await new Promise((r) => setTimeout(r, 100));
    const all = errors.map((e) => (e as Error & { code?: string }).code);
    expect(all).toContain('0A000');
    await c.end().catch(() => {});
    // The pool's only server was closed, not handed on inside a transaction.
    await withClient(proxy, async (d) => {
      expect(
        (
          await d.query(
            "select current_setting('transaction_isolation') as t, now() = statement_timestamp() as fresh",
          )
        ).rows[0].fresh,
      ).toBe(true);
    });
  });
});
