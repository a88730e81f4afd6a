// Writes that bypass Sluice, against real PostgreSQL: with migration 0008's trigger on a table, a
// write made directly on PostgreSQL orphans Sluice's cached reads of it within moments of its
// commit (not at cache_ttl); writes through Sluice are not announced (Sluice invalidated them
// itself, per row); a lost listener connection comes back and then orphans the database's entries.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResultCache } from '../../src/cache/result-cache.js';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

const MIGRATION = path.join(
  fileURLToPath(new URL('../../migrations/', import.meta.url)),
  '0008_sluice_write_notify.up.sql',
);

let db: string;
let proxy: TestProxy;
let cache: ResultCache;
let direct: pg.Client;
let client: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase('cnotify');
  direct = await directClient(db);
  await direct.query(`
    create table quotes(symbol text primary key, price int not null);
    insert into quotes values ('A', 1), ('B', 1);
    create table unwatched(symbol text primary key, price int not null);
    insert into unwatched values ('A', 1);`);
  // The migration as shipped: its trading tables are missing here and are skipped with a NOTICE.
  await direct.query(readFileSync(MIGRATION, 'utf8'));
  await direct.query(`select sluice_watch_writes('quotes')`);
  // A long TTL, so nothing below can be explained by expiry.
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 4, cache: true, cache_ttl: 600 });
  cache = proxy.sluice.cache!;
  client = new pg.Client({ connectionString: proxy.url(db) });
  client.on('error', () => {});
  await client.connect();
  // The catalog and the listener start on first use.
  for (let i = 0; i < 200 && (cache.stats.stores === 0 || cache.writeNotify!.stats.listening === 0); i++) {
    await client.query(`select price from quotes where symbol = 'A'`);
    await sleep(20);
  }
  expect(cache.writeNotify!.stats.listening).toBe(1);
});

afterAll(async () => {
  await client?.end();
  await direct?.end();
  await proxy?.stop();
  await dropTestDatabase(db);
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function price(table: string, symbol: string): Promise<number> {
  const r = await client.query(`select price from ${table} where symbol = '${symbol}'`);
  return r.rows[0].price as number;
}

/** Reads through Sluice until `want` comes back or 5 s pass; the value last read. */
async function readUntil(table: string, symbol: string, want: number): Promise<number> {
  let seen = await price(table, symbol);
  for (let i = 0; i < 100 && seen !== want; i++) {
    await sleep(50);
    seen = await price(table, symbol);
  }
  return seen;
}

describe('writes that bypass Sluice', () => {
  it('orphan cached reads of a watched table at their commit; an unwatched table waits for the TTL', async () => {
    const a = await price('quotes', 'A');
    const u = await price('unwatched', 'A');
    const hits = cache.stats.hits;
    expect(await price('quotes', 'A')).toBe(a);
    expect(await price('unwatched', 'A')).toBe(u);
    expect(cache.stats.hits).toBe(hits + 2);

    const notified = cache.writeNotify!.stats.notifications;
    await direct.query(`update quotes set price = price + 10 where symbol = 'A'`);
    await direct.query(`update unwatched set price = price + 10 where symbol = 'A'`);
    expect(await readUntil('quotes', 'A', a + 10)).toBe(a + 10);
    expect(cache.writeNotify!.stats.notifications).toBe(notified + 1);
    // Without the trigger the bypassing write stays unseen (what cache_ttl bounds).
    await sleep(300);
    expect(await price('unwatched', 'A')).toBe(u);
  });

  it('are announced only at commit, and not at all when rolled back', async () => {
    const a = await price('quotes', 'A');
    await price('quotes', 'A');
    const notified = cache.writeNotify!.stats.notifications;
    await direct.query('begin');
    await direct.query(`update quotes set price = price + 1 where symbol = 'A'`);
    await sleep(200);
    expect(cache.writeNotify!.stats.notifications).toBe(notified);
    await direct.query('rollback');
    await sleep(200);
    expect(cache.writeNotify!.stats.notifications).toBe(notified);
    expect(await price('quotes', 'A')).toBe(a);
  });

  it('leave writes through Sluice to Sluice: no notification, other rows stay cached', async () => {
    const a = await price('quotes', 'A');
    await price('quotes', 'B');
    const notified = cache.writeNotify!.stats.notifications;
    await client.query(`update quotes set price = price + 1 where symbol = 'B'`);
    await sleep(300);
    expect(cache.writeNotify!.stats.notifications).toBe(notified);
    const hits = cache.stats.hits;
    // The write was confined to B: A's entry survives (a whole-table notification would orphan it).
    expect(await price('quotes', 'A')).toBe(a);
    expect(cache.stats.hits).toBe(hits + 1);
    const truth = await direct.query(`select price from quotes where symbol = 'B'`);
    expect(await price('quotes', 'B')).toBe(truth.rows[0].price);
  });

  it('survive the listener being killed: it listens again and orphans what was cached meanwhile', async () => {
    const a = await price('quotes', 'A');
    await price('quotes', 'A');
    const gaps = cache.writeNotify!.stats.gaps;
    const hits = cache.stats.hits;
    const killed = await direct.query(
      `select pg_terminate_backend(pid) from pg_stat_activity
        where datname = $1 and application_name = 'sluice write-notify'`,
      [db],
    );
    expect(killed.rowCount).toBe(1);
    for (let i = 0; i < 100 && cache.writeNotify!.stats.gaps === gaps; i++) await sleep(50);
    expect(cache.writeNotify!.stats.gaps).toBe(gaps + 1);
    expect(cache.writeNotify!.stats.listening).toBe(1);
    // Back: what was cached before is orphaned (a bypassing write may have gone unheard).
    expect(await price('quotes', 'A')).toBe(a);
    expect(cache.stats.hits).toBe(hits);
    await direct.query(`update quotes set price = price + 5 where symbol = 'A'`);
    expect(await readUntil('quotes', 'A', a + 5)).toBe(a + 5);
  });
});
