// pgbench -M prepared (named statements prepared once per client, then only Bind/Execute) with 8
// clients on a transaction-mode pool of 3: select-only and TPC-B with zero failed transactions and
// consistent balances (issue 4). SLUICE_DRIVERS_DIRECT=1 runs the same workloads straight against
// PostgreSQL, which shows the expectations are PostgreSQL's own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { DIRECT } from './harness/driver-check.js';
import { execFileAsync, startProxy, type TestProxy } from './harness/proxy.js';

const TEST_MS = 30_000;

let db: string;
let proxy: TestProxy | undefined;

interface PgbenchRun {
  code: number | string | null;
  stdout: string;
  stderr: string;
}

/** Runs pgbench against the proxy (or PostgreSQL directly); never throws, so the test can assert. */
async function pgbench(args: string[], timeoutMs: number): Promise<PgbenchRun> {
  const pg = pgInfo();
  const env: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('PG')),
  );
  Object.assign(env, { PGPASSWORD: pg.password, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '5' });
  const host = proxy?.host ?? pg.host;
  const port = String(proxy?.port ?? pg.port);
  try {
    const { stdout, stderr } = await execFileAsync(
      'pgbench',
      ['-h', host, '-p', port, '-U', pg.user, ...args, db],
      { env, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 },
    );
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number | string; killed?: boolean; stdout?: string; stderr?: string };
    return {
      code: err.killed ? 'killed after timeout' : (err.code ?? null),
      stdout: err.stdout ?? '',
      stderr: err.stderr ?? '',
    };
  }
}

function failedTransactions(out: string): number {
  const m = /number of failed transactions: (\d+)/.exec(out);
  return m ? Number(m[1]) : Number.NaN;
}

function processedTransactions(out: string): number {
  const m = /number of transactions actually processed: (\d+)/.exec(out);
  return m ? Number(m[1]) : 0;
}

/** The run's outcome in one object, so a failure shows pgbench's own complaint next to the numbers. */
function summary(run: PgbenchRun) {
  return {
    code: run.code,
    failed: failedTransactions(run.stdout),
    errors: run.stderr
      .split('\n')
      .filter((l) => /error|abort|fatal/i.test(l))
      .slice(0, 5),
  };
}

beforeAll(async () => {
  db = await createTestDatabase('drivers_pgbench_prepared');
  // Initialised straight against PostgreSQL: the tests are about -M prepared through the pool.
  const pg = pgInfo();
  await execFileAsync(
    'pgbench',
    ['-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-i', '-s', '1', '-q', db],
    {
      env: { ...process.env, PGPASSWORD: pg.password, PGSSLMODE: 'disable' },
      timeout: 60_000,
      killSignal: 'SIGKILL',
    },
  );
  if (!DIRECT) proxy = await startProxy({ pool_mode: 'transaction', pool_size: 3, query_wait_timeout: 10 });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
});

describe(`pgbench -M prepared ${DIRECT ? 'directly against PostgreSQL' : 'through a transaction pool of 3'}`, () => {
  it(
    'runs select-only with 8 clients for 5 s with zero failed transactions',
    async () => {
      const run = await pgbench(
        ['-M', 'prepared', '-c', '8', '-j', '8', '-T', '5', '-n', '-S'],
        TEST_MS - 5_000,
      );
      expect(summary(run)).toEqual({ code: 0, failed: 0, errors: [] });
      expect(processedTransactions(run.stdout)).toBeGreaterThan(100);
    },
    TEST_MS,
  );

  it(
    'runs TPC-B with 8 clients × 100 transactions, all committed, with consistent balances',
    async () => {
      const c = await directClient(db);
      try {
        const historyBefore = (await c.query<{ n: number }>('select count(*)::int as n from pgbench_history'))
          .rows[0]!.n;
        const run = await pgbench(
          ['-M', 'prepared', '-c', '8', '-j', '8', '-t', '100', '-n'],
          TEST_MS - 5_000,
        );
        expect(summary(run)).toEqual({ code: 0, failed: 0, errors: [] });
        expect(processedTransactions(run.stdout)).toBe(800);
        const sums = await c.query<{ a: string; t: string; b: string; h: string; n: number }>(
          `select (select sum(abalance) from pgbench_accounts)::text as a,
                  (select sum(tbalance) from pgbench_tellers)::text as t,
                  (select sum(bbalance) from pgbench_branches)::text as b,
                  (select coalesce(sum(delta), 0) from pgbench_history)::text as h,
                  (select count(*)::int from pgbench_history) as n`,
        );
        const s = sums.rows[0]!;
        expect(s.n - historyBefore).toBe(800);
        expect({ tellers: s.t, branches: s.b, history: s.h }).toEqual({
          tellers: s.a,
          branches: s.a,
          history: s.a,
        });
      } finally {
        await c.end();
      }
    },
    TEST_MS,
  );
});
