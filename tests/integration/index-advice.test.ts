// `sluice advise` against real PostgreSQL: a filter with no index behind it gets a CREATE INDEX
// CONCURRENTLY proposal built from the catalog and pg_stats; a filter an index already leads, and a
// small table, get none; nothing is ever created.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadQueryParser } from '../../src/query/analysis.js';
import { advise } from '../../src/rules/advise-command.js';
import { columnUses } from '../../src/rules/index-advisor.js';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { execFileAsync, startProxy } from './harness/proxy.js';

let db: string;
let dir: string;
let upstream: string;

const WORKLOAD = `
-- the bots' reads
select * from trades where account_id = 42 and ts >= now() - interval '1 day' order by ts desc;
select * from trades t where t.account_id = 7 and t.ts >= '2024-03-01';
select price from orders where account_id = 7;
select * from settings where name = 'x';
select count(*) from trades where qty > 0 or symbol = 'AAPL';
`;

async function indexCount(): Promise<number> {
  const c = await directClient(db);
  const n = Number(
    (await c.query('select count(*) from pg_indexes where schemaname = $1', ['public'])).rows[0].count,
  );
  await c.end();
  return n;
}

beforeAll(async () => {
  await loadQueryParser();
  db = await createTestDatabase('index_advice');
  const c = await directClient(db);
  await c.query(`
    create table trades(id bigint primary key, account_id int, symbol text, qty int, ts timestamptz);
    insert into trades select g, g % 500, 'S' || (g % 40), g % 7, '2024-01-01'::timestamptz + g * interval '1 minute'
      from generate_series(1, 60000) g;
    create table orders(id bigint primary key, account_id int, price numeric);
    insert into orders select g, g % 300, g from generate_series(1, 30000) g;
    create index orders_account_idx on orders(account_id);
    create table settings(name text, value text);
    insert into settings values ('x', '1'), ('y', '2');
    analyze;
  `);
  await c.end();
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-advise-'));
  writeFileSync(path.join(dir, 'workload.sql'), WORKLOAD);
  const { host, port, user, password } = pgInfo();
  upstream = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/postgres`;
});

afterAll(async () => {
  await dropTestDatabase(db);
  rmSync(dir, { recursive: true, force: true });
});

describe('SHOW ADVICE in the admin console', () => {
  it('proposes indexes from the digests Sluice has seen, and creates none', async () => {
    const { user } = pgInfo();
    const proxy = await startProxy({ pool_size: 2, admin_users: [user] });
    try {
      const before = await indexCount();
      const bot = new pg.Client({ connectionString: proxy.url(db) });
      await bot.connect();
      for (let i = 0; i < 5; i++) {
        await bot.query(`select * from trades where account_id = ${i} and ts >= '2024-01-02' order by ts`);
        await bot.query(`select price from orders where account_id = ${i}`);
      }
      await bot.end();
      const admin = new pg.Client({ connectionString: proxy.url('sluice') });
      await admin.connect();
      const { rows } = await admin.query('SHOW ADVICE');
      const forDb = await admin.query(`SHOW ADVICE ${db}`);
      const elsewhere = await admin.query('SHOW ADVICE no_such_database');
      await admin.end();
      const trades = rows.filter((r) => r.database === db && r.table === 'public.trades');
      expect(trades.map((r) => r.columns)).toEqual(['account_id,ts']);
      expect(trades[0].statement).toMatch(
        /^CREATE INDEX CONCURRENTLY IF NOT EXISTS .* \("account_id", "ts"\);$/,
      );
      expect(trades[0].example).toMatch(/account_id = \$1/);
      // orders(account_id) already has its index.
      expect(rows.some((r) => r.table === 'public.orders')).toBe(false);
      expect(forDb.rows.length).toBe(rows.filter((r) => r.database === db).length);
      expect(elsewhere.rows).toEqual([]);
      expect(await indexCount()).toBe(before);
    } finally {
      await proxy.stop();
    }
  });
});

describe('sluice advise', () => {
  it('proposes an index for the unindexed filter, equality column first, and none for the rest', async () => {
    const before = await indexCount();
    const { text, code } = await advise({ upstream, database: db, queries: path.join(dir, 'workload.sql') });
    expect(code).toBe(0);
    const proposals = text.split('\n').filter((l) => l.startsWith('CREATE INDEX'));
    expect(proposals).toEqual([
      'CREATE INDEX CONCURRENTLY IF NOT EXISTS "trades_account_id_ts_idx" ON "public"."trades" ("account_id", "ts");',
    ]);
    expect(text).toContain('5 statements from');
    // Advice only.
    expect(await indexCount()).toBe(before);
  });

  it('stops proposing it once an index on the column exists', async () => {
    const c = await directClient(db);
    await c.query('create index trades_account_idx on trades(account_id)');
    await c.end();
    try {
      const { text } = await advise({ upstream, database: db, queries: path.join(dir, 'workload.sql') });
      expect(text).not.toContain('CREATE INDEX');
      expect(text).toContain('-- no index to advise');
    } finally {
      const d = await directClient(db);
      await d.query('drop index trades_account_idx');
      await d.end();
    }
  });

  it('says so, and exits 2, when pg_stat_statements is missing and no --queries is given', async () => {
    // A fresh database has no extensions: CREATE EXTENSION is per database.
    const result = await execFileAsync('node', [
      'dist/cli.js',
      'advise',
      '--upstream',
      upstream,
      '--database',
      db,
    ]).catch((e: { code: number; stdout: string }) => e);
    expect(result).toMatchObject({ code: 2 });
    expect((result as { stdout: string }).stdout).toMatch(/pg_stat_statements is not installed/);
  });
});

describe('columnUses', () => {
  it('finds equality, range and sort columns with aliases resolved, and skips OR', () => {
    expect(
      columnUses(
        'select * from trades t join orders o on o.id = t.id where t.account_id = 7 and o.price between 1 and 2 order by t.ts',
      ),
    ).toEqual([
      [
        { schema: undefined, table: 'trades', column: 'account_id', how: 'equality' },
        { schema: undefined, table: 'orders', column: 'price', how: 'range' },
        { schema: undefined, table: 'trades', column: 'ts', how: 'sort' },
      ],
    ]);
    expect(columnUses('select 1 from trades where a = 1 or b = 2')).toEqual([]);
    expect(columnUses("delete from trades where symbol like 'AA%' and ts < $1")).toEqual([
      [
        { schema: undefined, table: 'trades', column: 'symbol', how: 'range' },
        { schema: undefined, table: 'trades', column: 'ts', how: 'range' },
      ],
    ]);
  });
});
