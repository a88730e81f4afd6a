// Crashes under a TPC-B-like write load through Sluice: PostgreSQL SIGKILLed and restarted, and
// Sluice itself SIGKILLed (run as `node dist/cli.js serve`). Afterwards every account balance
// equals the sum of its history deltas (pgbench's invariant) and every transaction a client saw
// committed is in the history. This file runs its own embedded PostgreSQL (with default
// durability: synchronous_commit=off would lose acknowledged commits in a crash by design).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type RunningPostgres, startEmbeddedPostgres } from '../../src/embedded/embedded-postgres.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

const ACCOUNTS = 50;
const WORKERS = 6;
const CLI = path.join(import.meta.dirname, '..', '..', 'dist', 'cli.js');

let dir: string;
let pgPort: number;
let server: RunningPostgres | undefined;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const address = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return typeof address === 'object' && address ? address.port : 0;
}

function startPostgres(): Promise<RunningPostgres> {
  return startEmbeddedPostgres({
    dataDir: path.join(dir, 'data'),
    persistent: true,
    port: pgPort,
    fast: false,
  });
}

/** SIGKILL for the postmaster and every backend: a crash, with crash recovery on the next start. */
function killPostgres(pid: number): void {
  let children: number[] = [];
  try {
    children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    // No children listed.
  }
  for (const p of [pid, ...children]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`process ${pid} did not exit`);
}

function upstreamUrl(db = 'postgres'): string {
  return `postgres://postgres:postgres@127.0.0.1:${pgPort}/${db}`;
}

async function direct<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: upstreamUrl('tpcb') });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sluice-crash-'));
  // PostgreSQL may run as another user (`postgres` when we are root): it must reach its data dir.
  await chmod(dir, 0o755);
  pgPort = await freePort();
  server = await startPostgres();
  const admin = new pg.Client({ connectionString: upstreamUrl() });
  await admin.connect();
  await admin.query('create database tpcb');
  await admin.end();
  await direct(async (c) => {
    await c.query('create table accounts (aid int primary key, abalance bigint not null default 0)');
    await c.query('create table history (txid text primary key, aid int not null, delta int not null)');
    await c.query(`insert into accounts (aid) select g from generate_series(1, ${ACCOUNTS}) g`);
  });
}, 240_000);

afterAll(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Load {
  committed: Set<string>;
  errors: string[];
  /** Commits acknowledged since the last mark(). */
  since(): number;
  mark(): void;
  stop(): Promise<void>;
}

/** WORKERS clients running TPC-B-like transactions against `port()` until stopped. */
function runLoad(port: () => number, label: string): Load {
  const committed = new Set<string>();
  const errors: string[] = [];
  let stopped = false;
  let counter = 0;
  let marked = 0;
  const worker = async (w: number) => {
    let c: pg.Client | undefined;
    while (!stopped) {
      try {
        if (!c) {
          c = new pg.Client({
            host: '127.0.0.1',
            port: port(),
            user: 'postgres',
            password: 'postgres',
            database: 'tpcb',
            connectionTimeoutMillis: 3000,
          });
          c.on('error', () => {});
          await c.connect();
        }
        const txid = `${label}-${w}-${counter++}`;
        const aid = 1 + Math.floor(Math.random() * ACCOUNTS);
        const delta = Math.floor(Math.random() * 10_000) - 5000;
        await c.query('begin');
        await c.query('update accounts set abalance = abalance + $1 where aid = $2', [delta, aid]);
        await c.query('insert into history (txid, aid, delta) values ($1, $2, $3)', [txid, aid, delta]);
        await c.query('commit');
        committed.add(txid);
      } catch (err) {
        if (errors.length < 200) errors.push((err as Error).message);
        await c?.end().catch(() => {});
        c = undefined;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await c?.end().catch(() => {});
  };
  const running = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  return {
    committed,
    errors,
    since: () => committed.size - marked,
    mark: () => {
      marked = committed.size;
    },
    stop: async () => {
      stopped = true;
      await running;
    },
  };
}

async function waitForCommits(load: Load, n: number, ms: number): Promise<void> {
  load.mark();
  const deadline = Date.now() + ms;
  while (load.since() < n) {
    if (Date.now() > deadline)
      throw new Error(
        `only ${load.since()} commits in ${ms} ms; errors: ${load.errors.slice(-5).join(' | ')}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** pgbench's invariant, per account, and every acknowledged commit present. */
async function expectConsistent(committed: Set<string>): Promise<void> {
  await direct(async (c) => {
    const mismatched = await c.query(
      `select a.aid, a.abalance, coalesce(sum(h.delta), 0) as deltas
         from accounts a left join history h using (aid)
        group by a.aid, a.abalance having a.abalance <> coalesce(sum(h.delta), 0)`,
    );
    expect(mismatched.rows).toEqual([]);
    const { rows } = await c.query<{ txid: string }>('select txid from history');
    const present = new Set(rows.map((r) => r.txid));
    expect([...committed].filter((t) => !present.has(t))).toEqual([]);
    // No backend left holding a transaction open for a client that is gone.
    const stuck = await c.query(
      "select count(*)::int as n from pg_stat_activity where datname = 'tpcb' and state like 'idle in transaction%'",
    );
    expect(stuck.rows[0].n).toBe(0);
  });
}

it('PostgreSQL killed and restarted mid-run: balances consistent, no acknowledged commit lost', async () => {
  const proxy: TestProxy = await startProxy({
    upstream: upstreamUrl(),
    pool_size: 4,
    server_connect_timeout: 2,
  });
  const load = runLoad(() => proxy.port, 'pgkill');
  try {
    await waitForCommits(load, 30, 30_000);
    const pid = server!.pid;
    killPostgres(pid);
    await waitGone(pid);
    await new Promise((r) => setTimeout(r, 500));
    server = await startPostgres();
    // Service resumes through the same Sluice.
    await waitForCommits(load, 30, 30_000);
  } finally {
    await load.stop();
    await proxy.stop();
  }
  expect(load.errors.length).toBeGreaterThan(0);
  await expectConsistent(load.committed);
}, 120_000);

interface SluiceChild {
  child: ChildProcess;
  port: number;
  exited: Promise<void>;
}

async function spawnSluice(configPath: string): Promise<SluiceChild> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SLUICE_LOG_LEVEL: 'warn' },
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sluice did not start: ${out}`)), 30_000);
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /@127\.0\.0\.1:(\d+)\//.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    void exited.then(() => reject(new Error(`sluice exited: ${out}`)));
  });
  return { child, port, exited };
}

it('Sluice SIGKILLed mid-run: balances consistent, no acknowledged commit lost', async () => {
  const configPath = path.join(dir, 'sluice.json');
  await writeFile(
    configPath,
    JSON.stringify({
      listen: '127.0.0.1:0',
      upstream: upstreamUrl(),
      auth: 'trust',
      pool_size: 4,
      log_level: 'warn',
    }),
  );
  let sluice = await spawnSluice(configPath);
  const load = runLoad(() => sluice.port, 'sluicekill');
  try {
    await waitForCommits(load, 30, 30_000);
    sluice.child.kill('SIGKILL');
    await sluice.exited;
    sluice = await spawnSluice(configPath);
    await waitForCommits(load, 30, 30_000);
  } finally {
    await load.stop();
    sluice.child.kill('SIGTERM');
    await sluice.exited;
  }
  expect(load.errors.length).toBeGreaterThan(0);
  // PostgreSQL notices the dead Sluice's sockets and rolls back what it left open.
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await expectConsistent(load.committed);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}, 120_000);
