// The proxy driven by libpq tools (psql, pgbench) and by byte-level clients: COPY both ways,
// a large result through a slow reader, cancel, and graceful shutdown.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  execFileAsync,
  psql,
  rawConnect,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('tools');
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 5 });
});

afterAll(async () => {
  await proxy.stop();
  await dropTestDatabase(db);
});

function pgbenchEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PGPASSWORD: pgInfo().password };
}

function pgbenchArgs(port: number, ...rest: string[]): string[] {
  return ['-h', '127.0.0.1', '-p', String(port), '-U', pgInfo().user, ...rest, db];
}

function failedTransactions(out: string): number {
  const m = /number of failed transactions: (\d+)/.exec(out);
  return m ? Number(m[1]) : Number.NaN;
}

function processedTransactions(out: string): number {
  const m = /number of transactions actually processed: (\d+)/.exec(out);
  return m ? Number(m[1]) : 0;
}

describe('psql', () => {
  it('runs multi-statement scripts, reports errors and copies both ways', async () => {
    const out = await psql(proxy.url(db), [
      '-At',
      '-c',
      'create table fills(id int primary key, symbol text, qty numeric)',
      '-c',
      "insert into fills values (1, 'BTC', 0.5), (2, 'ETH', 3); select count(*) from fills",
    ]);
    expect(out.trim().split('\n').pop()).toBe('2');
    await expect(psql(proxy.url(db), ['-c', 'select * from missing_table'])).rejects.toMatchObject({
      stderr: expect.stringContaining('relation "missing_table" does not exist'),
    });

    const csv = path.join(os.tmpdir(), `sluice-fills-${process.pid}.csv`);
    const lines = Array.from({ length: 5000 }, (_, i) => `${i + 10},SYM${i % 50},${(i % 97) / 7}`);
    writeFileSync(csv, `${lines.join('\n')}\n`);
    const copied = await psql(proxy.url(db), ['-c', `\\copy fills from '${csv}' with (format csv)`]);
    expect(copied).toContain('COPY 5000');
    const back = await psql(proxy.url(db), [
      '-At',
      '-c',
      'copy (select id from fills order by id) to stdout',
    ]);
    expect(back.trim().split('\n')).toHaveLength(5002);
    // A COPY that fails half-way leaves the connection usable and nothing half-loaded.
    writeFileSync(csv, '1,DUP,1\n');
    await expect(
      psql(proxy.url(db), ['-c', `\\copy fills from '${csv}' with (format csv)`]),
    ).rejects.toMatchObject({
      stderr: expect.stringContaining('duplicate key'),
    });
    const count = await psql(proxy.url(db), ['-At', '-c', 'select count(*) from fills']);
    expect(count.trim()).toBe('5002');
  });
});

describe('COPY through postgres.js', () => {
  it('streams COPY FROM STDIN and COPY TO STDOUT', async () => {
    const sql = postgres(proxy.url(db), { max: 1, prepare: false, onnotice: () => {} });
    try {
      await sql`create table ticks(symbol text, price numeric)`;
      const writable = await sql`copy ticks from stdin`.writable();
      await new Promise<void>((resolve, reject) => {
        writable.on('error', reject);
        writable.on('finish', resolve);
        for (let i = 0; i < 1000; i++) writable.write(`S${i % 10}\t${i}.5\n`);
        writable.end();
      });
      const [{ n }] = (await sql`select count(*)::int as n from ticks`) as unknown as [{ n: number }];
      expect(n).toBe(1000);
      const readable = await sql`copy (select * from ticks order by price) to stdout`.readable();
      let bytes = 0;
      for await (const chunk of readable) bytes += (chunk as Buffer).length;
      expect(bytes).toBeGreaterThan(1000 * 5);
    } finally {
      await sql.end();
    }
  });
});

describe('pgbench', () => {
  beforeAll(async () => {
    await execFileAsync('pgbench', pgbenchArgs(proxy.port, '-i', '-s', '1', '-q'), { env: pgbenchEnv() });
  });

  for (const mode of ['simple', 'extended'] as const) {
    it(`select-only with -M ${mode}, 20 clients, has zero failed transactions`, async () => {
      const { stdout } = await execFileAsync(
        'pgbench',
        pgbenchArgs(proxy.port, '-n', '-S', '-M', mode, '-c', '20', '-j', '2', '-t', '200'),
        { env: pgbenchEnv() },
      );
      expect(failedTransactions(stdout)).toBe(0);
      expect(processedTransactions(stdout)).toBe(4000);
    });
  }

  it('TPC-B with 10 clients commits every transaction', async () => {
    const direct = await directClient(db);
    const before = (await direct.query('select count(*)::int as n from pgbench_history')).rows[0].n as number;
    const { stdout } = await execFileAsync(
      'pgbench',
      pgbenchArgs(proxy.port, '-n', '-c', '10', '-j', '2', '-t', '50'),
      {
        env: pgbenchEnv(),
      },
    );
    const after = (await direct.query('select count(*)::int as n from pgbench_history')).rows[0].n as number;
    await direct.end();
    expect(failedTransactions(stdout)).toBe(0);
    expect(after - before).toBe(500);
  });
});

describe('large results', () => {
  it('streams 50 MB to a slow reader while holding back the server (bounded memory)', async () => {
    const socket = await rawConnect(proxy.port);
    socket.write(startupMessage({ user: pgInfo().user, database: db }));
    // About 50 MB: 50 000 rows of 1 000 bytes.
    const query = 'select repeat(md5(i::text), 31) from generate_series(1, 50000) as i';
    const q = Buffer.alloc(5 + Buffer.byteLength(query) + 1);
    q[0] = 0x51;
    q.writeInt32BE(4 + Buffer.byteLength(query) + 1, 1);
    q.write(query, 5);
    let received = 0;
    let loggedIn = false;
    let stalled = false;
    const samples: { serverRead: number; clientGot: number; clientQueued: number }[] = [];
    const sessionOf = () =>
      proxy.sluice.proxy.sessionList().find((s) => s.socket.remotePort === socket.localPort);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stalled after ${received} bytes`)), 50_000);
      socket.on('data', (chunk: Buffer) => {
        if (!loggedIn) {
          if (chunk.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]))) {
            loggedIn = true;
            socket.write(q);
          }
          return;
        }
        received += chunk.length;
        if (!stalled && received > 1_000_000) {
          // Stop reading for a while: the proxy must stop reading from the server too.
          stalled = true;
          socket.pause();
          const sample = () => {
            const session = sessionOf();
            samples.push({
              serverRead: session?.server?.socket.bytesRead ?? -1,
              clientGot: received,
              clientQueued: session?.socket.writableLength ?? -1,
            });
          };
          setTimeout(sample, 700);
          setTimeout(() => {
            sample();
            socket.resume();
          }, 1200);
        }
        const tail = chunk.subarray(-6);
        if (received > 50_000_000 && tail[0] === 0x5a) {
          clearTimeout(timer);
          resolve();
        }
      });
      socket.on('error', reject);
    });
    socket.destroy();
    expect(received).toBeGreaterThan(50_000_000);
    const [early, late] = samples;
    expect(early!.serverRead).toBeGreaterThan(0);
    // While the client reads nothing, the proxy reads nothing more from the server...
    expect(late!.serverRead).toBe(early!.serverRead);
    // ...and what it holds (its queue plus loopback socket buffers) stays small next to 50 MB.
    expect(late!.serverRead - late!.clientGot).toBeLessThan(16 * 1024 * 1024);
    expect(late!.clientQueued).toBeLessThan(2 * 1024 * 1024);
  }, 60_000);
});

describe('cancel', () => {
  it('cancels a running pg_sleep on the server the client is using', async () => {
    const sql = postgres(proxy.url(db), { max: 1, prepare: false });
    try {
      const started = Date.now();
      const sleeping = sql`select pg_sleep(30)`;
      const outcome = sleeping.then(
        () => 'finished',
        (e: { code?: string }) => e.code,
      );
      await new Promise((r) => setTimeout(r, 300));
      await sleeping.cancel();
      expect(await outcome).toBe('57014');
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await sql`select 1 as ok`)[0]!.ok).toBe(1);
    } finally {
      await sql.end();
    }
  });

  it('ignores a CancelRequest with the wrong secret', async () => {
    const c = new pg.Client({ connectionString: proxy.url(db) });
    await c.connect();
    const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
    const running = c.query('select pg_sleep(1) as slept');
    const cancel = Buffer.alloc(16);
    cancel.writeInt32BE(16, 0);
    cancel.writeInt32BE(80877102, 4);
    cancel.writeInt32BE(processID, 8);
    cancel.writeInt32BE(secretKey ^ 1, 12);
    const s = await rawConnect(proxy.port);
    s.end(cancel);
    const r = await running;
    expect(r.rows).toHaveLength(1);
    await c.end();
  });
});

describe('graceful shutdown', () => {
  it('lets an open transaction commit, then tells every client 57P01', async () => {
    const own = await startProxy({ pool_mode: 'transaction', pool_size: 2, shutdown_timeout: 5 });
    const direct = await directClient(db);
    await direct.query('create table shutdown_log(note text)');
    const busy = new pg.Client({ connectionString: own.url(db) });
    const idle = new pg.Client({ connectionString: own.url(db) });
    const idleErrors: string[] = [];
    idle.on('error', (e: Error & { code?: string }) => idleErrors.push(e.code ?? e.message));
    busy.on('error', () => {});
    await busy.connect();
    await idle.connect();
    await busy.query('begin');
    await busy.query("insert into shutdown_log values ('in flight')");
    const stopping = own.stop();
    await new Promise((r) => setTimeout(r, 200));
    // New connections are refused while draining.
    await expect(new pg.Client({ connectionString: own.url(db) }).connect()).rejects.toBeTruthy();
    await busy.query('commit');
    await stopping;
    const rows = await direct.query('select note from shutdown_log');
    await direct.end();
    expect(rows.rows).toEqual([{ note: 'in flight' }]);
    expect(idleErrors).toContain('57P01');
  });
});
