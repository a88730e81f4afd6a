// asyncpg (Debian's python3-asyncpg, run by drivers/asyncpg_checks.py), which always uses named
// prepared statements, on a transaction-mode pool of 2 servers: a client pool of 6 under concurrent
// load, DDL changing a cached statement's result type, and add_listener (issue 4).
// SLUICE_DRIVERS_DIRECT=1 runs the same checks straight against PostgreSQL, which shows the
// expectations are PostgreSQL's own.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { DIRECT, type DriverError, runDriverCheck } from './harness/driver-check.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

// Debian's interpreter: the one that sees python3-asyncpg (a pyenv `python3` on PATH would not).
const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('./drivers/asyncpg_checks.py', import.meta.url));
const TEST_MS = 30_000;

let db: string;
let proxy: TestProxy | undefined;

beforeAll(async () => {
  db = await createTestDatabase('drivers_asyncpg');
  const c = await directClient(db);
  try {
    await c.query('create table apg_items (id serial primary key, owner int not null, n int not null)');
    await c.query('create table apg_ddl (id int primary key, v int not null)');
    await c.query('insert into apg_ddl values (1, 10), (2, 20)');
  } finally {
    await c.end();
  }
  if (!DIRECT) proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2, query_wait_timeout: 10 });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
});

/** Runs one check of asyncpg_checks.py and returns its JSON; a crash or timeout fails with its output. */
async function runCheck<T>(check: string): Promise<T & { error?: DriverError }> {
  return runDriverCheck<T>(check, proxy, db, {
    command: PYTHON,
    args: [SCRIPT, check],
    env: { PGSSLMODE: 'disable' },
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

describe(`asyncpg ${DIRECT ? 'directly against PostgreSQL' : 'through a transaction pool of 2'}`, () => {
  it(
    'answers concurrent fetch/fetchval/fetchrow with parameters from a pool of 6 correctly',
    async () => {
      const r = await runCheck<{ mismatches: string[]; pids: number[] }>('pool');
      expect(r.error).toBeUndefined();
      expect(r.mismatches).toEqual([]);
      expectReassignment([r.pids], 'a separate client querying while the pool is busy changed servers');
      const c = await directClient(db);
      const rows = await c.query<{ owner: number; n: number }>(
        'select owner, count(*)::int as n from apg_items group by owner order by owner',
      );
      await c.end();
      expect(rows.rows).toEqual(Array.from({ length: 12 }, (_, owner) => ({ owner, n: 25 })));
    },
    TEST_MS,
  );

  // asyncpg caches each statement's row description and executes without describing. Sluice
  // compares a statement re-parsed after DDL with the row type the client saw and answers 0A000 as
  // PostgreSQL would; asyncpg then re-prepares by itself, so the application sees no error.
  it(
    'never surfaces 0A000 to autocommit clients when DDL changes a cached statement’s result type',
    async () => {
      type Result = number[][] | { sqlstate: string; message: string };
      const r = await runCheck<{
        warm_up_ok: boolean;
        steps: Record<string, { results: Result[]; columns: [string, string][] }>;
        pids: number[][];
      }>('ddl');
      expect(r.error).toBeUndefined();
      expect(r.warm_up_ok).toBe(true);
      const twoCols = [
        [1, 10],
        [2, 20],
      ];
      const threeCols = [
        [1, 10, 'x'],
        [2, 20, 'x'],
      ];
      // 4 clients × 3 runs of the same cached `select *` after each change.
      const twelve = (rows: unknown) => Array.from({ length: 12 }, () => rows);
      expect(r.steps).toEqual({
        before: {
          results: twelve(twoCols),
          columns: [
            ['id', 'int4'],
            ['v', 'int4'],
          ],
        },
        after_alter_type: {
          results: twelve(twoCols),
          columns: [
            ['id', 'int4'],
            ['v', 'int8'],
          ],
        },
        after_add_column: {
          results: twelve(threeCols),
          columns: [
            ['id', 'int4'],
            ['v', 'int8'],
            ['w', 'text'],
          ],
        },
        after_drop_column: {
          results: twelve(twoCols),
          columns: [
            ['id', 'int4'],
            ['v', 'int8'],
          ],
        },
      });
      expectReassignment(r.pids);
    },
    TEST_MS,
  );

  // asyncpg sends LISTEN through the extended protocol (Parse, Describe, Flush, then Bind, Execute,
  // Sync): the pool's listen hub answers it message by message, so the listener is not pinned.
  it(
    'delivers NOTIFY to an add_listener callback without pinning the listener, and stops after remove_listener',
    async () => {
      interface Round {
        received: [string, string][];
        complete: boolean;
      }
      const r = await runCheck<{ round1: Round; round2: Round; pids: number[] }>('listen');
      expect(r.error).toBeUndefined();
      // Committed notifications in order; the rolled-back one and other channels never arrive.
      expect(r.round1).toEqual({
        received: [
          ['ticks', 'a'],
          ['ticks', 'b'],
          ['ticks', 'c'],
        ],
        complete: true,
      });
      expect(r.round2).toEqual({ received: [], complete: true });
      expectReassignment([r.pids], 'the listening client moved between servers (not pinned by LISTEN)');
    },
    TEST_MS,
  );
});
