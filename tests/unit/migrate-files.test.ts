// The pure parts of migrations: storage sections, checksums, the TimescaleDB decision, and the
// TimescaleDB branch of the shipped migrations parsed by PostgreSQL's own parser (timescaledb
// itself cannot be installed on these machines).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModule, parseSync } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  checksumOf,
  createMigrationFiles,
  loadMigrations,
  MigrationFileError,
  selectSections,
} from '../../src/migrate/files.js';
import { chooseTimeSeriesStorage, TimeSeriesError } from '../../src/migrate/time-series.js';

const MIGRATIONS = path.resolve(import.meta.dirname, '../../migrations');

describe('selectSections', () => {
  const text = [
    'CREATE TABLE a (x int);',
    '-- sluice:if timescaledb',
    "SELECT create_hypertable('a', 'x');",
    '-- sluice:else',
    'CREATE TABLE a_default PARTITION OF a DEFAULT;',
    '-- sluice:end',
    'CREATE INDEX ON a (x);',
  ].join('\n');

  it('keeps the chosen branch and blanks the rest, line for line', () => {
    const ts = selectSections(text, 'timescaledb').split('\n');
    const parts = selectSections(text, 'partitions').split('\n');
    expect(ts).toHaveLength(7);
    expect(parts).toHaveLength(7);
    expect(ts[2]).toContain('create_hypertable');
    expect(ts[4]).toBe('');
    expect(parts[2]).toBe('');
    expect(parts[4]).toContain('DEFAULT');
    expect(ts[6]).toBe(parts[6]);
  });

  it('refuses unknown storages and unbalanced markers with the line', () => {
    expect(() => selectSections('-- sluice:if citus\n-- sluice:end', 'partitions', 'f.sql')).toThrow(
      /f\.sql:1: unknown storage "citus"/,
    );
    expect(() => selectSections('-- sluice:if partitions\nSELECT 1;', 'partitions', 'f.sql')).toThrow(
      /f\.sql:1: sluice:if is never closed/,
    );
    expect(() => selectSections('SELECT 1;\n-- sluice:end', 'partitions', 'f.sql')).toThrow(
      /f\.sql:2: sluice:end without sluice:if/,
    );
  });
});

describe('checksumOf', () => {
  it('is sha256 hex, blind to CRLF and sensitive to any other edit', () => {
    const a = checksumOf('CREATE TABLE t (x int);\nSELECT 1;\n');
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(checksumOf('CREATE TABLE t (x int);\r\nSELECT 1;\r\n')).toBe(a);
    expect(checksumOf('CREATE TABLE t (x int);\nSELECT 2;\n')).not.toBe(a);
  });
});

describe('chooseTimeSeriesStorage', () => {
  const none = { availableVersion: null, installedVersion: null, sharedPreloadLibraries: '' };

  it('falls back to native partitioning when timescaledb is not available, and says why', () => {
    const d = chooseTimeSeriesStorage(none);
    expect(d.storage).toBe('partitions');
    expect(d.reason).toMatch(/not available.*native range partitioning/);
  });

  it('falls back when timescaledb is available but not preloaded', () => {
    const d = chooseTimeSeriesStorage({
      ...none,
      availableVersion: '2.17.2',
      sharedPreloadLibraries: 'pg_stat_statements',
    });
    expect(d.storage).toBe('partitions');
    expect(d.reason).toMatch(/not in shared_preload_libraries/);
  });

  it('uses timescaledb when it is preloaded (plain or versioned library name) or installed', () => {
    const available = { ...none, availableVersion: '2.17.2' };
    expect(
      chooseTimeSeriesStorage({ ...available, sharedPreloadLibraries: 'pg_stat_statements, timescaledb' })
        .storage,
    ).toBe('timescaledb');
    expect(
      chooseTimeSeriesStorage({ ...available, sharedPreloadLibraries: '"timescaledb-2.17.2"' }).storage,
    ).toBe('timescaledb');
    expect(chooseTimeSeriesStorage({ ...none, installedVersion: '2.14.0' }).storage).toBe('timescaledb');
  });

  it('honours an explicit request, refusing timescaledb where it cannot work', () => {
    expect(chooseTimeSeriesStorage({ ...none, installedVersion: '2.14.0' }, 'partitions').storage).toBe(
      'partitions',
    );
    expect(() => chooseTimeSeriesStorage(none, 'timescaledb')).toThrow(TimeSeriesError);
  });
});

describe('the shipped migrations', () => {
  beforeAll(async () => {
    await loadModule();
  });

  it('pair up, number 1.. without gaps and name their storage-dependent files', () => {
    const files = loadMigrations(MIGRATIONS);
    expect(files.map((f) => f.version)).toEqual(files.map((_, i) => i + 1));
    const conditional = files.filter((f) => f.up.conditional).map((f) => f.name);
    expect(conditional).toEqual(['market_data', 'positions_portfolio']);
    expect(files.find((f) => f.name === 'trades_entry_time_index')?.up.noTransaction).toBe(true);
  });

  it('parse in both storages; the TimescaleDB branch makes hypertables, policies and a continuous aggregate', () => {
    const timescale: string[] = [];
    for (const f of loadMigrations(MIGRATIONS)) {
      for (const script of [f.up, f.down]) {
        for (const storage of ['timescaledb', 'partitions'] as const) {
          const text = selectSections(script.text, storage, script.file);
          expect(() => parseSync(text), `${script.file} (${storage})`).not.toThrow();
          if (storage === 'timescaledb' && script === f.up) timescale.push(text);
        }
      }
    }
    const all = timescale.join('\n');
    for (const table of ['bars_1m', 'ticks', 'portfolio_snapshots']) {
      expect(all).toMatch(new RegExp(`create_hypertable\\('${table}'`));
      expect(all).toMatch(new RegExp(`add_compression_policy\\('${table}'`));
      expect(all).toMatch(new RegExp(`add_retention_policy\\('${table}'`));
    }
    expect(all).toMatch(/CREATE MATERIALIZED VIEW bars_1d WITH \(timescaledb\.continuous\)/);
    expect(all).toMatch(/add_continuous_aggregate_policy\('bars_1d'/);
    const partitions = loadMigrations(MIGRATIONS)
      .map((f) => selectSections(f.up.text, 'partitions'))
      .join('\n');
    expect(partitions).not.toMatch(/create_hypertable|add_\w+_policy|timescaledb\.continuous/);
    expect(partitions).toMatch(/PARTITION BY RANGE \(ts\)/);
  });
});

describe('createMigrationFiles', () => {
  it('writes the next pair with a cleaned-up name and refuses a name with nothing in it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-new-'));
    try {
      fs.writeFileSync(path.join(dir, '0001_a.up.sql'), '');
      fs.writeFileSync(path.join(dir, '0001_a.down.sql'), '');
      const { up, down } = createMigrationFiles(dir, 'Add Fills!');
      expect(path.basename(up)).toBe('0002_add_fills.up.sql');
      expect(path.basename(down)).toBe('0002_add_fills.down.sql');
      expect(loadMigrations(dir).map((f) => f.name)).toEqual(['a', 'add_fills']);
      expect(() => createMigrationFiles(dir, '!!!')).toThrow(MigrationFileError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a directory with an unpaired file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-new-'));
    try {
      fs.writeFileSync(path.join(dir, '0001_a.up.sql'), '');
      expect(() => loadMigrations(dir)).toThrow(/0001_a\.up\.sql: has no down file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
