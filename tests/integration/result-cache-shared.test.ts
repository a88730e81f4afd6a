// Two Sluice instances sharing a real redis-server: a write through one is seen by a read through
// the other, entries are shared, answers stay correct while Redis is killed and after it comes
// back, and a bounded randomized mix of reads and writes never returns a value older than a
// write acknowledged before the read began.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ResultCache } from '../../src/cache/result-cache.js';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';
import { describeWithRedis } from './harness/redis.js';

describeWithRedis('result cache shared through Redis', (redis) => {
  let db: string;
  let a: TestProxy;
  let b: TestProxy;

  beforeAll(async () => {
    db = await createTestDatabase('rcache_shared');
    const c = await directClient(db);
    await c.query(`
      create table counters(id int primary key, n int not null);
      insert into counters select g, 0 from generate_series(1, 4) g;
      create table quotes(symbol text primary key, price int not null);
      insert into quotes values ('BTC', 1);`);
    await c.end();
    const options = { pool_mode: 'transaction' as const, pool_size: 4, cache: true, redis: redis().url };
    a = await startProxy(options);
    b = await startProxy(options);
    await Promise.all([warm(a), warm(b)]);
  });

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await dropTestDatabase(db);
  });

  async function connect(proxy: TestProxy): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: proxy.url(db) });
    c.on('error', () => {});
    await c.connect();
    return c;
  }

  function cacheOf(proxy: TestProxy): ResultCache {
    return proxy.sluice.cache!;
  }

  /** Waits until this instance's catalog is loaded and its shared tier is up. */
  async function warm(proxy: TestProxy): Promise<void> {
    const c = await connect(proxy);
    const cache = cacheOf(proxy);
    const stores = cache.stats.stores;
    for (let i = 0; i < 200 && (cache.stats.stores === stores || !cache.versions.shared); i++) {
      await c.query(`select ${i} as warm from quotes limit 1`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await c.end();
    expect(cache.versions.shared).toBe(true);
  }

  const read = async (c: pg.Client) =>
    (await c.query("select price from quotes where symbol = 'BTC'")).rows[0].price;

  it('shows a write through A to the next read through B, and shares entries between them', async () => {
    const ca = await connect(a);
    const cb = await connect(b);
    for (let i = 0; i < 15; i++) {
      const v = await read(cb);
      await read(cb); // cached in B (and in Redis)
      await ca.query(`update quotes set price = ${v + 1} where symbol = 'BTC'`);
      expect(await read(cb)).toBe(v + 1);
    }
    // An entry stored by B is found by A through Redis.
    const q = 'select price * 2 as doubled from quotes where symbol = $1';
    const viaB = await cb.query(q, ['BTC']);
    const shared = cacheOf(a).stats.sharedHits;
    const viaA = await ca.query(q, ['BTC']);
    expect(viaA.rows).toEqual(viaB.rows);
    expect(cacheOf(a).stats.sharedHits).toBe(shared + 1);
    await ca.end();
    await cb.end();
  });

  it('keeps answering correctly while Redis is down and after it returns', async () => {
    const ca = await connect(a);
    const cb = await connect(b);
    await redis().kill();
    try {
      // B's bumps cannot reach A now (nor A's reach B): with cache_degraded_ttl 0 neither
      // answers from its cache until the shared tier is back.
      for (let i = 0; i < 100 && (cacheOf(a).versions.shared || cacheOf(b).versions.shared); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(cacheOf(a).versions.shared || cacheOf(b).versions.shared).toBe(false);
      const hits = cacheOf(a).stats.hits + cacheOf(b).stats.hits;
      for (let i = 0; i < 10; i++) {
        const v = await read(cb);
        await read(cb);
        await ca.query(`update quotes set price = ${v + 1} where symbol = 'BTC'`);
        expect(await read(cb)).toBe(v + 1);
        expect(await read(ca)).toBe(v + 1);
      }
      expect(cacheOf(a).stats.hits + cacheOf(b).stats.hits).toBe(hits);
    } finally {
      await redis().restart();
    }
    for (let i = 0; i < 100 && !(cacheOf(a).versions.shared && cacheOf(b).versions.shared); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(cacheOf(a).versions.shared && cacheOf(b).versions.shared).toBe(true);
    // Once a bump from A has travelled the bus to B again, freshness across instances is back.
    const remote = cacheOf(b).versions.stats.remoteBumps;
    await ca.query("update quotes set price = price where symbol = 'BTC'");
    for (let i = 0; i < 100 && cacheOf(b).versions.stats.remoteBumps === remote; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(cacheOf(b).versions.stats.remoteBumps).toBeGreaterThan(remote);
    for (let i = 0; i < 5; i++) {
      const v = await read(cb);
      await read(cb);
      await ca.query(`update quotes set price = ${v + 1} where symbol = 'BTC'`);
      expect(await read(cb)).toBe(v + 1);
    }
    await ca.end();
    await cb.end();
  }, 60_000);

  it('never returns a value older than a write acknowledged before the read began (randomized)', async () => {
    const clients = await Promise.all(Array.from({ length: 8 }, (_, i) => connect(i % 2 === 0 ? a : b)));
    // Per counter: the highest value whose increment was acknowledged, and the highest issued.
    const acked = [0, 0, 0, 0, 0];
    const issued = [0, 0, 0, 0, 0];
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let reads = 0;
    let cachedBefore = cacheOf(a).stats.hits + cacheOf(b).stats.hits;
    await Promise.all(
      clients.map(async (c) => {
        for (let step = 0; step < 150; step++) {
          const id = 1 + Math.floor(random() * 4);
          if (random() < 0.2) {
            issued[id]!++;
            const r = await c.query('update counters set n = n + 1 where id = $1 returning n', [id]);
            acked[id] = Math.max(acked[id]!, r.rows[0].n);
          } else {
            const floor = acked[id]!;
            const r = await c.query(`select n from counters where id = ${id}`);
            reads++;
            expect(r.rows[0].n).toBeGreaterThanOrEqual(floor);
            expect(r.rows[0].n).toBeLessThanOrEqual(issued[id]!);
          }
        }
      }),
    );
    const direct = await directClient(db);
    const final = await direct.query('select id, n from counters order by id');
    await direct.end();
    expect(final.rows.map((r) => r.n)).toEqual(issued.slice(1));
    cachedBefore = cacheOf(a).stats.hits + cacheOf(b).stats.hits - cachedBefore;
    // The mix is read-heavy: some reads must have been answered from the cache for this to test it.
    expect(reads).toBeGreaterThan(800);
    expect(cachedBefore).toBeGreaterThan(0);
    await Promise.all(clients.map((c) => c.end()));
  }, 120_000);
});
