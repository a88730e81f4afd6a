// Tests the metrics endpoint against a real PostgreSQL: /metrics with latency histograms, pool
// gauges and counters that move with traffic, digest label cardinality bounded whatever the
// texts, /healthz, /readyz, /status, per-instance registries, and the slow-query log line.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { logger } from '../../src/observe/logger.js';
import { createTestDatabase, dropTestDatabase } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('metrics');
  proxy = await startProxy({ http: '127.0.0.1:0', metrics_top_digests: 5, pool_size: 4 });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
});

function httpUrl(p: TestProxy, path: string): string {
  const http = p.sluice.http!;
  return `http://${http.host}:${http.port}${path}`;
}

async function scrape(p: TestProxy = proxy): Promise<string> {
  const res = await fetch(httpUrl(p, '/metrics'));
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of the first sample whose line starts with `prefix` (name plus labels). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-z_]+)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

function digestLabels(text: string, name: string): Set<string> {
  const labels = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_count{`)) continue;
    const m = /digest="((?:[^"\\]|\\.)*)"/.exec(line);
    if (m) labels.add(m[1]!);
  }
  return labels;
}

async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: proxy.url(db) });
  c.on('error', () => {});
  await c.connect();
  return c;
}

describe('metrics over HTTP', () => {
  it('shows query latency by pool and digest, pool gauges and byte counters that move with queries', async () => {
    const before = await scrape();
    const c = await client();
    await c.query('create table if not exists m_t(id int primary key, v text)');
    for (let i = 0; i < 20; i++)
      await c.query('insert into m_t values ($1, $2) on conflict do nothing', [i, `v${i}`]);
    for (let i = 0; i < 30; i++) await c.query(`select v from m_t where id = ${i % 20}`);
    const during = await scrape();
    await c.end();

    const pool = `${db}/${proxy.sluice.upstream.user}`;
    // Simple-protocol texts differing in the literal share one digest.
    const selectDigest = [...digestLabels(during, 'sluice_query_duration_seconds')].find((d) =>
      d.startsWith('select v from m_t where id = $1'),
    );
    expect(selectDigest).toBeDefined();
    expect(sample(during, 'sluice_query_duration_seconds_count', { pool, digest: selectDigest! })).toBe(30);
    expect(
      sample(during, 'sluice_query_duration_seconds_bucket', { pool, digest: selectDigest!, le: '+Inf' }),
    ).toBe(30);
    expect(
      sample(during, 'sluice_query_duration_seconds_sum', { pool, digest: selectDigest! }),
    ).toBeGreaterThan(0);
    // The client was connected at scrape time, and a server was in the pool.
    const clients =
      (sample(during, 'sluice_client_connections', { pool, state: 'active' }) ?? 0) +
      (sample(during, 'sluice_client_connections', { pool, state: 'idle' }) ?? 0);
    expect(clients).toBe(1);
    const servers =
      (sample(during, 'sluice_server_connections', { pool, state: 'active' }) ?? 0) +
      (sample(during, 'sluice_server_connections', { pool, state: 'idle' }) ?? 0);
    expect(servers).toBeGreaterThanOrEqual(1);
    expect(sample(during, 'sluice_pool_wait_seconds_count', { pool })).toBeGreaterThan(0);
    expect(sample(during, 'sluice_bytes_received_total')!).toBeGreaterThan(
      sample(before, 'sluice_bytes_received_total')!,
    );
    expect(sample(during, 'sluice_bytes_sent_total')!).toBeGreaterThan(
      sample(before, 'sluice_bytes_sent_total')!,
    );
    expect(sample(during, 'sluice_pinned_clients')).toBe(0);
    for (const name of [
      'sluice_prepared_statement_cache_hits_total',
      'sluice_prepared_statement_cache_misses_total',
      'sluice_cache_hits_total',
      'sluice_cache_misses_total',
      'sluice_cache_bytes',
      'sluice_cache_evictions_total',
      'sluice_cache_invalidations_total',
    ]) {
      expect(sample(during, name), name).toBeDefined();
    }
  });

  it('counts ErrorResponses by SQLSTATE class', async () => {
    const before = sample(await scrape(), 'sluice_errors_total', { class: '42' }) ?? 0;
    const c = await client();
    await expect(c.query('select * from no_such_table_here')).rejects.toMatchObject({ code: '42P01' });
    await expect(c.query('selec 1')).rejects.toMatchObject({ code: '42601' });
    await c.end();
    expect(sample(await scrape(), 'sluice_errors_total', { class: '42' })).toBe(before + 2);
  });

  it('keeps the digest label set within the bound after 10 000 distinct query texts', async () => {
    // Distinct digests, not just distinct literals: each column alias makes a new normalized text.
    const clients = await Promise.all(Array.from({ length: 4 }, () => client()));
    await Promise.all(
      clients.map(async (c, k) => {
        for (let i = k; i < 10_000; i += clients.length) await c.query(`select ${i} as c${i}`);
      }),
    );
    await Promise.all(clients.map((c) => c.end()));
    const text = await scrape();
    const labels = digestLabels(text, 'sluice_query_duration_seconds');
    // metrics_top_digests: 5, plus one "other" per pool.
    expect(labels.has('other')).toBe(true);
    expect(labels.size).toBeLessThanOrEqual(5 + 1);
    // The counts are not lost: other holds what has no label of its own.
    const pool = `${db}/${proxy.sluice.upstream.user}`;
    expect(sample(text, 'sluice_query_duration_seconds_count', { pool, digest: 'other' })).toBeGreaterThan(0);
    // The tracked digests stay bounded too (default digest_stats_max 1000).
    expect(proxy.sluice.metrics!.digests.size).toBeLessThanOrEqual(1000);
    // 10 000 round trips, each a new digest to normalize: minutes on a loaded 2-core machine.
  }, 240_000);

  it('answers /healthz, /readyz and /status', async () => {
    expect((await fetch(httpUrl(proxy, '/healthz'))).status).toBe(200);
    const ready = await fetch(httpUrl(proxy, '/readyz'));
    expect(ready.status).toBe(200);
    const status = (await (await fetch(httpUrl(proxy, '/status'))).json()) as {
      pools: { database: string }[];
      digests: { digest: string; calls: number; p99_ms: number }[];
    };
    expect(status.pools.some((p) => p.database === db)).toBe(true);
    expect(status.digests.length).toBeGreaterThan(0);
    expect(status.digests[0]!.calls).toBeGreaterThan(0);
    expect((await fetch(httpUrl(proxy, '/nope'))).status).toBe(404);
  });

  it('answers /readyz 503 when the upstream is unreachable', async () => {
    const { ObserveHttpServer } = await import('../../src/observe/http-server.js');
    // A port nothing listens on: bind one, note it, close it.
    const net = await import('node:net');
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const server = new ObserveHttpServer({
      host: '127.0.0.1',
      port: 0,
      metrics: undefined,
      upstream: { host: '127.0.0.1', port },
      status: () => ({}),
    });
    const { port: httpPort } = await server.listen();
    try {
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toContain('unreachable');
      // A registered check (the breaker's, later) makes it unready too.
      server.readinessChecks.push(() => 'breaker open');
      expect(await (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).text()).toContain('breaker open');
    } finally {
      await server.close();
    }
  });

  it('gives each running Sluice its own registry', async () => {
    const other = await startProxy({ http: '127.0.0.1:0' });
    try {
      const c = new pg.Client({ connectionString: other.url(db) });
      await c.connect();
      await c.query('select 12345 as only_in_the_other');
      await c.end();
      const mine = await scrape();
      const theirs = await scrape(other);
      expect(
        [...digestLabels(theirs, 'sluice_query_duration_seconds')].some((d) =>
          d.includes('only_in_the_other'),
        ),
      ).toBe(true);
      expect(mine).not.toContain('only_in_the_other');
    } finally {
      await other.stop();
    }
  });

  it('logs a statement slower than slow_query_ms with its digest and duration, values not included', async () => {
    const slow = await startProxy({ slow_query_ms: 100 });
    const warn = vi.spyOn(logger, 'warn');
    try {
      const c = new pg.Client({ connectionString: slow.url(db) });
      await c.connect();
      await c.query("select pg_sleep(0.15), 'secret-literal' as s");
      await c.query('select 1');
      await c.end();
      const lines = warn.mock.calls.filter((call) => call[1] === 'slow query');
      expect(lines).toHaveLength(1);
      const fields = lines[0]![0] as unknown as { digest: string; duration_ms: number };
      expect(fields.digest).toBe('select pg_sleep($1), $2 as s');
      expect(fields.duration_ms).toBeGreaterThanOrEqual(150);
      expect(JSON.stringify(fields)).not.toContain('secret-literal');
    } finally {
      warn.mockRestore();
      await slow.stop();
    }
  });
});
