// Tests the admin console against a real PostgreSQL: database "sluice" as an admin user answers
// SHOW POOLS / CLIENTS / SERVERS / STATS / DIGESTS / CACHE / RULES / CONFIG, RELOAD, PAUSE,
// RESUME and SHUTDOWN through psql and node-postgres; anyone else is refused with 42501.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSluice, startSluice } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { createTestDatabase, dropTestDatabase, pgInfo } from './harness/database.js';
import { psql, startProxy, type TestProxy } from './harness/proxy.js';

const ADMIN = 'ops_admin';
let db: string;
let proxy: TestProxy;
const root = mkdtempSync(join(tmpdir(), 'sluice-admin-'));

beforeAll(async () => {
  db = await createTestDatabase('admin_console');
  proxy = await startProxy({ admin_users: [ADMIN, 'other_admin'], cache: true });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
  rmSync(root, { recursive: true, force: true });
});

function adminUrl(p: { host: string; port: number }, user = ADMIN): string {
  return `postgres://${user}@${p.host}:${p.port}/sluice`;
}

async function adminClient(p: { host: string; port: number } = proxy): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: adminUrl(p) });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function appClient(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: proxy.url(db) });
  c.on('error', () => {});
  await c.connect();
  return c;
}

describe('admin console', () => {
  it('answers SHOW POOLS through psql with PgBouncer column names', async () => {
    const app = await appClient();
    await app.query('select 1');
    const out = await psql(adminUrl(proxy), ['-A', '-F', '|', '-c', 'SHOW POOLS']);
    const [header, ...rows] = out.trim().split('\n');
    expect(header!.split('|').slice(0, 4)).toEqual(['database', 'user', 'cl_active', 'cl_waiting']);
    expect(header).toContain('sv_idle');
    expect(header).toContain('maxwait_us');
    const mine = rows.find((r) => r.startsWith(`${db}|`));
    expect(mine).toBeDefined();
    // One client of this pool is connected (the app client).
    expect(mine!.split('|')[2]).toBe('1');
    await app.end();
  });

  it('answers every SHOW view through node-postgres, with the numbers the traffic left', async () => {
    const app = await appClient();
    const admin = await adminClient();
    // The cache judges reads once it has this database's catalog, loaded in the background at
    // first use: on a loaded machine the first reads may pass uncounted (seen in CI).
    const cacheCounted = async () => {
      const { rows } = await admin.query('SHOW CACHE');
      return Number(rows[0].hits) + Number(rows[0].misses);
    };
    for (let i = 0; i < 100 && (await cacheCounted()) === 0; i++) {
      await app.query('select 1 as cache_warm_up');
      await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; i < 7; i++) await app.query(`select ${i} as admin_probe_${'x'}`);
    const clients = await admin.query('SHOW CLIENTS');
    expect(clients.fields.map((f) => f.name)).toEqual(
      expect.arrayContaining(['type', 'user', 'database', 'state']),
    );
    expect(clients.rows.some((r) => r.database === db)).toBe(true);
    const servers = await admin.query('SHOW SERVERS');
    expect(servers.rows.some((r) => r.database === db && r.type === 'S')).toBe(true);
    const digests = await admin.query('SHOW DIGESTS');
    const probe = digests.rows.find((r) => String(r.digest).includes('admin_probe_x'));
    expect(probe).toBeDefined();
    expect(Number(probe.calls) + Number(probe.cache_hits)).toBe(7);
    expect(Number(probe.p99_ms)).toBeGreaterThanOrEqual(Number(probe.p50_ms));
    const stats = await admin.query('SHOW STATS');
    const mine = stats.rows.find((r) => r.database === db);
    expect(Number(mine.total_query_count)).toBeGreaterThanOrEqual(1);
    const cache = await admin.query('SHOW CACHE');
    expect(cache.rows[0].enabled).toBe(true);
    expect(Number(cache.rows[0].hits) + Number(cache.rows[0].misses)).toBeGreaterThan(0);
    const rules = await admin.query('SHOW RULES');
    expect(rules.fields.map((f) => f.name)).toEqual(['name', 'file', 'line', 'actions', 'matches']);
    const config = await admin.query('SHOW CONFIG');
    const byKey = new Map(config.rows.map((r) => [r.key, r.value]));
    expect(byKey.get('pool_mode')).toBe('transaction');
    // Passwords never shown.
    expect(byKey.get('upstream')).not.toContain(`:${encodeURIComponent(pgInfo().password)}@`);
    expect(byKey.get('upstream')).toContain('***');
    // Several commands in one Query, as psql -c sends them.
    const multi = (await admin.query('SHOW POOLS; SHOW CACHE')) as unknown as pg.QueryResult[];
    expect(multi).toHaveLength(2);
    await expect(admin.query('SHOW NOTHING')).rejects.toMatchObject({ code: '42601' });
    // The extended protocol gets a clear error, and the connection stays usable.
    await expect(admin.query({ name: 'prepared_show', text: 'SHOW POOLS' })).rejects.toMatchObject({
      code: '0A000',
    });
    expect((await admin.query('SHOW POOLS')).rows.length).toBeGreaterThan(0);
    await admin.end();
    await app.end();
  });

  it('refuses a user who is not an admin with 42501', async () => {
    const c = new pg.Client({ connectionString: adminUrl(proxy, pgInfo().user) });
    c.on('error', () => {});
    await expect(c.connect()).rejects.toMatchObject({ code: '42501' });
    await expect(psql(adminUrl(proxy, 'nobody'), ['-c', 'SHOW POOLS'])).rejects.toThrow(/admin console/);
  });

  it('PAUSE holds queries until RESUME', async () => {
    const app = await appClient();
    await app.query('select 1');
    const admin = await adminClient();
    await admin.query(`PAUSE ${db}`);
    const paused = await admin.query('SHOW POOLS');
    expect(paused.rows.find((r) => r.database === db).paused).toBe(true);
    let done = false;
    const pending = app.query('select 2 as after_resume').then((r) => {
      done = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(done).toBe(false);
    const waiting = await admin.query('SHOW POOLS');
    expect(Number(waiting.rows.find((r) => r.database === db).cl_waiting)).toBe(1);
    await admin.query(`RESUME ${db}`);
    expect((await pending).rows).toEqual([{ after_resume: 2 }]);
    await admin.end();
    await app.end();
  });

  it('RELOAD picks up a changed log level, slow-query threshold and rules directory', async () => {
    const rulesA = join(root, 'rules-a');
    const rulesB = join(root, 'rules-b');
    const ruleYaml = (...names: string[]) =>
      `rules:\n${names.map((n) => `  - name: ${n}\n    match: { kind: delete, has_where: false }\n    block: { message: "no" }\n`).join('')}`;
    for (const [dir, names] of [
      [rulesA, ['only_in_a']],
      [rulesB, ['first_in_b', 'second_in_b']],
    ] as const) {
      rmSync(dir, { recursive: true, force: true });
      await import('node:fs').then((fs) => fs.mkdirSync(dir, { recursive: true }));
      writeFileSync(join(dir, '10.yaml'), ruleYaml(...names));
    }
    const file = join(root, 'sluice.yaml');
    const info = pgInfo();
    const write = (logLevel: string, rules: string, slow: number) =>
      writeFileSync(
        file,
        `log_level: ${logLevel}\nrules: ${rules}\nslow_query_ms: ${slow}\nadmin_users: [${ADMIN}]\n`,
      );
    write('warn', rulesA, 1000);
    const load = () =>
      loadConfig({
        file,
        env: {},
        flags: {
          listen: '127.0.0.1:0',
          upstream: `postgres://${info.user}:${encodeURIComponent(info.password)}@${info.host}:${info.port}/postgres`,
          auth: 'trust',
        },
      });
    const sluice: RunningSluice = await startSluice(load(), { reloadConfig: load });
    try {
      const admin = await adminClient(sluice);
      expect((await admin.query('SHOW RULES')).rows.map((r) => r.name)).toEqual(['only_in_a']);
      write('error', rulesB, 25);
      await admin.query('RELOAD');
      expect(sluice.config.log_level).toBe('error');
      const config = new Map((await admin.query('SHOW CONFIG')).rows.map((r) => [r.key, r.value]));
      expect(config.get('log_level')).toBe('error');
      expect(config.get('slow_query_ms')).toBe('25');
      expect(sluice.metrics!.slowQueryMs).toBe(25);
      expect((await admin.query('SHOW RULES')).rows.map((r) => r.name)).toEqual([
        'first_in_b',
        'second_in_b',
      ]);
      // A broken file is refused with an error; what is in force stays.
      writeFileSync(file, 'log_level: [not a level\n');
      await expect(admin.query('RELOAD')).rejects.toMatchObject({ code: 'F0000' });
      expect(sluice.config.log_level).toBe('error');
      await admin.end();
    } finally {
      await sluice.stop();
    }
  });

  it('SHUTDOWN stops the proxy', async () => {
    const other = await startProxy({ admin_users: [ADMIN] });
    let stopped = false;
    const original = other.sluice.stop.bind(other.sluice);
    const admin = await adminClient(other);
    await admin.query('SHUTDOWN');
    await admin.end().catch(() => {});
    // New logins are refused once the listener has closed (within 3 s).
    const until = Date.now() + 3000;
    while (Date.now() < until && !stopped) {
      const c = new pg.Client({ connectionString: other.url(db) });
      c.on('error', () => {});
      stopped = await c.connect().then(
        async () => {
          await c.end();
          return false;
        },
        () => true,
      );
      if (!stopped) await new Promise((r) => setTimeout(r, 100));
    }
    expect(stopped).toBe(true);
    await original();
  });
});
