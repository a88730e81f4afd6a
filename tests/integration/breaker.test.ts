// The upstream's circuit breaker against a TCP relay that comes and goes: errors arrive within
// bounded time, 57P03 comes at once once the breaker is open, service returns by itself, SQL
// errors never open it, and serve_stale answers (with a NOTICE) only while it is open.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

/**
 * Forwards TCP to the embedded PostgreSQL. stop() closes the port and cuts every connection;
 * start() listens again on the same port. In 'blackhole' mode it accepts and never answers.
 */
class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;
  mode: 'forward' | 'blackhole' = 'forward';

  async start(): Promise<void> {
    if (this.server) return;
    const { host, port } = pgInfo();
    const server = createServer((client) => {
      this.track(client);
      if (this.mode === 'blackhole') return;
      const upstream = netConnect({ host, port });
      this.track(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => {
      this.sockets.delete(socket);
      // One end gone: cut the other, as a network path going away would.
      for (const s of this.sockets) if (s !== socket && s.destroyed) this.sockets.delete(s);
    });
    socket.on('end', () => socket.destroy());
  }
}

let db: string;
let rulesDir: string;

beforeAll(async () => {
  db = await createTestDatabase('breaker');
  const c = await directClient(db);
  await c.query(`
    create table accounts(id int primary key);
    insert into accounts values (1);
    create table quotes(symbol text primary key, price int not null);
    insert into quotes values ('BTC', 100);
    create table orders(id int primary key, qty int not null);
    insert into orders values (1, 5);`);
  await c.end();
  rulesDir = mkdtempSync(join(tmpdir(), 'sluice-breaker-rules-'));
  writeFileSync(
    join(rulesDir, '10-cache.yaml'),
    `rules:
  - name: cache-quotes
    match: { kind: select, tables: [quotes] }
    cache: { ttl: 1, serve_stale: true }
  - name: cache-orders
    match: { kind: select, tables: [orders] }
    cache: { ttl: 1 }
`,
  );
});

afterAll(async () => {
  await dropTestDatabase(db);
  rmSync(rulesDir, { recursive: true, force: true });
});

/** A read the cache never answers (volatile): only a live upstream can. */
const LIVE_SQL = 'select id from accounts where random() < 2';

interface Notice {
  message?: string | undefined;
  detail?: string | undefined;
}

interface Outcome {
  ok: boolean;
  code: string | undefined;
  /** From connecting to the outcome. */
  ms: number;
  /** From sending the query to the outcome (the connect included when that is what failed). */
  queryMs: number;
  rows: unknown[];
  notices: Notice[];
}

/** One query on a fresh client: how it ended, how long that took, and what notices came. */
async function attempt(proxy: TestProxy, sql: string): Promise<Outcome> {
  const client = new pg.Client({ connectionString: proxy.url(db) });
  client.on('error', () => {});
  const notices: Notice[] = [];
  client.on('notice', (n) => notices.push(n));
  const started = performance.now();
  let sent = started;
  try {
    await client.connect();
    sent = performance.now();
    const result = await client.query(sql);
    const now = performance.now();
    return { ok: true, code: undefined, ms: now - started, queryMs: now - sent, rows: result.rows, notices };
  } catch (err) {
    const now = performance.now();
    return {
      ok: false,
      code: (err as { code?: string }).code,
      ms: now - started,
      queryMs: now - sent,
      rows: [],
      notices,
    };
  } finally {
    await client.end().catch(() => {});
  }
}

function breakerOf(proxy: TestProxy) {
  const [breaker] = proxy.sluice.pools.breakers();
  if (!breaker) throw new Error('no breaker');
  return breaker;
}

/** Fails connections until a client gets 57P03, checking each error arrives within 3 s. */
async function tripBreaker(proxy: TestProxy): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  for (let i = 0; i < 20; i++) {
    const outcome = await attempt(proxy, LIVE_SQL);
    outcomes.push(outcome);
    expect(outcome.ok).toBe(false);
    expect(outcome.ms).toBeLessThan(3000);
    if (outcome.code === '57P03') break;
  }
  return outcomes;
}

async function waitForService(proxy: TestProxy, sql: string, limitMs: number): Promise<Outcome> {
  const until = performance.now() + limitMs;
  let last: Outcome | undefined;
  while (performance.now() < until) {
    last = await attempt(proxy, sql);
    if (last.ok) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no service within ${limitMs} ms; last error ${last?.code}`);
}

describe('with the relay stopped and restarted', () => {
  const relay = new Relay();
  let proxy: TestProxy;

  beforeAll(async () => {
    await relay.start();
    const { user, password } = pgInfo();
    proxy = await startProxy({
      upstream: `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${relay.port}/postgres`,
      pool_mode: 'transaction',
      pool_size: 4,
      server_connect_timeout: 2,
      breaker_failure_threshold: 3,
      breaker_reset_timeout: 1,
      cache: true,
      rules: rulesDir,
      http: '127.0.0.1:0',
      admin_users: [user],
    });
  });
  afterAll(async () => {
    await proxy.stop();
    await relay.stop();
  });
  afterEach(async () => {
    // Each test leaves the relay up and the breaker closed for the next.
    await relay.start();
    await waitForService(proxy, LIVE_SQL, 30_000);
  });

  it('never opens the breaker for SQL errors or upstream refusals (23505, 3D000)', async () => {
    const client = new pg.Client({ connectionString: proxy.url(db) });
    await client.connect();
    for (let i = 0; i < 10; i++) {
      await expect(client.query('insert into accounts values (1)')).rejects.toMatchObject({ code: '23505' });
    }
    await client.end();
    // A database the upstream does not have: each login reaches the upstream and is refused.
    for (let i = 0; i < 6; i++) {
      const c = new pg.Client({ connectionString: proxy.url(`no_such_db_${i}`) });
      c.on('error', () => {});
      await expect(c.connect()).rejects.toMatchObject({ code: '3D000' });
    }
    const breaker = breakerOf(proxy);
    expect(breaker.state).toBe('closed');
    expect(breaker.failures).toBe(0);
    expect((await attempt(proxy, LIVE_SQL)).rows).toEqual([{ id: 1 }]);
  });

  it('errors within 3 s once the relay stops, then 57P03 within 500 ms, and recovers within 30 s', async () => {
    expect((await attempt(proxy, LIVE_SQL)).ok).toBe(true);
    await relay.stop();
    const outcomes = await tripBreaker(proxy);
    expect(outcomes.at(-1)?.code).toBe('57P03');
    // breaker_failure_threshold is 3: three failed connections in a row open it.
    expect(outcomes.length).toBeLessThanOrEqual(4);
    // The attempts before it failed on the connection itself, not with some unrelated error.
    for (const o of outcomes.slice(0, -1)) expect(o.code).toMatch(/^(08006|57P03)$/);
    const breaker = breakerOf(proxy);
    expect(breaker.state).not.toBe('closed');
    expect(breaker.openedAt).toBeTypeOf('number');
    expect(breaker.lastError).toMatch(/upstream/);

    // Clients already logged in keep their connection: 57P03 is an ERROR, not FATAL.
    const kept = new pg.Client({ connectionString: proxy.url(db) });
    kept.on('error', () => {});
    await kept.connect();
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      await expect(kept.query(LIVE_SQL)).rejects.toMatchObject({ code: '57P03' });
      expect(performance.now() - started).toBeLessThan(500);
    }
    // Many at once, all refused at once (none waits out a connect timeout).
    const burst = await Promise.all(Array.from({ length: 8 }, () => attempt(proxy, LIVE_SQL)));
    for (const o of burst) {
      expect(o.code).toBe('57P03');
      expect(o.queryMs).toBeLessThan(500);
    }

    await relay.start();
    const back = performance.now();
    const recovered = await waitForService(proxy, LIVE_SQL, 30_000);
    expect(recovered.rows).toEqual([{ id: 1 }]);
    expect(performance.now() - back).toBeLessThan(30_000);
    expect(breakerOf(proxy).state).toBe('closed');
    // The client that saw 57P03 goes on on the same connection.
    expect((await kept.query(LIVE_SQL)).rows).toEqual([{ id: 1 }]);
    await kept.end();
  });

  it('shows the breaker on /metrics, /readyz and SHOW BREAKERS, and the rule matches', async () => {
    const http = proxy.sluice.http!;
    const get = (path: string) => fetch(`http://${http.host}:${http.port}${path}`);
    const breakerValue = async () => {
      const text = await (await get('/metrics')).text();
      return Number(/^sluice_breaker_state\{upstream="[^"]+"\} (\d)$/m.exec(text)?.[1]);
    };
    const showBreakers = async () => {
      const admin = new pg.Client({ connectionString: proxy.url('sluice') });
      await admin.connect();
      try {
        return (await admin.query('SHOW BREAKERS')).rows as Array<{ state: string; failures: string }>;
      } finally {
        await admin.end();
      }
    };
    expect(await breakerValue()).toBe(0);
    expect((await get('/readyz')).status).toBe(200);
    expect((await showBreakers())[0]?.state).toBe('closed');
    const quotes = new pg.Client({ connectionString: proxy.url(db) });
    await quotes.connect();
    await quotes.query('select price from quotes where symbol = $1', ['AAPL']);
    await quotes.end();
    const metrics = await (await get('/metrics')).text();
    expect(
      Number(/^sluice_rule_matches_total\{rule="cache-quotes"\} (\d+)$/m.exec(metrics)?.[1]),
    ).toBeGreaterThan(0);

    await relay.stop();
    await tripBreaker(proxy);
    // 2 open, 1 half-open (breaker_reset_timeout is 1 s): either way not closed.
    expect(await breakerValue()).toBeGreaterThan(0);
    const ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(await ready.text()).toMatch(/circuit breaker|upstream/);
    const [row] = await showBreakers();
    expect(row?.state).not.toBe('closed');

    await relay.start();
    await waitForService(proxy, LIVE_SQL, 30_000);
    expect(await breakerValue()).toBe(0);
    expect((await showBreakers())[0]?.state).toBe('closed');
  });

  it('closes without client traffic: the half-open probe finds the upstream back', async () => {
    await relay.stop();
    await tripBreaker(proxy);
    expect(breakerOf(proxy).state).not.toBe('closed');
    await relay.start();
    const until = Date.now() + 30_000;
    while (breakerOf(proxy).state !== 'closed' && Date.now() < until)
      await new Promise((r) => setTimeout(r, 100));
    expect(breakerOf(proxy).state).toBe('closed');
  });

  it('serves a stale entry with a NOTICE only while the breaker is open, then fresh answers', async () => {
    const sql = "select price from quotes where symbol = 'BTC'";
    expect((await attempt(proxy, sql)).rows).toEqual([{ price: 100 }]);
    expect((await attempt(proxy, 'select qty from orders where id = 1')).rows).toEqual([{ qty: 5 }]);
    // Past the rule's 1 s TTL: with the upstream reachable, the expired entry is never served.
    await new Promise((r) => setTimeout(r, 1300));
    const admin = await directClient(db);
    await admin.query("update quotes set price = 101 where symbol = 'BTC'");
    const fresh = await attempt(proxy, sql);
    expect(fresh.rows).toEqual([{ price: 101 }]);
    expect(fresh.notices).toEqual([]);
    await new Promise((r) => setTimeout(r, 1300));
    // Changed behind Sluice's back: only a fresh read could see 102.
    await admin.query("update quotes set price = 102 where symbol = 'BTC'");

    await relay.stop();
    await tripBreaker(proxy);
    const stale = await attempt(proxy, sql);
    expect(stale.ok).toBe(true);
    expect(stale.rows).toEqual([{ price: 101 }]);
    expect(stale.notices).toHaveLength(1);
    expect(stale.notices[0]?.message).toMatch(/stale/);
    expect(stale.notices[0]?.detail).toMatch(/circuit breaker is open/);
    // A rule without serve_stale: its expired entry is not served.
    expect((await attempt(proxy, 'select qty from orders where id = 1')).code).toBe('57P03');

    await relay.start();
    await waitForService(proxy, LIVE_SQL, 30_000);
    const after = await attempt(proxy, sql);
    expect(after.rows).toEqual([{ price: 102 }]);
    expect(after.notices).toEqual([]);
    await admin.end();
  });

  it('does not serve stale what a write through Sluice invalidated', async () => {
    const sql = "select price from quotes where symbol = 'ETH'";
    const admin = await directClient(db);
    await admin.query("insert into quotes values ('ETH', 10) on conflict (symbol) do update set price = 10");
    await admin.end();
    expect((await attempt(proxy, sql)).rows).toEqual([{ price: 10 }]);
    expect((await attempt(proxy, "update quotes set price = 11 where symbol = 'ETH'")).ok).toBe(true);
    await relay.stop();
    await tripBreaker(proxy);
    expect((await attempt(proxy, sql)).code).toBe('57P03');
  });
});

describe('with a relay that accepts and never answers', () => {
  const relay = new Relay();
  let proxy: TestProxy;

  beforeAll(async () => {
    await relay.start();
    const { user, password } = pgInfo();
    proxy = await startProxy({
      upstream: `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${relay.port}/postgres`,
      pool_mode: 'transaction',
      pool_size: 3,
      server_connect_timeout: 1,
      breaker_failure_threshold: 3,
      breaker_reset_timeout: 60,
      query_wait_timeout: 30,
    });
    // Log in once so the pool knows the server's parameters; then idle servers are let go.
    expect((await attempt(proxy, LIVE_SQL)).ok).toBe(true);
  });
  afterAll(async () => {
    await proxy.stop();
    await relay.stop();
  });

  it('times connects out within server_connect_timeout, and the breaker fails the queued clients at once', async () => {
    relay.mode = 'blackhole';
    // Cut the idle server so every client needs a new connection.
    await relay.stop();
    await relay.start();
    const clients = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const c = new pg.Client({ connectionString: proxy.url(db) });
        c.on('error', () => {});
        await c.connect();
        return c;
      }),
    );
    const started = performance.now();
    const outcomes = await Promise.all(
      clients.map((c) =>
        c.query(LIVE_SQL).then(
          () => ({ code: 'ok', ms: performance.now() - started }),
          (err: { code?: string }) => ({ code: err.code, ms: performance.now() - started }),
        ),
      ),
    );
    const codes = outcomes.map((o) => o.code);
    // Three attempts (pool_size) time out after 1 s; the breaker then opens and the other clients,
    // queued behind those attempts and far from query_wait_timeout, get 57P03 with them.
    expect(codes).toContain('08006');
    expect(codes).toContain('57P03');
    for (const o of outcomes) {
      expect(o.code).toMatch(/^(08006|57P03)$/);
      expect(o.ms).toBeLessThan(3000);
    }
    expect(breakerOf(proxy).state).toBe('open');
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  });
});

describe('with every server busy', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1, query_wait_timeout: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('answers 57014 within query_wait_timeout plus the upkeep tick, and the breaker stays closed', async () => {
    const holder = new pg.Client({ connectionString: proxy.url(db) });
    await holder.connect();
    await holder.query('begin');
    await holder.query(LIVE_SQL);
    const outcome = await attempt(proxy, LIVE_SQL);
    expect(outcome.code).toBe('57014');
    expect(outcome.ms).toBeGreaterThanOrEqual(900);
    expect(outcome.ms).toBeLessThan(3000);
    expect(breakerOf(proxy).state).toBe('closed');
    await holder.query('commit');
    await holder.end();
  });
});
