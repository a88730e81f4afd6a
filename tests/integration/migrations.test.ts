// Migrations and the seed against the embedded PostgreSQL (no timescaledb: the native partitioning
// fallback end to end), each test on its own fresh database; the CLI run as a real process.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { MIGRATION_LOCK_KEY } from '../../src/migrate/lock.js';
import { MigrationError, Migrator } from '../../src/migrate/runner.js';
import { seedDatabase } from '../../src/seed/seed.js';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { startProxy } from './harness/proxy.js';

const execFileAsync = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const MIGRATIONS = path.join(ROOT, 'migrations');

const TRADING_TABLES = [
  'account_balances',
  'audit_trail',
  'bars_1m',
  'bots',
  'news_articles',
  'orders',
  'portfolio_snapshots',
  'positions',
  'prices',
  'risk_alerts',
  'signals',
  'symbols',
  'ticks',
  'trades',
];

/** A fresh database and a client on it for the test, dropped afterwards. */
async function withDatabase(
  prefix: string,
  fn: (db: string, client: pg.Client) => Promise<void>,
): Promise<void> {
  const db = await createTestDatabase(prefix);
  const client = await directClient(db);
  try {
    await fn(db, client);
  } finally {
    await client.end().catch(() => {});
    await dropTestDatabase(db);
  }
}

function urlOf(db: string): string {
  const { user, password, host, port } = pgInfo();
  return `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/${db}`;
}

/** Top-level tables (partitions left out) in public. */
async function tables(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ relname: string }>(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1`,
  );
  return rows.map((r) => r.relname);
}

/** Everything in public that is not sluice_migrations or its parts. */
async function leftovers(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ what: string }>(
    `SELECT c.relkind::text || ' ' || c.relname AS what FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relname NOT LIKE 'sluice_migrations%'
     UNION ALL
     SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' AND t.typrelid = 0 AND t.typcategory <> 'A'
     UNION ALL
     SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'public'
     ORDER BY 1`,
  );
  return rows.map((r) => r.what);
}

function copyMigrations(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-migrations-'));
  for (const f of fs.readdirSync(MIGRATIONS)) fs.copyFileSync(path.join(MIGRATIONS, f), path.join(dir, f));
  return dir;
}

describe('sluice migrate', () => {
  it('up builds the trading schema with partitioned time-series tables, status reports it, down 0 removes it', async () => {
    await withDatabase('migrate_full', async (_db, client) => {
      const logs: string[] = [];
      const migrator = new Migrator(client, { dir: MIGRATIONS, log: (l) => logs.push(l) });
      const result = await migrator.up();
      expect(result.from).toBe(0);
      expect(result.to).toBe(8);
      expect(result.timeSeries?.storage).toBe('partitions');
      expect(await tables(client)).toEqual([...TRADING_TABLES, 'sluice_migrations'].sort());
      expect(logs.join('\n')).toMatch(
        /notice: timescaledb is not usable here: bars_1m and ticks use native monthly/,
      );

      // The fallback: range partitions with a default partition, and the ledger says which storage.
      const parts = await client.query<{ parent: string; n: number; has_default: boolean }>(
        `SELECT c.relname AS parent, count(i.inhrelid)::int AS n, bool_or(pt.partdefid = i.inhrelid) AS has_default
           FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid
           JOIN pg_inherits i ON i.inhparent = c.oid GROUP BY 1 ORDER BY 1`,
      );
      expect(parts.rows.map((r) => [r.parent, r.n, r.has_default])).toEqual([
        ['bars_1m', 8, true],
        ['portfolio_snapshots', 8, true],
        ['ticks', 8, true],
      ]);
      const ledger = await client.query<{
        version: number;
        storage: string | null;
        checksum: string;
        notices: string[];
      }>('SELECT version, storage, checksum, notices FROM sluice_migrations ORDER BY version');
      expect(ledger.rows.map((r) => r.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(ledger.rows.map((r) => r.storage)).toEqual([
        null,
        'partitions',
        null,
        null,
        'partitions',
        null,
        null,
        null,
      ]);
      expect(ledger.rows.every((r) => /^[0-9a-f]{64}$/.test(r.checksum))).toBe(true);
      expect(ledger.rows[1]?.notices.join()).toMatch(/native monthly range partitions/);

      // 0008: the result cache's write-notify trigger on the tables the bots read, partitioned
      // parents included, one per table.
      const watched = await client.query<{ t: string }>(
        `SELECT tgrelid::regclass::text AS t FROM pg_trigger WHERE tgname = 'sluice_write_notify' ORDER BY 1`,
      );
      expect(watched.rows.map((r) => r.t)).toEqual([
        'account_balances',
        'bars_1m',
        'news_articles',
        'orders',
        'positions',
        'prices',
        'risk_alerts',
        'signals',
        'symbols',
        'ticks',
        'trades',
      ]);

      // The seeds' partial and composite indexes, and a constraint doing its job.
      const idx = await client.query<{ indexname: string; indexdef: string }>(
        `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'`,
      );
      const def = (name: string) => idx.rows.find((r) => r.indexname === name)?.indexdef ?? '';
      expect(def('orders_working_idx')).toMatch(/WHERE \(status = ANY/);
      expect(def('positions_one_open_idx')).toMatch(/UNIQUE INDEX .*WHERE \(status = 'open'/);
      expect(def('orders_symbol_status_created_idx')).toMatch(/\(symbol, status, created_at\)/);
      expect(def('trades_entry_time_symbol_idx')).toMatch(/\(entry_time, symbol\)/);
      await expect(
        client.query(`INSERT INTO bots (bot_id, bot_name, strategy, initial_capital, current_equity)
                      VALUES ('Bad Id', 'x', 'y', 100, 100)`),
      ).rejects.toMatchObject({ code: '23514' });

      const status = await migrator.status();
      expect(status.current).toBe(8);
      expect(status.entries.map((e) => e.state)).toEqual(Array(8).fill('applied'));
      expect(status.timeSeries.storage).toBe('partitions');
      expect(status.tables.map((t) => `${t.table}:${t.storage}`)).toEqual([
        'bars_1m:partitioned',
        'portfolio_snapshots:partitioned',
        'ticks:partitioned',
      ]);

      const down = await migrator.down(0);
      expect(down.to).toBe(0);
      expect(down.steps.map((s) => s.version)).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
      expect(await leftovers(client)).toEqual([]);
      expect((await client.query('SELECT * FROM sluice_migrations')).rowCount).toBe(0);
      // Clean enough to build again.
      expect((await migrator.up()).to).toBe(8);
    });
  });

  it('up N and down N move the version step by step', async () => {
    await withDatabase('migrate_partial', async (_db, client) => {
      const migrator = new Migrator(client, { dir: MIGRATIONS });
      expect((await migrator.up(2)).to).toBe(2);
      expect(await tables(client)).toEqual([
        'bars_1m',
        'bots',
        'prices',
        'sluice_migrations',
        'symbols',
        'ticks',
      ]);
      const r = await migrator.up(1);
      expect([r.from, r.to, r.steps.length]).toEqual([2, 3, 1]);
      expect(await tables(client)).toContain('signals');
      const back = await migrator.down(2);
      expect([back.from, back.to]).toEqual([3, 1]);
      expect(await tables(client)).toEqual(['bots', 'sluice_migrations']);
      const status = await migrator.status();
      expect(status.current).toBe(1);
      expect(status.entries.map((e) => e.state)).toEqual(['applied', ...Array(7).fill('pending')]);
      expect((await migrator.down()).to).toBe(0);
      expect((await migrator.down()).steps).toEqual([]);
    });
  });

  it('refuses an applied migration whose file changed, naming the file, unless forced', async () => {
    const dir = copyMigrations();
    try {
      await withDatabase('migrate_checksum', async (_db, client) => {
        const migrator = new Migrator(client, { dir });
        await migrator.up(3);
        const file = path.join(dir, '0003_signals_news.up.sql');
        const original = fs.readFileSync(file, 'utf8');
        // A CRLF checkout is not an edit.
        fs.writeFileSync(file, original.replace(/\n/g, '\r\n'));
        expect((await migrator.up(1)).to).toBe(4);
        fs.writeFileSync(
          file,
          original.replace('CHECK (strength BETWEEN -1 AND 1)', 'CHECK (strength BETWEEN -2 AND 2)'),
        );
        const refused = migrator.up();
        await expect(refused).rejects.toThrow(MigrationError);
        await expect(refused).rejects.toThrow(
          /checksum mismatch: .*0003_signals_news\.up\.sql changed after it was applied/,
        );
        await expect(migrator.down()).rejects.toThrow(/checksum mismatch: .*0003_signals_news\.up\.sql/);
        const status = await migrator.status();
        expect(status.entries.find((e) => e.version === 3)?.state).toBe('changed');
        expect(status.current).toBe(4);

        const logs: string[] = [];
        const forced = new Migrator(client, { dir, force: true, log: (l) => logs.push(l) });
        expect((await forced.up()).to).toBe(8);
        expect(logs.join('\n')).toMatch(/0003_signals_news\.up\.sql changed after it was applied; --force/);
        // The new checksum is recorded: an unforced run is fine again.
        expect((await migrator.up()).steps).toEqual([]);
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rolls back a failing migration and leaves the version, with the file, line and PostgreSQL message', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-migrations-'));
    try {
      fs.copyFileSync(path.join(MIGRATIONS, '0001_bots.up.sql'), path.join(dir, '0001_bots.up.sql'));
      fs.copyFileSync(path.join(MIGRATIONS, '0001_bots.down.sql'), path.join(dir, '0001_bots.down.sql'));
      fs.writeFileSync(
        path.join(dir, '0002_fills.up.sql'),
        'CREATE TABLE fills (id int PRIMARY KEY);\nINSERT INTO fills VALUES (1);\nSELECT * FROM no_such_table;\n',
      );
      fs.writeFileSync(path.join(dir, '0002_fills.down.sql'), 'DROP TABLE fills;\n');
      await withDatabase('migrate_fail', async (_db, client) => {
        const migrator = new Migrator(client, { dir });
        const failing = migrator.up();
        await expect(failing).rejects.toThrow(
          /0002_fills\.up\.sql:3: relation "no_such_table" does not exist \[SQLSTATE 42P01\].*rolled back; the schema stays at version 1/,
        );
        await expect(failing).rejects.toMatchObject({
          file: path.join(dir, '0002_fills.up.sql'),
          sqlState: '42P01',
        });
        expect(await tables(client)).toEqual(['bots', 'sluice_migrations']);
        expect((await migrator.status()).current).toBe(1);
        // The connection is usable and the lock released: a fixed file applies.
        fs.writeFileSync(path.join(dir, '0002_fills.up.sql'), 'CREATE TABLE fills (id int PRIMARY KEY);\n');
        expect((await migrator.up()).to).toBe(2);
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets only one of two concurrent up runs apply (advisory lock)', async () => {
    await withDatabase('migrate_lock', async (db, client) => {
      const holder = await directClient(db);
      const other = await directClient(db);
      try {
        await holder.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
        const waits: string[] = [];
        const a = new Migrator(client, { dir: MIGRATIONS, log: (l) => waits.push(l) }).up();
        const b = new Migrator(other, { dir: MIGRATIONS, log: (l) => waits.push(l) }).up();
        // Both queue behind the holder before it lets go (bounded poll).
        for (let i = 0; i < 200 && waits.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
        expect(
          waits.filter((l) => l.startsWith('waiting for the migration lock (held by backend pid')),
        ).toHaveLength(2);
        await holder.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]);
        const [ra, rb] = await Promise.all([a, b]);
        expect([ra.steps.length, rb.steps.length].sort()).toEqual([0, 8]);
        const ledger = await client.query('SELECT version FROM sluice_migrations');
        expect(ledger.rowCount).toBe(8);
      } finally {
        await holder.end();
        await other.end();
      }
    });
  });

  it('runs as `node dist/cli.js migrate ...`: up, status, a refused edit, down 0, new', async () => {
    const dir = copyMigrations();
    try {
      await withDatabase('migrate_cli', async (db, client) => {
        const cli = (...args: string[]) =>
          execFileAsync(process.execPath, [path.join(ROOT, 'dist/cli.js'), ...args], {
            cwd: ROOT,
            timeout: 60_000,
          });
        const url = urlOf(db);
        const up = await cli('migrate', 'up', '--upstream', url, '--dir', dir);
        expect(up.stdout).toMatch(
          /time-series storage: partitions \(the timescaledb extension is not available/,
        );
        expect(up.stdout).toMatch(/applied 8 migration\(s\) in \d+ ms, version 0 -> 8/);
        const status = await cli('migrate', 'status', '--upstream', url, '--dir', dir);
        expect(status.stdout).toMatch(/version: 8 \(8 applied, 0 pending\)/);
        expect(status.stdout).toMatch(/time-series storage: native range partitioning/);
        expect(status.stdout).toMatch(/bars_1m: range-partitioned, 8 partitions \(one default\)/);
        expect(status.stdout).toMatch(/0007 +trades_entry_time_index +applied/);

        fs.appendFileSync(path.join(dir, '0001_bots.up.sql'), '\n-- edited\n');
        const refused = await cli('migrate', 'up', '--upstream', url, '--dir', dir).catch((e: unknown) => e);
        expect(refused).toMatchObject({ code: 1 });
        expect((refused as { stderr: string }).stderr).toMatch(/checksum mismatch: .*0001_bots\.up\.sql/);

        const down = await cli('migrate', 'down', '0', '--upstream', url, '--dir', dir, '--force');
        expect(down.stdout).toMatch(/reverted 8 migration\(s\) in \d+ ms, version 8 -> 0/);
        expect(await leftovers(client)).toEqual([]);

        const created = await cli('migrate', 'new', 'Add fills', '--dir', dir);
        expect(created.stdout).toMatch(/created .*0009_add_fills\.up\.sql/);
        expect(fs.existsSync(path.join(dir, '0009_add_fills.down.sql'))).toBe(true);
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // Five node processes; on a loaded 2-core machine each takes seconds just to start.
  }, 240_000);
});

describe('migrate_on_start', () => {
  it('is off for a given upstream unless set, and then applies the pending migrations before serving', async () => {
    await withDatabase('migrate_on_start', async (db, client) => {
      const plain = await startProxy({ upstream: urlOf(db) });
      await plain.stop();
      expect(await tables(client)).toEqual([]);
      const proxy = await startProxy({ upstream: urlOf(db), migrate_on_start: true });
      try {
        expect(await tables(client)).toEqual([...TRADING_TABLES, 'sluice_migrations'].sort());
        const viaProxy = new pg.Client({ connectionString: proxy.url(db) });
        await viaProxy.connect();
        try {
          const { rows } = await viaProxy.query('SELECT count(*)::int AS n FROM sluice_migrations');
          expect(rows[0]?.n).toBe(8);
        } finally {
          await viaProxy.end();
        }
      } finally {
        await proxy.stop();
      }
    });
  });
});

describe('sluice seed', () => {
  it('loads the requested counts with COPY, deterministically for a seed', async () => {
    await withDatabase('seed', async (_db, client) => {
      await new Migrator(client, { dir: MIGRATIONS }).up();
      // The last Wednesday 20:00 UTC: one day back covers one full NYSE session and 1440 crypto
      // minutes, and falls in the month partitions the migration made around now.
      const end = new Date();
      end.setUTCHours(20, 0, 0, 0);
      while (end.getUTCDay() !== 3 || end.getTime() > Date.now()) end.setUTCDate(end.getUTCDate() - 1);
      const opts = {
        bots: 2,
        symbols: 20,
        days: 1,
        seed: 7,
        end,
        tickMinutes: 10,
        ticksPerMinute: 2,
      };
      const report = await seedDatabase(client, opts);
      const count = async (table: string) =>
        Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]?.n);
      expect(await count('bots')).toBe(2);
      expect(await count('symbols')).toBe(20);
      expect(await count('prices')).toBe(20);
      expect(await count('ticks')).toBe(20 * 10 * 2);
      const perSymbol = await client.query<{ asset_class: string; per: string }>(
        `SELECT s.asset_class, (count(*) / count(DISTINCT b.symbol))::text AS per
           FROM bars_1m b JOIN symbols s USING (symbol) GROUP BY 1 ORDER BY 1`,
      );
      expect(perSymbol.rows).toEqual([
        { asset_class: 'crypto', per: '1440' },
        { asset_class: 'equity', per: '390' },
      ]);
      expect(report.tables.find((t) => t.table === 'bars_1m')?.rows).toBe(await count('bars_1m'));
      expect(report.totalRows).toBeGreaterThan(0);
      expect(await count('signals')).toBe(2 * 24 * 3);
      expect(await count('account_balances')).toBe(2 * 288);
      expect(await count('portfolio_snapshots')).toBe(2 * 24);
      // Orders and trades went through the audit trigger; daily bars were refreshed.
      expect(await count('audit_trail')).toBe(
        (await count('orders')) + (await count('trades')) + (await count('positions')),
      );
      expect(await count('bars_1d')).toBeGreaterThan(0);
      // Rows landed in the month partitions, not the default one.
      expect(await count('bars_1m_default')).toBe(0);

      const digest = async () =>
        (
          await client.query<{ d: string }>(
            `SELECT md5(string_agg(symbol || ts::text || close::text, ',' ORDER BY symbol, ts)) ||
                    (SELECT md5(string_agg(trade_id || entry_price::text, ',' ORDER BY trade_id)) FROM trades) AS d
               FROM bars_1m`,
          )
        ).rows[0]?.d;
      const first = await digest();
      await expect(seedDatabase(client, opts)).rejects.toThrow(/already has rows; pass --reset/);
      await seedDatabase(client, { ...opts, reset: true });
      expect(await digest()).toBe(first);
      await seedDatabase(client, { ...opts, reset: true, seed: 8 });
      expect(await digest()).not.toBe(first);
    });
  });
});
