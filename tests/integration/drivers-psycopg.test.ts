// psycopg 3 (Debian's python3-psycopg, run by drivers/psycopg_checks.py) on a transaction-mode pool of
// 2 servers with 6 clients: named prepared statements, pipeline mode, per-client TimeZone/search_path
// and LISTEN/NOTIFY (issue 4). SLUICE_DRIVERS_DIRECT=1 runs the same checks straight against
// PostgreSQL, which shows the expectations are PostgreSQL's own.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { DIRECT, type DriverError, runDriverCheck } from './harness/driver-check.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

// Debian's interpreter: the one that sees python3-psycopg (a pyenv `python3` on PATH would not).
const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('./drivers/psycopg_checks.py', import.meta.url));
const TEST_MS = 30_000;
// Same text as HOUR_SQL in psycopg_checks.py: shows that TimeZone is applied, not only reported.
const HOUR_SQL = "select to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24:MI') as h";

let db: string;
let proxy: TestProxy | undefined;
let defaultTimeZone: string;
/** 2024-01-01 00:00 UTC in the server's default TimeZone, as HH24:MI. */
let defaultHour: string;

beforeAll(async () => {
  db = await createTestDatabase('drivers_psycopg');
  const c = await directClient(db);
  try {
    await c.query('create table prep_items (id serial primary key, owner int not null, n int not null)');
    await c.query('create table pipe_items (id serial primary key, owner int not null, n int not null)');
    await c.query("create table public.whoami (label text); insert into public.whoami values ('public')");
    for (const s of ['sa', 'sb', 'sc']) {
      await c.query(`create schema ${s}; create table ${s}.whoami (label text)`);
      await c.query(`insert into ${s}.whoami values ('${s}')`);
    }
    defaultTimeZone = (await c.query<{ TimeZone: string }>('show timezone')).rows[0]!.TimeZone;
    defaultHour = (await c.query<{ h: string }>(HOUR_SQL)).rows[0]!.h;
  } finally {
    await c.end();
  }
  if (!DIRECT) proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2, query_wait_timeout: 10 });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
});

/** Runs one check of psycopg_checks.py and returns its JSON; a crash or timeout fails with its output. */
async function runCheck<T>(check: string): Promise<T & { error?: DriverError }> {
  return runDriverCheck<T>(check, proxy, db, {
    command: PYTHON,
    args: [SCRIPT, check],
    env: { PGSSLMODE: 'disable', PGAPPNAME: `drivers-psycopg-${check}` },
    timeoutMs: TEST_MS - 4_000,
  });
}

/**
 * Through the pool, at least one client ran on more than one server (so statements and settings had to
 * follow it); directly, each connection has one backend, which shows the pid bookkeeping is right.
 */
function expectReassignment(pidLists: number[][], what = 'a client ran on more than one server'): void {
  const reassigned = pidLists.filter((pids) => new Set(pids).size > 1).length;
  if (DIRECT) expect(reassigned, 'one backend per direct connection').toBe(0);
  else
    expect(
      reassigned,
      `${what}; pids seen: ${JSON.stringify(pidLists.map((p) => [...new Set(p)]))}`,
    ).toBeGreaterThan(0);
}

describe(`psycopg 3 ${DIRECT ? 'directly against PostgreSQL' : 'through a transaction pool of 2'}`, () => {
  it(
    'runs named prepared statements correctly on 6 clients reassigned between 2 servers',
    async () => {
      const r = await runCheck<{
        conns: { conn: number; mismatches: string[]; pids: number[]; prepared: number }[];
      }>('prepared');
      expect(r.error).toBeUndefined();
      expect(r.conns).toHaveLength(6);
      for (const c of r.conns) {
        expect(c.mismatches).toEqual([]);
        expect(c.pids).toHaveLength(30);
        // prepare_threshold=0: psycopg holds a named server-side statement for each of its 4 queries.
        expect(c.prepared).toBe(4);
      }
      expectReassignment(r.conns.map((c) => c.pids));
      const check = await directClient(db);
      const rows = await check.query<{ n: number }>('select count(*)::int as n from prep_items');
      await check.end();
      expect(rows.rows[0]!.n).toBe(6 * 30);
    },
    TEST_MS,
  );

  it(
    'runs pipelines of inserts and selects, with a transaction and an error inside a pipeline',
    async () => {
      const r = await runCheck<{
        conns: {
          conn: number;
          count_sum_after_40: [number, number];
          count_after_executemany: number;
          echo: string;
          count_in_transaction: number;
          error_sqlstate: string | null;
          rows_from_failed_pipeline: number;
          final_count: number;
        }[];
      }>('pipeline');
      expect(r.error).toBeUndefined();
      expect(r.conns).toEqual(
        [0, 1, 2, 3].map((k) => ({
          conn: k,
          count_sum_after_40: [40, (39 * 40) / 2],
          count_after_executemany: 60,
          echo: `c${k}-ok`,
          count_in_transaction: 61,
          // Division by zero: everything up to the pipeline's Sync is rolled back, as one implicit
          // transaction, and the connection goes on.
          error_sqlstate: '22012',
          rows_from_failed_pipeline: 0,
          final_count: 61,
        })),
      );
    },
    TEST_MS,
  );

  it(
    'gives each client its own TimeZone and search_path, from SET and from startup options',
    async () => {
      interface Seen {
        tz: string;
        label: string;
        hour: string;
      }
      const r = await runCheck<{
        conns: {
          name: string;
          seen: Seen[];
          after_reset: Seen[];
          pids: number[];
        }[];
      }>('settings');
      expect(r.error).toBeUndefined();
      const hourIn: Record<string, string> = {
        'Asia/Tokyo': '09:00',
        'America/New_York': '19:00',
        'Europe/Berlin': '01:00',
      };
      const expected = (tz: string, label: string): Seen => ({ tz, label, hour: hourIn[tz] ?? defaultHour });
      const byDefault = expected(defaultTimeZone, 'public');
      // a and b SET their own values; c got its values as startup options; n1-n3 changed nothing.
      const during: Record<string, Seen> = {
        a: expected('Asia/Tokyo', 'sa'),
        b: expected('America/New_York', 'sb'),
        c: expected('Europe/Berlin', 'sc'),
        n1: byDefault,
        n2: byDefault,
        n3: byDefault,
      };
      // Then a runs RESET search_path; b and c run RESET ALL, which takes c back to its startup options.
      const afterReset: Record<string, Seen> = {
        ...during,
        a: expected('Asia/Tokyo', 'public'),
        b: byDefault,
      };
      expect(r.conns.map((c) => c.name)).toEqual(Object.keys(during));
      for (const c of r.conns) {
        expect(c.seen, `client ${c.name}`).toEqual(Array.from({ length: 15 }, () => during[c.name]));
        expect(c.after_reset, `client ${c.name} after reset`).toEqual(
          Array.from({ length: 5 }, () => afterReset[c.name]),
        );
      }
      expectReassignment(r.conns.map((c) => c.pids));
    },
    TEST_MS,
  );

  it(
    'delivers a NOTIFY to every client listening on the channel without pinning them, and stops after UNLISTEN',
    async () => {
      interface Round {
        received: [string, string][];
        complete: boolean;
      }
      const r = await runCheck<{ round1: Round[]; round2?: Round[]; pids: number[] }>('listen');
      expect(r.error).toBeUndefined();
      // Committed notifications in commit order; the rolled-back one and other channels never arrive.
      const ticks = ['a', 'b', 'c', 'd'].map((p) => ['ticks', p]);
      expect(r.round1).toEqual([
        { received: ticks, complete: true },
        { received: ticks, complete: true },
      ]);
      // The first listener did UNLISTEN ticks; the second still listens.
      expect(r.round2).toEqual([
        { received: [], complete: true },
        { received: [['ticks', 'e']], complete: true },
      ]);
      expectReassignment([r.pids], 'the listening client moved between servers (not pinned by LISTEN)');
    },
    TEST_MS,
  );
});
