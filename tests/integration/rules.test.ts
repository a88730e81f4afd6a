// Rules files in front of real PostgreSQL: a blocked statement gets 42501 naming the rule and never
// reaches the database (simple and extended protocol, in and out of transactions), a rules file
// added at run time takes effect on open connections, a broken file is refused with its position
// while the rules in force stay, and the CLI checks and explains.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { execFileAsync, psql, startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;
let dir: string;

const SAFETY = `# no unbounded writes
rules:
  - name: no-unbounded-delete
    match: { kind: delete, has_where: false }
    block: { message: "DELETE without WHERE is not allowed" }
`;

beforeAll(async () => {
  db = await createTestDatabase('rules');
  const c = await directClient(db);
  await c.query(
    'create table fills(id int primary key, qty int); insert into fills select g, g from generate_series(1, 10) g',
  );
  await c.query(
    "create table ticks(ts timestamptz, price int); insert into ticks select '2024-03-01'::timestamptz + g * interval '37 minutes', g from generate_series(1, 200) g",
  );
  await c.end();
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-rules-'));
  writeFileSync(path.join(dir, '10-safety.yaml'), SAFETY);
  writeFileSync(
    path.join(dir, '05-rewrite.yaml'),
    'rules:\n  - name: sargable-ticks\n    match: { tables: [ticks] }\n    rewrite: { builtin: sargable-time-range }\n',
  );
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2, rules: dir });
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

async function rowCount(): Promise<number> {
  const d = await directClient(db);
  const n = Number((await d.query('select count(*) from fills')).rows[0].count);
  await d.end();
  return n;
}

async function until(check: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

describe('rules', () => {
  it('blocks DELETE without WHERE with 42501 naming the rule; nothing reaches the database', async () => {
    const c = await connect();
    await expect(c.query('delete from fills')).rejects.toMatchObject({
      code: '42501',
      message: 'statement blocked by Sluice rule "no-unbounded-delete"',
      hint: 'DELETE without WHERE is not allowed',
    });
    // Extended protocol (a named statement), then inside a transaction, which it aborts as an error would.
    await expect(c.query({ name: 'wipe', text: 'delete from fills', values: [] })).rejects.toMatchObject({
      code: '42501',
    });
    await c.query('begin');
    await c.query('select 1');
    await expect(c.query('delete from fills')).rejects.toMatchObject({ code: '42501' });
    await expect(c.query('select 1')).rejects.toMatchObject({ code: '25P02' });
    await c.query('rollback');
    expect(await rowCount()).toBe(10);
    // A DELETE with a WHERE goes through.
    await c.query('delete from fills where id = 10');
    expect(await rowCount()).toBe(9);
    // psql shows the rule's name and hint.
    await expect(psql(proxy.url(db), ['-c', 'delete from fills'])).rejects.toThrow(/no-unbounded-delete/);
    await c.end();
  });

  it('rewrites a date_trunc filter into a range on the way and returns the same rows', async () => {
    const c = await connect();
    const direct = await directClient(db);
    const rewritten = proxy.sluice.rules!.stats.rewritten;
    for (const tz of ['UTC', 'Europe/Berlin']) {
      await c.query(`set timezone = '${tz}'`);
      await direct.query(`set timezone = '${tz}'`);
      const q =
        "select count(*)::int as n, sum(price)::int as s from ticks where date_trunc('day', ts) = '2024-03-02'";
      const through = await c.query(q);
      expect(through.rows).toEqual((await direct.query(q)).rows);
      expect(through.rows[0].n).toBeGreaterThan(0);
    }
    expect(proxy.sluice.rules!.stats.rewritten).toBe(rewritten + 2);
    await direct.end();
    await c.end();
  });

  it('takes a rules file added at run time on open connections, refuses a broken one and keeps the rules in force', async () => {
    const c = await connect();
    await c.query('truncate fills'); // allowed for now
    writeFileSync(
      path.join(dir, '20-truncate.yaml'),
      'rules:\n  - name: no-truncate\n    match: { kind: truncate }\n    block: { message: "use DELETE with a WHERE" }\n',
    );
    const took = await until(async () => {
      try {
        await c.query('truncate fills');
        return false;
      } catch (err) {
        return (err as { code?: string }).code === '42501';
      }
    });
    expect(took).toBe(true);
    // A typo: refused whole, with its position; both rules stay in force.
    writeFileSync(
      path.join(dir, '30-broken.yaml'),
      'rules:\n  - name: typo\n    match: { kind: select }\n    blok: { message: x }\n',
    );
    const watcher = proxy.sluice.rules!;
    const refused = await until(async () => watcherError() !== undefined);
    expect(refused).toBe(true);
    expect(watcherError()).toMatch(/30-broken\.yaml:4:5/);
    await expect(c.query('truncate fills')).rejects.toMatchObject({ code: '42501' });
    await expect(c.query('delete from fills')).rejects.toMatchObject({ code: '42501' });
    expect(watcher.rules.rules.map((r) => r.name)).toEqual([
      'sargable-ticks',
      'no-unbounded-delete',
      'no-truncate',
    ]);
    rmSync(path.join(dir, '30-broken.yaml'));
    rmSync(path.join(dir, '20-truncate.yaml'));
    expect(await until(async () => watcher.rules.rules.length === 2)).toBe(true);
    await c.query('truncate fills');
    await c.end();
  });
});

function watcherError(): string | undefined {
  return proxy.sluice.rulesWatcher?.stats.lastError;
}

describe('sluice rules check / explain', () => {
  it('fails check on a failing test case and passes when it holds', async () => {
    const d = mkdtempSync(path.join(tmpdir(), 'sluice-rules-check-'));
    try {
      writeFileSync(
        path.join(d, 'a.yaml'),
        `${SAFETY}tests:\n  - query: "DELETE FROM fills"\n    expect: blocked\n  - query: "DELETE FROM fills WHERE id = 1"\n    expect: blocked\n`,
      );
      const failed = await execFileAsync('node', ['dist/cli.js', 'rules', 'check', d]).catch((e) => e);
      expect(failed.code).toBe(1);
      expect(failed.stdout).toMatch(/FAIL .*a\.yaml:\d+:\d+ DELETE FROM fills WHERE id = 1/);
      writeFileSync(
        path.join(d, 'a.yaml'),
        `${SAFETY}tests:\n  - query: "DELETE FROM fills"\n    expect: blocked\n  - query: "DELETE FROM fills WHERE id = 1"\n    expect: allowed\n`,
      );
      const ok = await execFileAsync('node', ['dist/cli.js', 'rules', 'check', d]);
      expect(ok.stdout).toMatch(/2 of 2 tests passed/);
      writeFileSync(path.join(d, 'b.yaml'), 'rules:\n  - name: x\n    match: { kindd: select }\n');
      const broken = await execFileAsync('node', ['dist/cli.js', 'rules', 'check', d]).catch((e) => e);
      expect(broken.code).toBe(2);
      expect(broken.stderr).toMatch(/b\.yaml:3:\d+/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('explains the sargable rewrite of a date_trunc query', async () => {
    const d = mkdtempSync(path.join(tmpdir(), 'sluice-rules-explain-'));
    try {
      writeFileSync(
        path.join(d, 'r.yaml'),
        'rules:\n  - name: sargable-ticks\n    match: { tables: [ticks] }\n    rewrite: { builtin: sargable-time-range }\n',
      );
      const { stdout } = await execFileAsync('node', [
        'dist/cli.js',
        'rules',
        'explain',
        '--rules',
        d,
        "select avg(price) from ticks where date_trunc('day', ts) = '2024-03-01'",
      ]);
      expect(stdout).toMatch(/sargable-ticks/);
      expect(stdout).toMatch(
        /final query\n\s+select avg\(price\) from ticks where .*ts >= '2024-03-01'.*ts < /,
      );
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('cache rules', () => {
  let cached: TestProxy;
  let cacheDir: string;

  beforeAll(async () => {
    cacheDir = mkdtempSync(path.join(tmpdir(), 'sluice-rules-cache-'));
    writeFileSync(
      path.join(cacheDir, 'cache.yaml'),
      [
        'rules:',
        '  - name: clock-dashboard',
        '    match: { kind: select, functions: [now, random] }',
        '    cache: { ttl: 1, allow_stable: true }',
        '  - name: fills-short',
        '    match: { tables: [fills] }',
        '    cache: { ttl: 1 }',
        '',
      ].join('\n'),
    );
    cached = await startProxy({ pool_mode: 'transaction', pool_size: 2, cache: true, rules: cacheDir });
  });

  afterAll(async () => {
    await cached?.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('caches stable functions for the TTL a rule allows, never volatile ones, and expires by the rule TTL', async () => {
    const c = new pg.Client({ connectionString: cached.url(db) });
    c.on('error', () => {});
    await c.connect();
    const cache = cached.sluice.cache!;
    const now = async () => String((await c.query('select now()::text as t')).rows[0].t);
    // The catalog loads in the background: wait until a now() read is answered from the cache.
    let first = await now();
    let hit = false;
    for (let i = 0; i < 100 && !hit; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const hits = cache.stats.hits;
      const again = await now();
      hit = cache.stats.hits > hits && again === first;
      if (!hit) first = again;
    }
    expect(hit).toBe(true);
    await new Promise((r) => setTimeout(r, 1200));
    expect(await now()).not.toBe(first);
    // random() is volatile: no rule makes it cacheable.
    const r1 = (await c.query('select random() as r')).rows[0].r;
    const r2 = (await c.query('select random() as r')).rows[0].r;
    expect(r1).not.toBe(r2);
    // A rule's TTL bounds a write that bypasses Sluice.
    const seed = await directClient(db);
    await seed.query('insert into fills values (3, 3) on conflict (id) do update set qty = 3');
    await seed.end();
    const q = 'select qty from fills where id = 3';
    const before = (await c.query(q)).rows;
    expect(before).toEqual([{ qty: 3 }]);
    await c.query(q);
    const direct = await directClient(db);
    await direct.query('update fills set qty = qty + 1000 where id = 3');
    expect((await c.query(q)).rows).toEqual(before);
    await new Promise((r) => setTimeout(r, 1200));
    expect((await c.query(q)).rows).toEqual([{ qty: 1003 }]);
    await direct.end();
    await c.end();
  });
});
