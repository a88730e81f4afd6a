// Owns the choice between TimescaleDB hypertables and native range partitioning for the
// time-series tables, and reading back how a database's time-series tables are stored.
import type pg from 'pg';

export type TimeSeriesStorage = 'timescaledb' | 'partitions';
export type TimeSeriesRequest = 'auto' | TimeSeriesStorage;

export interface TimescaleFacts {
  /** default_version in pg_available_extensions, or null when the server has no such extension. */
  availableVersion: string | null;
  /** extversion in pg_extension (already created in this database), or null. */
  installedVersion: string | null;
  /** current_setting('shared_preload_libraries') */
  sharedPreloadLibraries: string;
}

export interface TimeSeriesDecision {
  storage: TimeSeriesStorage;
  /** One sentence for logs and `status`. */
  reason: string;
}

export class TimeSeriesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeSeriesError';
  }
}

/**
 * TimescaleDB is used when the extension is installed in the database, or available and preloaded
 * (CREATE EXTENSION refuses a library that is not in shared_preload_libraries, so "available" alone
 * would fail half way through a migration). Anything else falls back to native partitioning.
 */
export function chooseTimeSeriesStorage(
  facts: TimescaleFacts,
  requested: TimeSeriesRequest = 'auto',
): TimeSeriesDecision {
  const preloaded = facts.sharedPreloadLibraries
    .split(',')
    .map((s) => s.trim().replace(/^"|"$/g, ''))
    .some((lib) => lib === 'timescaledb' || lib.startsWith('timescaledb-'));
  let usable: TimeSeriesDecision | undefined;
  let unusable: string;
  if (facts.installedVersion !== null) {
    usable = { storage: 'timescaledb', reason: `timescaledb ${facts.installedVersion} is installed` };
    unusable = '';
  } else if (facts.availableVersion === null) {
    unusable = 'the timescaledb extension is not available on this server';
  } else if (!preloaded) {
    unusable = `timescaledb ${facts.availableVersion} is available but not in shared_preload_libraries`;
  } else {
    usable = {
      storage: 'timescaledb',
      reason: `timescaledb ${facts.availableVersion} is available and preloaded`,
    };
    unusable = '';
  }
  if (requested === 'partitions') {
    return { storage: 'partitions', reason: 'native range partitioning was requested' };
  }
  if (usable) return usable;
  if (requested === 'timescaledb') throw new TimeSeriesError(`timescaledb was requested but ${unusable}`);
  return { storage: 'partitions', reason: `${unusable}: falling back to native range partitioning` };
}

export async function readTimescaleFacts(client: pg.Client): Promise<TimescaleFacts> {
  const { rows } = await client.query<{
    available: string | null;
    installed: string | null;
    preload: string;
  }>(
    `SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
            (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS installed,
            current_setting('shared_preload_libraries') AS preload`,
  );
  const row = rows[0];
  return {
    availableVersion: row?.available ?? null,
    installedVersion: row?.installed ?? null,
    sharedPreloadLibraries: row?.preload ?? '',
  };
}

export interface StoredTable {
  table: string;
  storage: 'hypertable' | 'partitioned';
  /** Chunks or partitions (the default partition included). */
  parts: number;
  hasDefault: boolean;
}

/** The hypertables and range-partitioned tables in the search path's schemas, by name. */
export async function describeTimeSeriesTables(client: pg.Client): Promise<StoredTable[]> {
  const found: StoredTable[] = [];
  const partitioned = await client.query<{ table: string; parts: number; has_default: boolean }>(
    `SELECT c.relname AS table,
            (SELECT count(*)::int FROM pg_inherits i WHERE i.inhparent = c.oid) AS parts,
            p.partdefid <> 0 AS has_default
       FROM pg_partitioned_table p
       JOIN pg_class c ON c.oid = p.partrelid
      WHERE c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname = ANY (current_schemas(false)))
        AND NOT c.relispartition
      ORDER BY 1`,
  );
  for (const r of partitioned.rows) {
    found.push({ table: r.table, storage: 'partitioned', parts: r.parts, hasDefault: r.has_default });
  }
  const hasTimescale = await client.query(`SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'`);
  if (hasTimescale.rowCount) {
    const hyper = await client.query<{ table: string; parts: number }>(
      `SELECT hypertable_name AS table, num_chunks::int AS parts
         FROM timescaledb_information.hypertables
        WHERE hypertable_schema = ANY (current_schemas(false)) ORDER BY 1`,
    );
    for (const r of hyper.rows) {
      found.push({ table: r.table, storage: 'hypertable', parts: r.parts, hasDefault: false });
    }
  }
  return found.sort((a, b) => a.table.localeCompare(b.table));
}
