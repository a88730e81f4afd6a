// Deadlines for a server connection whose upstream goes silent: query_timeout (57014, a cancel
// upstream, the server closed), server_check_query before reusing a long-idle server, and TCP
// keepalive on both sockets. Faults come from our TCP relay between Sluice and PostgreSQL.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { FaultRelay } from './harness/fault-relay.js';
import { execFileAsync, startProxy, type TestProxy } from './harness/proxy.js';

let db: string;

beforeAll(async () => {
  db = await createTestDatabase('deadline');
});

afterAll(async () => {
  if (db) await dropTestDatabase(db);
});

function client(port: number, extra: Partial<pg.ClientConfig> = {}): pg.Client {
  const { user, password } = pgInfo();
  const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: db, ...extra });
  c.on('error', () => {});
  return c;
}

/** The query's error (or undefined) and how long it took to arrive. */
async function timed(
  p: Promise<unknown>,
): Promise<{ err: (Error & { code?: string }) | undefined; ms: number }> {
  const started = Date.now();
  try {
    await p;
    return { err: undefined, ms: Date.now() - started };
  } catch (err) {
    return { err: err as Error & { code?: string }, ms: Date.now() - started };
  }
}

async function pidOf(c: pg.Client): Promise<number> {
  const { rows } = await c.query<{ pid: number }>('select pg_backend_pid() as pid');
  return rows[0]!.pid;
}

/** Polls pg_stat_activity straight on PostgreSQL until no backend runs `marker` (or `ms` pass). */
async function runningWith(marker: string, ms: number): Promise<number> {
  const admin = await directClient(db);
  try {
    const until = Date.now() + ms;
    for (;;) {
      const { rows } = await admin.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
          where state = 'active' and query like '%' || $1 || '%' and pid <> pg_backend_pid()`,
        [marker],
      );
      if (rows[0]!.n === 0 || Date.now() > until) return rows[0]!.n;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await admin.end();
  }
}

describe('query_timeout against the real server', () => {
  let proxy: TestProxy;

  beforeAll(async () => {
    proxy = await startProxy({ query_timeout: 1, pool_size: 4 });
  });

  afterAll(async () => {
    await proxy?.stop();
  });

  it('cancels a pg_sleep longer than query_timeout with 57014, really stops the backend, keeps the client', async () => {
    const c = client(proxy.port);
    await c.connect();
    const pidBefore = await pidOf(c);
    const { err, ms } = await timed(c.query(`select pg_sleep(30) /* deadline-sleep-1 */`));
    expect(err?.code).toBe('57014');
    expect(err?.message).toMatch(/query_timeout/);
    expect(ms).toBeLessThan(5000);
    // The backend's statement was cancelled, not left sleeping behind a closed socket.
    expect(await runningWith('deadline-sleep-1', 3000)).toBe(0);
    // Outside a transaction in transaction mode the client goes on, on another server connection.
    const { rows } = await c.query<{ n: number }>('select 41 + 1 as n');
    expect(rows[0]!.n).toBe(42);
    expect(await pidOf(c)).not.toBe(pidBefore);
    await c.end();
  });

  it('closes a client whose transaction was on the cancelled server (FATAL 57014), never a hang', async () => {
    const c = client(proxy.port);
    await c.connect();
    await c.query('begin');
    const { err, ms } = await timed(c.query(`select pg_sleep(30) /* deadline-sleep-2 */`));
    expect(err?.code).toBe('57014');
    expect(ms).toBeLessThan(5000);
    expect(await runningWith('deadline-sleep-2', 3000)).toBe(0);
    // The transaction is gone with its server: the connection is closed rather than pretend.
    const after = await timed(c.query('select 1'));
    expect(after.err).toBeDefined();
    await c.end().catch(() => {});
  });

  it('leaves a run of statements alone when each is shorter than query_timeout', async () => {
    const c = client(proxy.port);
    await c.connect();
    // 1.2 s in all on one server connection: each ReadyForQuery restarts the clock.
    await c.query('begin');
    for (let i = 0; i < 4; i++) await c.query('select pg_sleep(0.3)');
    await c.query('commit');
    const { rows } = await c.query<{ n: number }>('select 1 as n');
    expect(rows[0]!.n).toBe(1);
    await c.end();
  });
});

describe('a silent upstream, through the fault relay', () => {
  let relay: FaultRelay;
  let proxy: TestProxy;

  beforeAll(async () => {
    const { host, port, user, password } = pgInfo();
    relay = await FaultRelay.start({ host, port });
    proxy = await startProxy({
      upstream: `postgres://${user}:${encodeURIComponent(password)}@${relay.host}:${relay.port}/postgres`,
      query_timeout: 1,
      pool_size: 4,
      server_connect_timeout: 1,
      server_check_delay: 1,
      // The breaker must not stay open across tests after the blackhole made connects fail.
      breaker_reset_timeout: 0.5,
    });
  });

  afterAll(async () => {
    await proxy?.stop();
    await relay?.stop();
  });

  it('answers 57014 within 5 s when the upstream is blackholed mid-query, and recovers after', async () => {
    const c = client(proxy.port);
    await c.connect();
    await c.query('select 1');
    relay.set('blackhole');
    const { err, ms } = await timed(c.query('select 2'));
    expect(err?.code).toBe('57014');
    expect(ms).toBeLessThan(5000);
    relay.clear();
    // The closed server is replaced by a fresh one once the path heals.
    const until = Date.now() + 10_000;
    let answer: number | undefined;
    while (answer === undefined && Date.now() < until) {
      try {
        answer = (await c.query<{ n: number }>('select 3 as n')).rows[0]!.n;
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    expect(answer).toBe(3);
    await c.end();
  });

  it('keeps serving other clients while one server connection is frozen', async () => {
    const stuck = client(proxy.port);
    await stuck.connect();
    // A session-long server: the frozen connection is the one `stuck` queries on.
    await stuck.query('begin');
    const session = proxy.sluice.proxy.sessionList().find((s) => s.server !== null);
    relay.freezeOpen(session!.server!.socket.localPort);
    const pending = timed(stuck.query('select 1'));
    const other = client(proxy.port);
    await other.connect();
    const started = Date.now();
    const { rows } = await other.query<{ n: number }>('select 7 as n');
    expect(rows[0]!.n).toBe(7);
    expect(Date.now() - started).toBeLessThan(3000);
    const { err, ms } = await pending;
    expect(err?.code).toBe('57014');
    expect(ms).toBeLessThan(5000);
    relay.clear();
    await other.end();
    await stuck.end().catch(() => {});
  });

  it('checks a server idle past server_check_delay before reuse and replaces a dead one', async () => {
    const c = client(proxy.port);
    await c.connect();
    const before = await pidOf(c);
    // Only the pooled (idle) connections go silent; new ones pass.
    relay.freezeOpen();
    await new Promise((r) => setTimeout(r, 1200));
    const started = Date.now();
    const idle = proxy.sluice.pools.list()[0]!.idleServers.length;
    const after = await pidOf(c);
    // Each check (select 1) timed out after server_connect_timeout: a fresh backend answered.
    expect(after).not.toBe(before);
    expect(Date.now() - started).toBeLessThan(idle * 1000 + 4000);
    relay.clear();
    await c.end();
  });
});

describe('tcp_keepalive', () => {
  /** The keepalive timer `ss` shows for a socket, in seconds, or undefined without one. */
  async function keepaliveTimer(localPort: number, remotePort: number): Promise<number | undefined> {
    const { stdout } = await execFileAsync('ss', [
      '-tno',
      'state',
      'established',
      `( sport = :${localPort} and dport = :${remotePort} )`,
    ]);
    const m = /timer:\(keepalive,(?:(\d+)min)?(?:(\d+)sec)?/.exec(stdout);
    if (!m) return undefined;
    return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0);
  }

  it('sets SO_KEEPALIVE with tcp_keepidle on server and client sockets, and none when off', async () => {
    const on = await startProxy({ tcp_keepidle: 45, pool_size: 1 });
    const off = await startProxy({ tcp_keepalive: false, pool_size: 1 });
    try {
      for (const [proxy, expected] of [
        [on, true],
        [off, false],
      ] as const) {
        const c = client(proxy.port);
        await c.connect();
        await c.query('select 1');
        const server = proxy.sluice.pools.list()[0]!.idleServers[0]!;
        const { port: pgPort } = pgInfo();
        const serverTimer = await keepaliveTimer(server.socket.localPort!, pgPort);
        const clientPort = (c as unknown as { connection: { stream: { localPort: number } } }).connection
          .stream.localPort;
        const clientTimer = await keepaliveTimer(proxy.port, clientPort);
        if (expected) {
          expect(serverTimer).toBeGreaterThan(30);
          expect(serverTimer).toBeLessThanOrEqual(45);
          expect(clientTimer).toBeGreaterThan(30);
          expect(clientTimer).toBeLessThanOrEqual(45);
        } else {
          expect(serverTimer).toBeUndefined();
          expect(clientTimer).toBeUndefined();
        }
        await c.end();
      }
    } finally {
      await on.stop();
      await off.stop();
    }
  });
});

describe('a server connection lost during its login', () => {
  let relay: FaultRelay;
  let proxy: TestProxy;

  beforeAll(async () => {
    const { host, port } = pgInfo();
    relay = await FaultRelay.start({ host, port });
  });

  afterAll(async () => {
    await proxy?.stop();
    await relay?.stop();
  });

  for (const kind of ['reset', 'truncate'] as const) {
    it(`is retried on a fresh connection: the waiting client never sees it (${kind})`, async () => {
      const { user, password } = pgInfo();
      // A new Sluice each time, so its first server connection is the one cut.
      await proxy?.stop();
      proxy = await startProxy({
        upstream: `postgres://${user}:${encodeURIComponent(password)}@${relay.host}:${relay.port}/postgres`,
        pool_size: 2,
      });
      const accepted = relay.accepted;
      // The first bytes PostgreSQL sends (its authentication request) are cut, once.
      relay.set(kind, { direction: 'down', keepBytes: 0 });
      const c = client(proxy.port);
      await c.connect();
      const { rows } = await c.query<{ n: number }>('select 5 as n');
      expect(rows[0]!.n).toBe(5);
      // The cut connection was one, a second one served.
      expect(relay.accepted - accepted).toBe(2);
      await c.end();
    });
  }
});
