// Owns applying and reverting migrations on one connection: the sluice_migrations ledger, checksum
// verification, one transaction per migration (or none, statement by statement, when the file asks)
// under the advisory lock, and errors that name the file and line.
import { performance } from 'node:perf_hooks';
import { loadModule, parseSync } from 'libpg-query';
import type pg from 'pg';
import { loadMigrations, type MigrationFile, type MigrationScript, selectSections } from './files.js';
import { acquireMigrationLock } from './lock.js';
import {
  chooseTimeSeriesStorage,
  describeTimeSeriesTables,
  readTimescaleFacts,
  type StoredTable,
  type TimeSeriesDecision,
  TimeSeriesError,
  type TimeSeriesRequest,
  type TimeSeriesStorage,
} from './time-series.js';

export const LEDGER_TABLE = 'sluice_migrations';

const CREATE_LEDGER = `CREATE TABLE IF NOT EXISTS ${LEDGER_TABLE} (
  version     integer PRIMARY KEY,
  name        text NOT NULL,
  checksum    text NOT NULL,
  storage     text,
  applied_at  timestamptz NOT NULL DEFAULT now(),
  duration_ms integer NOT NULL,
  notices     text[] NOT NULL DEFAULT '{}'
)`;

export interface MigratorOptions {
  /** The migrations directory. */
  dir: string;
  /** Accept applied migrations whose up file changed (the new checksum is recorded). */
  force?: boolean;
  timeSeries?: TimeSeriesRequest;
  /** How long to wait for another migrator's lock; default 5 minutes. */
  lockTimeoutMs?: number;
  /** Progress lines (applied, reverted, notices, warnings). */
  log?: (line: string) => void;
}

export interface LedgerRow {
  version: number;
  name: string;
  checksum: string;
  storage: TimeSeriesStorage | null;
  applied_at: Date;
  duration_ms: number;
  notices: string[];
}

export type MigrationState = 'applied' | 'pending' | 'changed' | 'missing';

export interface StatusEntry {
  version: number;
  name: string;
  state: MigrationState;
  row?: LedgerRow;
}

export interface StatusReport {
  /** Highest applied version, 0 when none. */
  current: number;
  entries: StatusEntry[];
  /** The storage the time-series migrations use (or used) here, and why. */
  timeSeries: TimeSeriesDecision;
  tables: StoredTable[];
}

export interface StepResult {
  version: number;
  name: string;
  durationMs: number;
}

export interface RunResult {
  from: number;
  to: number;
  steps: StepResult[];
  timeSeries?: TimeSeriesDecision;
}

/** A migration that failed (rolled back unless it ran without a transaction) or a refused run. */
export class MigrationError extends Error {
  constructor(
    message: string,
    readonly file?: string,
    readonly sqlState?: string,
  ) {
    super(message);
    this.name = 'MigrationError';
  }
}

export class Migrator {
  private readonly log: (line: string) => void;

  constructor(
    private readonly client: pg.Client,
    private readonly opts: MigratorOptions,
  ) {
    this.log = opts.log ?? (() => {});
  }

  async status(): Promise<StatusReport> {
    const files = loadMigrations(this.opts.dir);
    const rows = await this.readLedger();
    const byVersion = new Map(rows.map((r) => [r.version, r]));
    const entries: StatusEntry[] = files.map((f) => {
      const row = byVersion.get(f.version);
      if (!row) return { version: f.version, name: f.name, state: 'pending' };
      return {
        version: f.version,
        name: f.name,
        state: row.checksum === f.checksum ? 'applied' : 'changed',
        row,
      };
    });
    for (const row of rows) {
      if (!files.some((f) => f.version === row.version)) {
        entries.push({ version: row.version, name: row.name, state: 'missing', row });
      }
    }
    entries.sort((a, b) => a.version - b.version);
    return {
      current: rows.at(-1)?.version ?? 0,
      entries,
      timeSeries: await this.decideStorage(rows),
      tables: await describeTimeSeriesTables(this.client),
    };
  }

  /** Applies pending migrations in order, at most `count` of them. */
  async up(count = Number.POSITIVE_INFINITY): Promise<RunResult> {
    const files = loadMigrations(this.opts.dir);
    return this.locked(async () => {
      const rows = await this.readLedger();
      await this.verify(files, rows);
      const applied = new Set(rows.map((r) => r.version));
      const current = rows.at(-1)?.version ?? 0;
      const pending = files.filter((f) => !applied.has(f.version));
      const late = pending.find((f) => f.version < current);
      if (late) {
        throw new MigrationError(
          `${late.up.file} is not applied but version ${current} is; renumber it after ${current}`,
          late.up.file,
        );
      }
      const todo = pending.slice(0, count);
      const result: RunResult = { from: current, to: current, steps: [] };
      if (todo.length === 0) return result;
      const decision = await this.decideStorage(rows);
      if (todo.some((f) => f.up.conditional)) {
        result.timeSeries = decision;
        this.log(`time-series storage: ${decision.storage} (${decision.reason})`);
      }
      for (const file of todo) {
        const storage = file.up.conditional ? decision.storage : null;
        const started = performance.now();
        const notices = await this.runScript(file.up, storage, result.to, async (ms, notices) => {
          await this.client.query(
            `INSERT INTO ${LEDGER_TABLE} (version, name, checksum, storage, duration_ms, notices)
             VALUES ($1, $2, $3, $4, $5, $6)`,
            [file.version, file.name, file.checksum, storage, Math.round(ms), notices],
          );
        });
        const durationMs = performance.now() - started;
        result.steps.push({ version: file.version, name: file.name, durationMs });
        result.to = file.version;
        this.log(`applied ${file.up.file} in ${Math.round(durationMs)} ms`);
        for (const n of notices) this.log(`  notice: ${n}`);
      }
      return result;
    });
  }

  /** Reverts the last `count` applied migrations; 0 reverts them all. */
  async down(count = 1): Promise<RunResult> {
    const files = loadMigrations(this.opts.dir);
    return this.locked(async () => {
      const rows = await this.readLedger();
      await this.verify(files, rows);
      const current = rows.at(-1)?.version ?? 0;
      const todo = [...rows].reverse().slice(0, count === 0 ? rows.length : count);
      const result: RunResult = { from: current, to: current, steps: [] };
      for (const row of todo) {
        const file = files.find((f) => f.version === row.version) as MigrationFile;
        // The storage the up file used, so a server that gained TimescaleDB since still reverts right.
        const storage = file.down.conditional
          ? (row.storage ?? (await this.decideStorage(rows)).storage)
          : null;
        const started = performance.now();
        const notices = await this.runScript(file.down, storage, result.to, async () => {
          await this.client.query(`DELETE FROM ${LEDGER_TABLE} WHERE version = $1`, [row.version]);
        });
        const durationMs = performance.now() - started;
        result.steps.push({ version: row.version, name: row.name, durationMs });
        const remaining = rows.filter((r) => r.version < row.version);
        result.to = remaining.at(-1)?.version ?? 0;
        this.log(`reverted ${file.down.file} in ${Math.round(durationMs)} ms`);
        for (const n of notices) this.log(`  notice: ${n}`);
      }
      return result;
    });
  }

  /**
   * Runs one file and `record` (the ledger change) atomically: one transaction, or, for a
   * no-transaction file, statement by statement and then the ledger in its own statement.
   */
  private async runScript(
    script: MigrationScript,
    storage: TimeSeriesStorage | null,
    version: number,
    record: (durationMs: number, notices: string[]) => Promise<void>,
  ): Promise<string[]> {
    const text = storage === null ? script.text : selectSections(script.text, storage, script.file);
    const notices: string[] = [];
    const onNotice = (msg: { message?: string }) => {
      if (msg.message) notices.push(msg.message);
    };
    this.client.on('notice', onNotice);
    const started = performance.now();
    try {
      if (script.noTransaction) {
        for (const stmt of await splitStatements(text, script.file)) {
          try {
            await this.client.query(stmt.sql);
          } catch (err) {
            throw failure(err, script, stmt.sql, stmt.line, version, false);
          }
        }
        await record(performance.now() - started, notices);
      } else {
        await this.client.query('BEGIN');
        try {
          await this.client.query(text);
          await record(performance.now() - started, notices);
          await this.client.query('COMMIT');
        } catch (err) {
          await this.client.query('ROLLBACK').catch(() => {});
          throw failure(err, script, text, 1, version, true);
        }
      }
    } finally {
      this.client.off('notice', onNotice);
    }
    return notices;
  }

  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    await this.client.query('SET client_min_messages = notice');
    const release = await acquireMigrationLock(this.client, this.opts.lockTimeoutMs ?? 300_000, (holder) =>
      this.log(`waiting for the migration lock (held by ${holder})`),
    );
    try {
      await this.client.query(CREATE_LEDGER);
      return await fn();
    } finally {
      await release().catch(() => {});
    }
  }

  private async readLedger(): Promise<LedgerRow[]> {
    const exists = await this.client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [
      LEDGER_TABLE,
    ]);
    if (!exists.rows[0]?.t) return [];
    const { rows } = await this.client.query<LedgerRow>(
      `SELECT version, name, checksum, storage, applied_at, duration_ms, notices
         FROM ${LEDGER_TABLE} ORDER BY version`,
    );
    return rows;
  }

  /** Refuses applied migrations whose up file changed or vanished, unless forced. */
  private async verify(files: MigrationFile[], rows: LedgerRow[]): Promise<void> {
    for (const row of rows) {
      const file = files.find((f) => f.version === row.version);
      if (!file) {
        throw new MigrationError(
          `migration ${row.version} (${row.name}) is applied but has no files in ${this.opts.dir}`,
        );
      }
      if (file.checksum === row.checksum) continue;
      if (!this.opts.force) {
        throw new MigrationError(
          `checksum mismatch: ${file.up.file} changed after it was applied on ${row.applied_at.toISOString()} ` +
            `(recorded sha256 ${row.checksum.slice(0, 12)}…, file now ${file.checksum.slice(0, 12)}…); ` +
            'restore it and put the change in a new migration, or pass --force to accept the edit',
          file.up.file,
        );
      }
      this.log(`warning: ${file.up.file} changed after it was applied; --force records its new checksum`);
      await this.client.query(`UPDATE ${LEDGER_TABLE} SET checksum = $1 WHERE version = $2`, [
        file.checksum,
        row.version,
      ]);
      row.checksum = file.checksum;
    }
  }

  /** The storage already recorded for this database wins: one schema never mixes the two. */
  private async decideStorage(rows: LedgerRow[]): Promise<TimeSeriesDecision> {
    const recorded = rows.find((r) => r.storage !== null);
    const requested = this.opts.timeSeries ?? 'auto';
    if (recorded?.storage) {
      if (requested !== 'auto' && requested !== recorded.storage) {
        throw new TimeSeriesError(
          `this database's time-series tables were built with ${recorded.storage} (migration ${recorded.version}); ` +
            `revert them before switching to ${requested}`,
        );
      }
      const now = chooseTimeSeriesStorage(await readTimescaleFacts(this.client));
      return {
        storage: recorded.storage,
        reason: `recorded when migration ${recorded.version} (${recorded.name}) was applied; now ${now.reason}`,
      };
    }
    return chooseTimeSeriesStorage(await readTimescaleFacts(this.client), requested);
  }
}

let parserReady: Promise<void> | undefined;

/** Statements of a no-transaction file, each with the file line it starts on. */
async function splitStatements(text: string, file: string): Promise<Array<{ sql: string; line: number }>> {
  parserReady ??= loadModule();
  await parserReady;
  let stmts: Array<{ stmt_location?: number; stmt_len?: number }>;
  try {
    stmts = (parseSync(text) as { stmts?: Array<{ stmt_location?: number; stmt_len?: number }> }).stmts ?? [];
  } catch (err) {
    throw new MigrationError(`${file}: does not parse: ${(err as Error).message}`, file);
  }
  // libpg-query reports UTF-8 byte offsets.
  const bytes = Buffer.from(text, 'utf8');
  return stmts.map((s) => {
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    const before = bytes.subarray(0, start).toString('utf8');
    return { sql: bytes.subarray(start, end).toString('utf8'), line: before.split('\n').length };
  });
}

/** The PostgreSQL error turned into one message naming the file, line and what happened to the version. */
function failure(
  err: unknown,
  script: MigrationScript,
  sql: string,
  firstLine: number,
  version: number,
  rolledBack: boolean,
): MigrationError {
  if (err instanceof MigrationError) return err;
  const e = err as Error & { code?: string; position?: string; where?: string };
  let at = script.file;
  if (e.position) {
    const line = firstLine + sql.slice(0, Number(e.position) - 1).split('\n').length - 1;
    at = `${script.file}:${line}`;
  }
  const outcome = rolledBack
    ? `rolled back; the schema stays at version ${version}`
    : `statements before this one stay applied (no-transaction file); the recorded version stays at ${version}`;
  const where = e.where ? ` (${e.where.split('\n')[0]})` : '';
  return new MigrationError(
    `${at}: ${e.message}${e.code ? ` [SQLSTATE ${e.code}]` : ''}${where}; ${outcome}`,
    script.file,
    e.code,
  );
}
