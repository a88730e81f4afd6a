// pgJDBC (Debian's libpostgresql-jdbc-java, run by drivers/JdbcChecks.java as a single-file source
// program) on a transaction-mode pool of 2 servers: server-side named statements from the first
// execution (prepareThreshold=1), batches, explicit transactions, per-connection SET TIME ZONE
// (issue 4). SLUICE_DRIVERS_DIRECT=1 runs the same checks straight against PostgreSQL, which shows the
// expectations are PostgreSQL's own.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';
import { DIRECT, type DriverError, runDriverCheck } from './harness/driver-check.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

const JAR = '/usr/share/java/postgresql.jar';
const PROGRAM = fileURLToPath(new URL('./drivers/JdbcChecks.java', import.meta.url));
// pgJDBC sends the JVM's zone as the TimeZone startup parameter; a zone that is nobody's default
// shows whether that parameter reaches the server a client runs on.
const JVM_TIME_ZONE = 'America/Sao_Paulo';
const TEST_MS = 30_000;

let db: string;
let proxy: TestProxy | undefined;

beforeAll(async () => {
  db = await createTestDatabase('drivers_jdbc');
  const c = await directClient(db);
  try {
    await c.query('create table jdbc_items (id serial primary key, owner int not null, n int not null)');
    await c.query('create table jdbc_batch (id int primary key, owner int not null, note text not null)');
    await c.query(
      'create table jdbc_tx (id serial primary key, owner int not null, i int not null, outcome text not null)',
    );
  } finally {
    await c.end();
  }
  if (!DIRECT) proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2, query_wait_timeout: 10 });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
});

/** Runs one check of JdbcChecks.java and returns its JSON; a crash or timeout fails with its output. */
async function runCheck<T>(check: string): Promise<T & { error?: DriverError }> {
  return runDriverCheck<T>(check, proxy, db, {
    command: 'java',
    args: [`-Duser.timezone=${JVM_TIME_ZONE}`, '-cp', JAR, PROGRAM, check],
    dropEnv: ['JAVA_TOOL'],
    timeoutMs: TEST_MS - 3_000,
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

async function directQuery<R extends object>(sql: string): Promise<R[]> {
  const c = await directClient(db);
  try {
    return (await c.query<R>(sql)).rows;
  } finally {
    await c.end();
  }
}

describe(`pgJDBC ${DIRECT ? 'directly against PostgreSQL' : 'through a transaction pool of 2'}`, () => {
  it(
    'executes server-prepared statements 25 times on each of 6 connections with correct results',
    async () => {
      const r = await runCheck<{
        conns: { conn: number; mismatches: string[]; pids: number[]; serverPrepared: boolean[] }[];
      }>('prepared');
      expect(r.error).toBeUndefined();
      expect(r.conns).toHaveLength(6);
      for (const c of r.conns) {
        expect(c.mismatches).toEqual([]);
        expect(c.pids).toHaveLength(25);
        expect(c.serverPrepared).toEqual([true, true, true]);
      }
      expectReassignment(r.conns.map((c) => c.pids));
      expect(
        await directQuery<{ owner: number; n: number; s: number }>(
          'select owner, count(*)::int as n, sum(n)::int as s from jdbc_items group by owner order by owner',
        ),
      ).toEqual(Array.from({ length: 6 }, (_, owner) => ({ owner, n: 25, s: (24 * 25) / 2 })));
    },
    TEST_MS,
  );

  it(
    'runs addBatch/executeBatch inserts, and a failing batch leaves none of its rows',
    async () => {
      const r = await runCheck<{ conns: Record<string, unknown>[] }>('batch');
      expect(r.error).toBeUndefined();
      expect(r.conns).toEqual(
        [0, 1, 2].map((conn) => ({
          conn,
          batchSize: 200,
          batchUpdated: 200,
          rowsAfterBatch: 200,
          failedBatchError: '23505',
          rowsAfterFailedBatch: 200,
        })),
      );
      expect(await directQuery<{ n: number }>('select count(*)::int as n from jdbc_batch')).toEqual([
        { n: 600 },
      ]);
    },
    TEST_MS,
  );

  it(
    'persists committed transactions and nothing rolled back, to a savepoint or whole',
    async () => {
      const r = await runCheck<{
        conns: { conn: number; mismatches: string[]; pids: number[] }[];
        outcome: Record<string, number>;
      }>('transactions');
      expect(r.error).toBeUndefined();
      expect(r.conns).toHaveLength(4);
      for (const c of r.conns) expect(c.mismatches).toEqual([]);
      expect(r.outcome).toEqual({ commit: 20, kept: 20 });
      expectReassignment(r.conns.map((c) => c.pids));
    },
    TEST_MS,
  );

  it(
    'gives each connection its own SET TIME ZONE, and the others the zone pgJDBC sent at startup',
    async () => {
      const r = await runCheck<{
        conns: { name: string; seen: [string, string][]; pids: number[] }[];
        jvmTimeZone: string;
      }>('timezone');
      expect(r.error).toBeUndefined();
      expect(r.jvmTimeZone).toBe(JVM_TIME_ZONE);
      // What 2024-01-01 00:00 UTC reads as in each zone.
      const expected: Record<string, [string, string]> = {
        a: ['Asia/Kolkata', '05:30'],
        b: ['Pacific/Auckland', '13:00'],
        n1: [JVM_TIME_ZONE, '21:00'],
        n2: [JVM_TIME_ZONE, '21:00'],
        n3: [JVM_TIME_ZONE, '21:00'],
        n4: [JVM_TIME_ZONE, '21:00'],
      };
      expect(r.conns.map((c) => c.name)).toEqual(Object.keys(expected));
      for (const c of r.conns) {
        expect(c.seen, `connection ${c.name}`).toEqual(Array.from({ length: 12 }, () => expected[c.name]));
      }
      expectReassignment(r.conns.map((c) => c.pids));
    },
    TEST_MS,
  );
});
