// Result-cache isolation against real PostgreSQL privileges: a role without SELECT on a table never
// receives a cached row of it (GRANT / REVOKE through Sluice, SET ROLE, set_config('role'), SET
// SESSION AUTHORIZATION), and roles or settings with different row-level security policies on one
// table never share cached rows.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResultCache } from '../../src/cache/result-cache.js';
import {
  createRole,
  createTestDatabase,
  directClient,
  dropRole,
  dropTestDatabase,
} from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

const suffix = randomBytes(4).toString('hex');
const ALLOWED = `iso_allowed_${suffix}`;
const DENIED = `iso_denied_${suffix}`;
const PASSWORD = `iso pw ${suffix}`;

let db: string;
let proxy: TestProxy;
let cache: ResultCache;

beforeAll(async () => {
  db = await createTestDatabase('cache_iso');
  await createRole(ALLOWED, PASSWORD, 'scram-sha-256');
  await createRole(DENIED, PASSWORD, 'scram-sha-256');
  const c = await directClient(db);
  await c.query(`
    create table vault(id int primary key, secret text);
    insert into vault values (1, 'launch code'), (2, 'recipe');
    grant select on vault to ${ALLOWED};
    create table accounts(owner text, tenant text, balance int);
    insert into accounts values ('${ALLOWED}', 't1', 100), ('${DENIED}', 't2', 200), ('${ALLOWED}', 't2', 300);
    alter table accounts enable row level security;
    create policy own_rows on accounts for select to ${ALLOWED}, ${DENIED} using (owner = current_user);
    grant select on accounts to ${ALLOWED}, ${DENIED};
    create table tenant_rows(tenant text, v int);
    insert into tenant_rows values ('t1', 1), ('t2', 2);
    alter table tenant_rows enable row level security;
    create policy by_tenant on tenant_rows for select to ${ALLOWED}
      using (tenant = current_setting('app.tenant', true));
    grant select on tenant_rows to ${ALLOWED};`);
  await c.end();
  proxy = await startProxy({
    cache: true,
    users: [
      { name: ALLOWED, password: PASSWORD },
      { name: DENIED, password: PASSWORD },
    ],
  });
  cache = proxy.sluice.cache!;
  // The catalog loads in the background: wait until a vault read is stored.
  const c2 = await connect();
  const stores = cache.stats.stores;
  for (let i = 0; i < 200 && cache.stats.stores === stores; i++) {
    await c2.query(`select secret from vault where id = ${1000 + i}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await c2.end();
  expect(cache.stats.stores).toBeGreaterThan(stores);
});

afterAll(async () => {
  await proxy.stop();
  await dropTestDatabase(db);
  await dropRole(ALLOWED);
  await dropRole(DENIED);
});

async function connect(user?: string): Promise<pg.Client> {
  const c = new pg.Client({
    connectionString: user ? proxy.url(db, user, PASSWORD) : proxy.url(db),
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

const VAULT_READ = 'select id, secret from vault order by id';

/**
 * Reads until an answer comes from the cache, so that an entry exists for a leak to show. After
 * GRANT/REVOKE (DDL) the catalog reloads in the background first, hence a bounded retry.
 */
async function readCached(c: pg.Client, sql: string): Promise<unknown[]> {
  for (let i = 0; i < 100; i++) {
    const hits = cache.stats.hits;
    const rows = (await c.query(sql)).rows;
    if (cache.stats.hits > hits) return rows;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no cache hit for ${sql}`);
}

describe('cache isolation by privilege', () => {
  it('never gives a role without SELECT the rows another role has cached', async () => {
    const su = await connect();
    const allowed = await connect(ALLOWED);
    const denied = await connect(DENIED);
    try {
      expect(await readCached(su, VAULT_READ)).toHaveLength(2);
      expect(await readCached(allowed, VAULT_READ)).toHaveLength(2);
      for (let i = 0; i < 3; i++) {
        await expect(denied.query(VAULT_READ)).rejects.toMatchObject({ code: '42501' });
      }
    } finally {
      await Promise.all([su.end(), allowed.end(), denied.end()]);
    }
  });

  it('stops serving cached rows to a role once SELECT is revoked through Sluice, and serves again after GRANT', async () => {
    const su = await connect();
    const allowed = await connect(ALLOWED);
    try {
      expect(await readCached(allowed, VAULT_READ)).toHaveLength(2);
      await su.query(`revoke select on vault from ${ALLOWED}`);
      for (let i = 0; i < 2; i++) {
        await expect(allowed.query(VAULT_READ)).rejects.toMatchObject({ code: '42501' });
      }
      await su.query(`grant select on vault to ${ALLOWED}`);
      expect((await allowed.query(VAULT_READ)).rows).toHaveLength(2);
    } finally {
      await Promise.all([su.end(), allowed.end()]);
    }
  });

  it('never serves the login role cached rows after SET ROLE to a role without SELECT', async () => {
    const su = await connect();
    try {
      expect(await readCached(su, VAULT_READ)).toHaveLength(2);
      await su.query(`set role ${DENIED}`);
      await expect(su.query(VAULT_READ)).rejects.toMatchObject({ code: '42501' });
      await su.query('reset role');
      expect((await su.query(VAULT_READ)).rows).toHaveLength(2);
      await su.query(`select set_config('role', '${DENIED}', false)`);
      await expect(su.query(VAULT_READ)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await su.end();
    }
  });

  it('never serves cached rows after SET SESSION AUTHORIZATION to a role without SELECT', async () => {
    const su = await connect();
    try {
      expect(await readCached(su, VAULT_READ)).toHaveLength(2);
      await su.query(`set session authorization ${DENIED}`);
      for (let i = 0; i < 2; i++) {
        await expect(su.query(VAULT_READ)).rejects.toMatchObject({ code: '42501' });
      }
    } finally {
      await su.end();
    }
  });
});

describe('cache isolation under row-level security', () => {
  it('gives two roles with different policies on one table only their own rows, every time', async () => {
    const allowed = await connect(ALLOWED);
    const denied = await connect(DENIED);
    const sql = 'select balance from accounts order by balance';
    try {
      for (let i = 0; i < 3; i++) {
        expect((await allowed.query(sql)).rows).toEqual([{ balance: 100 }, { balance: 300 }]);
        expect((await denied.query(sql)).rows).toEqual([{ balance: 200 }]);
      }
    } finally {
      await Promise.all([allowed.end(), denied.end()]);
    }
  });

  it('gives one role under a setting-driven policy the rows of its current setting only', async () => {
    const a = await connect(ALLOWED);
    const b = await connect(ALLOWED);
    const sql = 'select v from tenant_rows order by v';
    try {
      await a.query("set app.tenant = 't1'");
      await b.query("set app.tenant = 't2'");
      for (let i = 0; i < 3; i++) {
        expect((await a.query(sql)).rows).toEqual([{ v: 1 }]);
        expect((await b.query(sql)).rows).toEqual([{ v: 2 }]);
      }
      await a.query("select set_config('app.tenant', 't2', false)");
      expect((await a.query(sql)).rows).toEqual([{ v: 2 }]);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('never caches a read of a table with row-level security on', async () => {
    const allowed = await connect(ALLOWED);
    try {
      const hits = cache.stats.hits;
      for (let i = 0; i < 3; i++) await allowed.query('select balance from accounts order by balance');
      expect(cache.stats.hits).toBe(hits);
    } finally {
      await allowed.end();
    }
  });
});
