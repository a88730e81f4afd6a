// stale_while_revalidate against real PostgreSQL: once an entry has expired, the first read
// refreshes it (and waits for PostgreSQL), reads arriving meanwhile get the expired entry at once
// if it expired less than the window ago, and a write through Sluice still orphans it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;
let dir: string;

const RULES = `rules:
  - name: quotes-revalidate
    match: { kind: select, tables: [quotes] }
    cache: { ttl: 1, stale_while_revalidate: 30 }
  - name: fills-no-window
    match: { kind: select, tables: [fills] }
    cache: { ttl: 1 }
`;

beforeAll(async () => {
  db = await createTestDatabase('swr');
  const c = await directClient(db);
  await c.query('create table quotes(symbol text primary key, price int)');
  await c.query('create table fills(id int primary key, qty int)');
  await c.query("insert into quotes values ('AAPL', 1); insert into fills values (1, 1)");
  await c.end();
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-swr-'));
  writeFileSync(path.join(dir, '20-cache.yaml'), RULES);
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 4, cache: true, rules: dir });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
  rmSync(dir, { recursive: true, force: true });
});

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: proxy.url(db) });
  c.on('error', () => {});
  await c.connect();
  return c;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Reads `sql` until an answer comes from the cache (the first reads of a database wait for its
 * catalog), and returns the rows.
 */
async function cached(client: pg.Client, sql: string): Promise<unknown[]> {
  const stats = proxy.sluice.cache!.stats;
  for (let i = 0; i < 50; i++) {
    const hits = stats.hits;
    const { rows } = await client.query(sql);
    if (stats.hits > hits) return rows;
    await sleep(50);
  }
  throw new Error(`never answered from the cache: ${sql}`);
}

/** Holds an ACCESS EXCLUSIVE lock on `table` directly on PostgreSQL until release() is called. */
async function lockTable(table: string): Promise<{ release(): Promise<void> }> {
  const locker = await directClient(db);
  await locker.query('begin');
  await locker.query(`lock table ${table} in access exclusive mode`);
  return {
    async release() {
      await locker.query('commit');
      await locker.end();
    },
  };
}

/** Waits until some backend waits on a lock: the refreshing read has reached PostgreSQL. */
async function untilBlocked(): Promise<void> {
  const d = await directClient(db);
  try {
    for (let i = 0; i < 100; i++) {
      const { rows } = await d.query(
        "select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()",
      );
      if (rows[0].n > 0) return;
      await sleep(50);
    }
    throw new Error('no read ever waited on the lock');
  } finally {
    await d.end();
  }
}

describe('stale_while_revalidate', () => {
  it('answers from the expired entry while one read refreshes it, then serves the fresh one', async () => {
    const sql = "select price from quotes where symbol = 'AAPL'";
    const a = await connect();
    const b = await connect();
    try {
      expect(await cached(a, sql)).toEqual([{ price: 1 }]);
      // A write around Sluice: only the TTL bounds how long the cache may miss it.
      const d = await directClient(db);
      await d.query("update quotes set price = 2 where symbol = 'AAPL'");
      await d.end();
      await sleep(1300);
      const lock = await lockTable('quotes');
      const refreshing = a.query(sql);
      await untilBlocked();
      // Answered while the refresh is still stuck behind the lock (else it would wait for it).
      const stale = await Promise.race([b.query(sql), sleep(5000).then(() => undefined)]);
      if (stale === undefined) await lock.release();
      expect(stale?.rows).toEqual([{ price: 1 }]);
      await lock.release();
      expect((await refreshing).rows).toEqual([{ price: 2 }]);
      expect((await b.query(sql)).rows).toEqual([{ price: 2 }]);
      expect(proxy.sluice.cache!.stats.revalidateHits).toBeGreaterThanOrEqual(1);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('never answers from an entry orphaned by a write through Sluice', async () => {
    const sql = "select price from quotes where symbol = 'AAPL' and price > 0";
    const a = await connect();
    const b = await connect();
    try {
      const before = ((await cached(a, sql))[0] as { price: number }).price;
      await a.query(`update quotes set price = ${before + 10} where symbol = 'AAPL'`);
      await sleep(1300);
      const lock = await lockTable('quotes');
      const refreshing = a.query(sql);
      await untilBlocked();
      // The expired entry is keyed by the versions before the write: b must wait for PostgreSQL.
      const fromB = b.query(sql);
      const raced = await Promise.race([fromB.then(() => 'answered'), sleep(700).then(() => 'waiting')]);
      expect(raced).toBe('waiting');
      await lock.release();
      expect((await refreshing).rows).toEqual([{ price: before + 10 }]);
      expect((await fromB).rows).toEqual([{ price: before + 10 }]);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('without a window, a read after expiry waits for the refresh', async () => {
    const sql = 'select qty from fills where id = 1';
    const a = await connect();
    const b = await connect();
    try {
      expect(await cached(a, sql)).toEqual([{ qty: 1 }]);
      await sleep(1300);
      const lock = await lockTable('fills');
      const refreshing = a.query(sql);
      await untilBlocked();
      const fromB = b.query(sql);
      const raced = await Promise.race([fromB.then(() => 'answered'), sleep(700).then(() => 'waiting')]);
      expect(raced).toBe('waiting');
      await lock.release();
      await refreshing;
      expect((await fromB).rows).toEqual([{ qty: 1 }]);
    } finally {
      await a.end();
      await b.end();
    }
  });
});
