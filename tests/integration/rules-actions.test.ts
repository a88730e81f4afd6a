// Rule actions other than block and cache, through a real Sluice in front of real PostgreSQL:
// timeout (57014 as statement_timeout, the server reused clean), limit (rows capped), max_concurrency
// (53300 at once, or waiting in turn) and template rewrites (same rows as the original statement).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { execFileAsync, startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;
let dir: string;

const RULES = `rules:
  - name: slow-reads
    match: { functions: [pg_sleep], tables: [timed] }
    timeout: 0.3
  - name: capped-fills
    match: { kind: select, tables: [fills] }
    limit: 3
  - name: one-at-a-time
    match: { tables: [refused] }
    max_concurrency: { limit: 1 }
  - name: take-turns
    match: { tables: [queued] }
    max_concurrency: { limit: 1, queue: true }
  - name: semi-join
    match: { digest: "select id, qty from books where qty in (select qty from books where id > $1) order by id" }
    rewrite:
      template: "select b.id, b.qty from books b where exists (select 1 from books c where c.id > $1 and c.qty = b.qty) order by b.id"
  - name: tagged
    match: { regex: "^select \\\\$1::text as tag$" }
    rewrite: { template: "select current_query() as tag, $1::text as original" }
  - name: too-few-constants
    match: { tables: [books], kind: select, has_limit: true }
    rewrite: { template: "select $1, $2, $3" }
`;

beforeAll(async () => {
  db = await createTestDatabase('rules_actions');
  const c = await directClient(db);
  await c.query(`
    create table timed(x int); insert into timed values (1);
    create table fills(id int primary key, qty int); insert into fills select g, g from generate_series(1, 10) g;
    create table refused(x int); insert into refused values (1);
    create table queued(x int); insert into queued values (1);
    create table books(id int primary key, qty int);
    insert into books select g, (g * 7) % 5 from generate_series(1, 40) g;
    insert into books values (41, null), (42, null);
  `);
  await c.end();
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-rules-actions-'));
  writeFileSync(path.join(dir, '10-actions.yaml'), RULES);
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 3, rules: dir });
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

describe('timeout', () => {
  it('cancels a statement past its limit with 57014, as statement_timeout does, within 3 s', async () => {
    const c = await connect();
    const t0 = Date.now();
    await expect(c.query('select pg_sleep(5) from timed')).rejects.toMatchObject({
      code: '57014',
      message: 'canceling statement due to statement timeout',
    });
    expect(Date.now() - t0).toBeLessThan(3000);
    await c.end();
  });

  it('leaves the servers clean: no statement_timeout survives the statement', async () => {
    // Every server of the pool is used by the next clients; none may keep the rule's limit.
    const clients = await Promise.all([connect(), connect(), connect()]);
    await Promise.all(clients.map((c) => c.query('select pg_sleep(5) from timed').catch(() => undefined)));
    for (const c of clients) {
      await c.query('begin');
      expect((await c.query('show statement_timeout')).rows[0].statement_timeout).toBe('0');
      await c.query('select pg_sleep(0.5)'); // not matched: it reads no table
      await c.query('commit');
    }
    await Promise.all(clients.map((c) => c.end()));
  });

  it('answers a statement within its limit exactly as without the rule (one result, no SET)', async () => {
    const c = await connect();
    const r = await c.query('select pg_sleep(0.01), x from timed');
    expect(Array.isArray(r)).toBe(false);
    expect(r.command).toBe('SELECT');
    expect(r.rows).toEqual([{ pg_sleep: '', x: 1 }]);
    await c.end();
  });

  it('reports error positions in the client text, not the prefixed one', async () => {
    const sql = 'select pg_sleep(0), nosuch from timed';
    const d = await directClient(db);
    const direct = await d.query(sql).catch((e: pg.DatabaseError) => e);
    await d.end();
    const c = await connect();
    const viaSluice = await c.query(sql).catch((e: pg.DatabaseError) => e);
    await c.end();
    expect(viaSluice).toMatchObject({ code: '42703', position: (direct as pg.DatabaseError).position });
    expect((direct as pg.DatabaseError).position).toBe('21');
  });

  it('is not applied inside a transaction block, which stays usable and unchanged', async () => {
    const c = await connect();
    await c.query('begin');
    await c.query('select pg_sleep(0.5) from timed');
    expect((await c.query('show statement_timeout')).rows[0].statement_timeout).toBe('0');
    await c.query('commit');
    await c.end();
  });

  it('applies to psql too: its error text is PostgreSQL own', async () => {
    const err = await execFileAsync('psql', [
      proxy.url(db),
      '-X',
      '-c',
      'select pg_sleep(5) from timed',
    ]).catch((e: { stderr: string; code: number }) => e);
    expect(err).toMatchObject({ code: 1 });
    expect((err as { stderr: string }).stderr).toContain('canceling statement due to statement timeout');
  });
});

describe('limit', () => {
  it('caps a read without LIMIT', async () => {
    const c = await connect();
    const r = await c.query('select id from fills order by id');
    expect(r.rows.map((row) => row.id)).toEqual([1, 2, 3]);
    expect(r.rowCount).toBe(3);
    await c.end();
  });

  it('keeps a smaller LIMIT and caps a larger one, inside a wrapped statement', async () => {
    const c = await connect();
    expect((await c.query('select id from fills order by id desc limit 2')).rows).toEqual([
      { id: 10 },
      { id: 9 },
    ]);
    expect((await c.query('select id from fills order by id desc limit 7')).rows).toEqual([
      { id: 10 },
      { id: 9 },
      { id: 8 },
    ]);
    await c.end();
  });

  it('survives a trailing semicolon and comment', async () => {
    const c = await connect();
    const r = await c.query('select id from fills order by id; -- trailing note');
    expect(r.rows.map((row) => row.id)).toEqual([1, 2, 3]);
    await c.end();
  });

  it('leaves aggregates and writes alone', async () => {
    const c = await connect();
    expect((await c.query('select count(*)::int as n from fills')).rows).toEqual([{ n: 10 }]);
    await c.query('begin');
    const r = await c.query('update fills set qty = qty where id > 0');
    expect(r.rowCount).toBe(10);
    await c.query('rollback');
    await c.end();
  });
});

describe('max_concurrency', () => {
  it('answers 53300 at once to a statement over the limit, and lets it run once the slot is free', async () => {
    const a = await connect();
    const b = await connect();
    const slow = a.query('select pg_sleep(1.5), x from refused');
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await expect(b.query('select pg_sleep(0), x from refused')).rejects.toMatchObject({
      code: '53300',
      message: 'too many concurrent statements for Sluice rule "one-at-a-time"',
    });
    expect(Date.now() - t0).toBeLessThan(1000);
    await slow;
    // The slot went back with the first statement's ReadyForQuery.
    expect((await b.query('select pg_sleep(0), x from refused')).rows[0].x).toBe(1);
    // Inside a transaction the refusal aborts it as an error would.
    const slow2 = a.query('select pg_sleep(1), x from refused');
    await new Promise((r) => setTimeout(r, 300));
    await b.query('begin');
    await expect(b.query('select pg_sleep(0), x from refused')).rejects.toMatchObject({ code: '53300' });
    await expect(b.query('select 1')).rejects.toMatchObject({ code: '25P02' });
    await b.query('rollback');
    await slow2;
    await Promise.all([a.end(), b.end()]);
  });

  it('with queue: true, statements of one digest wait and run one after another', async () => {
    const clients = await Promise.all([connect(), connect(), connect()]);
    const results = await Promise.all(
      clients.map((c) =>
        c.query(
          'select extract(epoch from clock_timestamp())::float8 as s, pg_sleep(0.3), extract(epoch from clock_timestamp())::float8 as e from queued',
        ),
      ),
    );
    const spans = results.map((r) => r.rows[0] as { s: number; e: number }).sort((x, y) => x.s - y.s);
    for (let i = 1; i < spans.length; i++) expect(spans[i]!.s).toBeGreaterThanOrEqual(spans[i - 1]!.e);
    // The slot is free again for everyone.
    expect((await clients[0]!.query('select x from queued')).rows).toEqual([{ x: 1 }]);
    await Promise.all(clients.map((c) => c.end()));
  });

  it('frees the slot of a client that disconnects while waiting or running', async () => {
    const a = await connect();
    const b = await connect();
    const running = a.query('select pg_sleep(0.8), x from queued').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    const waiting = b.query('select pg_sleep(0), x from queued').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    b.end().catch(() => undefined);
    await running;
    await waiting;
    await a.end();
    const c = await connect();
    const t0 = Date.now();
    expect((await c.query('select x from queued')).rows).toEqual([{ x: 1 }]);
    expect(Date.now() - t0).toBeLessThan(3000);
    await c.end();
  });
});

describe('template rewrite', () => {
  it('returns the same rows as the original statement, for each constant', async () => {
    const d = await directClient(db);
    const c = await connect();
    for (const n of [0, 7, 39]) {
      const sql = `select id, qty from books where qty in (select qty from books where id > ${n}) order by id`;
      const direct = (await d.query(sql)).rows;
      expect((await c.query(sql)).rows).toEqual(direct);
    }
    await d.end();
    await c.end();
  });

  it('runs the template with the constants as written', async () => {
    const c = await connect();
    const r = await c.query("select 'it''s'::text as tag");
    expect(r.rows[0]).toEqual({
      tag: "select current_query() as tag, 'it''s'::text as original",
      original: "it's",
    });
    await c.end();
  });

  it('is not applied when the statement has fewer constants than the template uses', async () => {
    const c = await connect();
    expect((await c.query('select id from books order by id limit 1')).rows).toEqual([{ id: 1 }]);
    await c.end();
  });
});
