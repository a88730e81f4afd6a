// The result cache against real PostgreSQL: repeated reads are answered by Sluice, every write
// through Sluice is seen by the next read (simple and extended protocol), and what must never be
// cached (volatile functions, reads inside transactions, other roles, other time zones) is not.
import { connect as netConnect } from 'node:net';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResultCache } from '../../src/cache/result-cache.js';
import {
  createRole,
  createTestDatabase,
  directClient,
  dropRole,
  dropTestDatabase,
} from './harness/database.js';
import { startProxy, startupMessage, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;
let cache: ResultCache;
const READER = `cache_reader_${process.pid}`;
const OUTSIDER = `cache_outsider_${process.pid}`;

beforeAll(async () => {
  db = await createTestDatabase('rcache');
  const c = await directClient(db);
  await c.query(`
    create table prices(symbol text primary key, price numeric not null);
    insert into prices values ('BTC', 100), ('ETH', 10);
    create table positions(bot int, symbol text, qty int, primary key (bot, symbol));
    insert into positions values (1, 'BTC', 5), (2, 'ETH', 7);
    create table secrets(v text); insert into secrets values ('classified');
    create table big(id int, pad text);
    insert into big select g, repeat('x', 1000) from generate_series(1, 200000) g;
    create view btc_view as select price from prices where symbol = 'BTC';
    create function bump_price(s text) returns void language sql volatile
      as $$ update prices set price = price + 1 where symbol = s $$;
    create function drifting_eq(int, int) returns bool language sql stable as 'select $1 = $2';
    create operator === (function = drifting_eq, leftarg = int, rightarg = int);`);
  await c.end();
  await createRole(READER, 'reader-pw', 'scram-sha-256');
  await createRole(OUTSIDER, 'outsider-pw', 'scram-sha-256');
  const admin = await directClient(db);
  await admin.query(
    `grant select on prices, positions, secrets to ${READER}; grant select on prices to ${OUTSIDER}`,
  );
  await admin.end();
  proxy = await startProxy({
    pool_mode: 'transaction',
    pool_size: 4,
    cache: true,
    cache_max_entry_bytes: 1024 * 1024,
    // Trust for clients; Sluice logs in upstream for these roles with their passwords.
    users: [
      { name: READER, password: 'reader-pw' },
      { name: OUTSIDER, password: 'outsider-pw' },
    ],
  });
  cache = proxy.sluice.cache!;
  await waitForCatalog();
});

/** The catalog loads in the background (on first use, after DDL): wait until reads are cacheable. */
async function waitForCatalog(): Promise<void> {
  const c = await connect();
  const stores = cache.stats.stores;
  for (let i = 0; i < 200 && cache.stats.stores === stores; i++) {
    await c.query(`select ${i} as warm`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await c.end();
  expect(cache.stats.stores).toBeGreaterThan(stores);
}

afterAll(async () => {
  await proxy.stop();
  await dropTestDatabase(db);
  await dropRole(READER);
  await dropRole(OUTSIDER);
});

async function connect(options: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: proxy.url(db), ...options });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function price(c: pg.Client, symbol = 'BTC'): Promise<number> {
  const r = await c.query(`select price from prices where symbol = '${symbol}'`);
  return Number(r.rows[0].price);
}

describe('result cache', () => {
  it('answers a repeated read from the cache (proved by a write that bypasses Sluice)', async () => {
    const c = await connect();
    const before = await c.query("select qty from positions where bot = 1 and symbol = 'BTC'");
    const hits = cache.stats.hits;
    const direct = await directClient(db);
    await direct.query("update positions set qty = 999 where bot = 1 and symbol = 'BTC'");
    const again = await c.query("select qty from positions where bot = 1 and symbol = 'BTC'");
    // The write went around Sluice: the cached answer (bounded by TTL) is what a cache gives.
    expect(again.rows).toEqual(before.rows);
    expect(cache.stats.hits).toBe(hits + 1);
    // A write through Sluice to the same table orphans the entry.
    await c.query("update positions set qty = 6 where bot = 1 and symbol = 'BTC'");
    const after = await c.query("select qty from positions where bot = 1 and symbol = 'BTC'");
    expect(after.rows).toEqual([{ qty: 6 }]);
    await direct.end();
    await c.end();
  });

  it('shows a write through Sluice to the next read, from another client (simple protocol)', async () => {
    const reader = await connect();
    const writer = await connect();
    for (let i = 0; i < 20; i++) {
      const seen = await price(reader);
      await price(reader); // cached now
      await writer.query(`update prices set price = ${seen + 1} where symbol = 'BTC'`);
      expect(await price(reader)).toBe(seen + 1);
    }
    await reader.end();
    await writer.end();
  });

  it('shows writes made through the extended protocol and prepared statements (node-postgres, postgres.js)', async () => {
    const reader = await connect();
    const writer = await connect();
    const sql = postgres(proxy.url(db), { max: 2, onnotice: () => {} });
    try {
      for (let i = 0; i < 10; i++) {
        const seen = await price(reader, 'ETH');
        await price(reader, 'ETH');
        await writer.query({
          name: 'set_eth',
          text: 'update prices set price = $1 where symbol = $2',
          values: [seen + 1, 'ETH'],
        });
        expect(await price(reader, 'ETH')).toBe(seen + 1);
        await sql`update prices set price = ${seen + 2} where symbol = ${'ETH'}`;
        expect(await price(reader, 'ETH')).toBe(seen + 2);
      }
    } finally {
      await sql.end();
      await reader.end();
      await writer.end();
    }
  });

  it('caches extended-protocol reads: unnamed and named statements, per parameter values and result formats', async () => {
    const c = await connect();
    const direct = await directClient(db);
    const q = 'select symbol, qty from positions where bot = $1 order by symbol';
    const first = await c.query(q, [2]);
    // A batch that prepares a named statement has effects beyond its reply: it runs; the next
    // execution (Bind only) is what gets cached.
    for (let i = 0; i < 2; i++) {
      const named = await c.query({ name: 'pos_by_bot', text: q, values: [2] });
      expect(named.rows).toEqual(first.rows);
    }
    const hits = cache.stats.hits;
    // Around Sluice: cached answers stay as they were, proving they came from the cache.
    await direct.query('update positions set qty = qty + 1000 where bot = 2');
    expect((await c.query(q, [2])).rows).toEqual(first.rows);
    expect((await c.query({ name: 'pos_by_bot', text: q, values: [2] })).rows).toEqual(first.rows);
    expect(cache.stats.hits).toBe(hits + 2);
    // Another parameter value is another entry.
    expect((await c.query(q, [1])).rows).toEqual([{ symbol: 'BTC', qty: expect.any(Number) }]);
    // postgres.js prepares and pipelines; binary and text result formats never share an entry.
    const sql = postgres(proxy.url(db), { max: 1, onnotice: () => {} });
    const text1 = await sql`select symbol, qty from positions where bot = ${2} order by symbol`;
    const text2 = await sql`select symbol, qty from positions where bot = ${2} order by symbol`;
    expect(text2).toEqual(text1);
    await sql.end();
    const [textReply, binaryReply] = [await rawExtendedRead(0), await rawExtendedRead(1)];
    expect(textReply.equals(binaryReply)).toBe(false);
    expect((await rawExtendedRead(1)).equals(binaryReply)).toBe(true);
    // A write through Sluice brings every form up to date.
    await c.query('update positions set qty = qty - 1000 where bot = 2');
    const fresh = await direct.query(q, [2]);
    expect((await c.query(q, [2])).rows).toEqual(fresh.rows);
    expect((await c.query({ name: 'pos_by_bot', text: q, values: [2] })).rows).toEqual(fresh.rows);
    await direct.end();
    await c.end();
  });

  it('invalidates per key value: a write to one symbol leaves the others cached, never stale', async () => {
    const c = await connect();
    const writer = await connect();
    const direct = await directClient(db);
    await direct.query("insert into prices values ('P1', 1), ('P2', 2) on conflict do nothing");
    const read = async (symbol: string) =>
      (await c.query('select price from prices where symbol = $1', [symbol])).rows.map((r) =>
        Number(r.price),
      );
    const readSimple = async (symbol: string) =>
      (await c.query(`select price from prices where symbol = '${symbol}'`)).rows.map((r) => Number(r.price));
    for (const s of ['P1', 'P2', 'P3']) {
      await read(s);
      await readSimple(s);
    }
    let hits = cache.stats.hits;
    // A write confined to P1 (simple protocol, then extended) orphans P1's entries only.
    await writer.query("update prices set price = 11 where symbol = 'P1'");
    expect(await read('P1')).toEqual([11]);
    expect(await readSimple('P1')).toEqual([11]);
    expect(cache.stats.hits).toBe(hits);
    expect(await read('P2')).toEqual([2]);
    expect(await readSimple('P2')).toEqual([2]);
    expect(cache.stats.hits).toBe(hits + 2);
    await writer.query('update prices set price = $1 where symbol = $2', [12, 'P1']);
    expect(await read('P1')).toEqual([12]);
    // An insert of a new key: the cached empty answer for it goes.
    expect(await read('P3')).toEqual([]);
    await writer.query("insert into prices(symbol, price) values ('P3', 3)");
    expect(await read('P3')).toEqual([3]);
    await writer.query(
      'insert into prices(symbol, price) values ($1, $2) on conflict (symbol) do update set price = excluded.price',
      ['P3', 33],
    );
    expect(await read('P3')).toEqual([33]);
    // A write that moves a row to another key, or is not confined to keys, orphans every key.
    await read('P4');
    await writer.query("update prices set symbol = 'P4' where symbol = 'P3'");
    expect(await read('P4')).toEqual([33]);
    expect(await read('P3')).toEqual([]);
    await read('P2');
    await writer.query('update prices set price = price + 100 where price < 3');
    expect(await read('P2')).toEqual([102]);
    // Whole-table readers see point writes.
    const count = async () => Number((await c.query('select count(*) from prices')).rows[0].count);
    const before = await count();
    await count();
    hits = cache.stats.hits;
    await writer.query("delete from prices where symbol = 'P4'");
    expect(await count()).toBe(before - 1);
    expect(cache.stats.hits).toBe(hits);
    // Every answer above is what PostgreSQL says now.
    for (const s of ['P1', 'P2', 'P3', 'P4']) {
      const truth = (await direct.query('select price from prices where symbol = $1', [s])).rows.map((r) =>
        Number(r.price),
      );
      expect(await read(s)).toEqual(truth);
      expect(await readSimple(s)).toEqual(truth);
    }
    await direct.end();
    await c.end();
    await writer.end();
  });

  it('parses reads that differ only in inlined values once, and keys each by its own values', async () => {
    const c = await connect();
    const direct = await directClient(db);
    await direct.query(
      "insert into prices select 'V' || g, g from generate_series(1, 40) g on conflict (symbol) do nothing",
    );
    const readSimple = async (symbol: string) =>
      (await c.query(`select price from prices where symbol = '${symbol}'`)).rows.map((r) => Number(r.price));
    await readSimple('V1');
    const misses = cache.analyzer.stats.misses;
    for (let g = 2; g <= 40; g++) expect(await readSimple(`V${g}`)).toEqual([g]);
    // 39 new texts, one literal shape: no new parse.
    expect(cache.analyzer.stats.misses).toBe(misses);
    const hits = cache.stats.hits;
    for (let g = 1; g <= 40; g++) expect(await readSimple(`V${g}`)).toEqual([g]);
    expect(cache.stats.hits).toBe(hits + 40);
    // A write of one value (simple protocol, inlined) orphans that value's entry only.
    await c.query("update prices set price = 700 where symbol = 'V7'");
    expect(await readSimple('V7')).toEqual([700]);
    expect(await readSimple('V8')).toEqual([8]);
    expect(cache.stats.hits).toBe(hits + 41);
    await direct.end();
    await c.end();
  });

  it('invalidates reads of a view when its base table is written, and on volatile user functions', async () => {
    const c = await connect();
    const read = async () => Number((await c.query('select price from btc_view')).rows[0].price);
    const v = await read();
    await read();
    await c.query(`update prices set price = ${v + 5} where symbol = 'BTC'`);
    expect(await read()).toBe(v + 5);
    await c.query("select bump_price('BTC')");
    expect(await read()).toBe(v + 6);
    await c.end();
  });

  it('never caches now(), random(), clock_timestamp(), current_user or a stable user operator', async () => {
    const c = await connect();
    for (const q of [
      'select now()::text as v',
      'select random() as v',
      'select clock_timestamp()::text as v',
    ]) {
      const seen = new Set<string>();
      for (let i = 0; i < 3; i++) {
        if (q.includes('now')) await c.query('select pg_sleep(0.002)');
        seen.add(String((await c.query(q)).rows[0].v));
      }
      // now() is per transaction: each autocommit statement gets a fresh one.
      expect(seen.size).toBe(3);
    }
    const hits = cache.stats.hits;
    await c.query('select current_user');
    await c.query('select current_user');
    // A user-defined operator is judged by its function's volatility (this one is stable).
    await c.query('select qty from positions where qty === 7');
    await c.query('select qty from positions where qty === 7');
    expect(cache.stats.hits).toBe(hits);
    await c.end();
  });

  it('lets a transaction see its own uncommitted write and caches nothing inside it', async () => {
    const c = await connect();
    const other = await connect();
    const start = await price(c);
    await price(other);
    await c.query('begin');
    await c.query(`update prices set price = ${start + 100} where symbol = 'BTC'`);
    expect(await price(c)).toBe(start + 100);
    // Read by another client while the write is uncommitted: the old value, correctly.
    expect(await price(other)).toBe(start);
    await c.query('commit');
    // What `other` read during the transaction must not survive the commit.
    expect(await price(other)).toBe(start + 100);
    await c.end();
    await other.end();
  });

  it('leaves no stale entry after a rolled-back write', async () => {
    const c = await connect();
    const other = await connect();
    const start = await price(other);
    await c.query('begin');
    await c.query(`update prices set price = ${start + 7} where symbol = 'BTC'`);
    expect(await price(c)).toBe(start + 7);
    await c.query('rollback');
    expect(await price(other)).toBe(start);
    expect(await price(c)).toBe(start);
    await c.end();
    await other.end();
  });

  it('never shares an entry between roles', async () => {
    const reader = await connect({ connectionString: proxy.url(db, READER, 'reader-pw') });
    const outsider = await connect({ connectionString: proxy.url(db, OUTSIDER, 'outsider-pw') });
    const su = await connect();
    for (let i = 0; i < 2; i++) {
      expect((await reader.query('select v from secrets')).rows).toEqual([{ v: 'classified' }]);
      expect((await su.query('select v from secrets')).rows).toEqual([{ v: 'classified' }]);
    }
    for (let i = 0; i < 2; i++) {
      await expect(outsider.query('select v from secrets')).rejects.toMatchObject({ code: '42501' });
    }
    await reader.end();
    await outsider.end();
    await su.end();
  });

  it('never shares an entry between different TimeZone or DateStyle settings', async () => {
    const q = "select '2024-03-01 12:00:00+00'::timestamptz::text as t";
    const utc = await connect({ options: '-c TimeZone=UTC' });
    const tokyo = await connect({ options: '-c TimeZone=Asia/Tokyo' });
    const ny = await connect();
    await ny.query("set timezone = 'America/New_York'");
    for (let i = 0; i < 2; i++) {
      expect((await utc.query(q)).rows[0].t).toBe('2024-03-01 12:00:00+00');
      expect((await tokyo.query(q)).rows[0].t).toBe('2024-03-01 21:00:00+09');
      expect((await ny.query(q)).rows[0].t).toBe('2024-03-01 07:00:00-05');
    }
    await ny.query('set datestyle = SQL, DMY');
    expect((await ny.query(q)).rows[0].t).toBe('01/03/2024 07:00:00 EST');
    await utc.end();
    await tokyo.end();
    await ny.end();
  });

  it('serves one execution to identical reads in flight (coalescing)', async () => {
    await waitForCatalog();
    const clients = await Promise.all(Array.from({ length: 8 }, () => connect()));
    // generate_series has a stable overload (timestamptz), so it is never cached: scan a table.
    const q = 'select count(*)::int as n from big a, big b where a.id <= 40 and b.id <= 50000';
    const coalesced = cache.stats.coalesced;
    const stores = cache.stats.stores;
    const results = await Promise.all(clients.map((c) => c.query(q)));
    for (const r of results) expect(r.rows).toEqual([{ n: 2000000 }]);
    expect(cache.stats.coalesced - coalesced).toBeGreaterThan(0);
    expect(cache.stats.stores - stores).toBe(1);
    await Promise.all(clients.map((c) => c.end()));
  });

  it('streams a result far over the entry cap through uncached, holding little memory', async () => {
    // ~200 MB of rows against a 1 MB cap, read by a raw socket so nothing on the client side keeps them.
    await waitForCatalog();
    const notStored = cache.stats.notStored;
    let peak = 0;
    const base = process.memoryUsage().arrayBuffers;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    }, 5);
    const bytes = await rawQueryBytes('select id, pad from big');
    clearInterval(sampler);
    expect(bytes).toBeGreaterThan(200_000_000);
    expect(cache.stats.notStored).toBe(notStored + 1);
    expect(cache.memory.stats.bytes).toBeLessThan(64 * 1024 * 1024);
    // Bounded: socket chunks in flight and garbage not yet collected, not the result.
    expect(peak).toBeLessThan(100 * 1024 * 1024);
  });
});

/** Parse/Bind/Describe/Execute/Sync of a positions read with the given result format; the reply bytes. */
async function rawExtendedRead(format: 0 | 1): Promise<Buffer> {
  const socket = netConnect({ host: proxy.host, port: proxy.port });
  const chunks: Buffer[] = [];
  let readies = 0;
  return new Promise((resolve, reject) => {
    socket.on('connect', () => socket.write(startupMessage({ user: 'postgres', database: db })));
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      if (readies === 0) {
        if (findReady(chunk) < 0) return;
        readies = 1;
        socket.write(
          Buffer.concat([
            serialize.parse({ text: 'select qty from positions where bot = $1', types: [23] }),
            serialize.bind({ values: ['2'], binary: format === 1 }),
            serialize.describe({ type: 'P' }),
            serialize.execute(),
            serialize.sync(),
          ]),
        );
        return;
      }
      chunks.push(chunk);
      const all = Buffer.concat(chunks);
      if (all.length >= 6 && all[all.length - 6] === 0x5a) {
        socket.end();
        resolve(all);
      }
    });
  });
}

/** Runs one simple query over a raw socket and returns how many reply bytes arrived. */
function rawQueryBytes(sql: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: proxy.host, port: proxy.port });
    let total = 0;
    let loggedIn = false;
    let tail = Buffer.alloc(0);
    socket.on('connect', () => socket.write(startupMessage({ user: 'postgres', database: db })));
    socket.on('data', (chunk: Buffer) => {
      if (!loggedIn) {
        tail = Buffer.concat([tail, chunk]);
        // AuthenticationOk ... ReadyForQuery: wait for the first 'Z'.
        const z = findReady(tail);
        if (z < 0) return;
        loggedIn = true;
        tail = Buffer.alloc(0);
        socket.write(serialize.query(sql));
        return;
      }
      total += chunk.length;
      const end = Buffer.concat([tail, chunk]).subarray(-6);
      tail = end;
      if (end[0] === 0x5a && end[5] === 0x49) {
        socket.end();
        resolve(total);
      }
    });
    socket.on('error', reject);
  });
}

function findReady(bytes: Buffer): number {
  let pos = 0;
  while (pos + 5 <= bytes.length) {
    if (bytes[pos] === 0x5a) return pos;
    pos += 1 + bytes.readInt32BE(pos + 1);
  }
  return -1;
}
