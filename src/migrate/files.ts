// Owns reading a migrations directory: numbered up/down SQL pairs, their directives, checksums and
// the `-- sluice:if <storage>` sections that pick one time-series storage per server.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TimeSeriesStorage } from './time-series.js';

/** `0001_bots.up.sql`: a version of digits, a name of [a-z0-9_], the direction. */
const FILE_NAME = /^(\d+)_([a-z0-9_]+)\.(up|down)\.sql$/;
const NO_TRANSACTION = /^--\s*sluice:no-transaction\b/;
const SECTION_IF = /^--\s*sluice:if\s+(\S+)\s*$/;
const SECTION_ELSE = /^--\s*sluice:else\s*$/;
const SECTION_END = /^--\s*sluice:end\s*$/;
const STORAGES: readonly string[] = ['timescaledb', 'partitions'];

export class MigrationFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationFileError';
  }
}

export interface MigrationScript {
  /** Path as given (dir joined with the file name), for messages. */
  file: string;
  text: string;
  /** First line is `-- sluice:no-transaction`: statements run one by one, outside a transaction. */
  noTransaction: boolean;
  /** Has `-- sluice:if` sections, i.e. depends on the time-series storage. */
  conditional: boolean;
}

export interface MigrationFile {
  version: number;
  name: string;
  up: MigrationScript;
  down: MigrationScript;
  /** sha256 (hex) of the up file, line endings normalised. */
  checksum: string;
}

/**
 * sha256 of the text with CRLF read as LF, so a checkout with autocrlf does not look like an edit.
 * Only the up file is summed: it is what built the schema; fixing a broken down file is allowed.
 */
export function checksumOf(text: string): string {
  return createHash('sha256').update(text.replace(/\r\n/g, '\n')).digest('hex');
}

/** The migrations in `dir`, sorted by version; refuses gaps in pairing, duplicates and stray names. */
export function loadMigrations(dir: string): MigrationFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new MigrationFileError(`cannot read migrations directory ${dir}: ${(err as Error).message}`);
  }
  const byVersion = new Map<number, { name: string; up?: string; down?: string }>();
  for (const entry of names.sort()) {
    if (!entry.endsWith('.sql')) continue;
    const m = FILE_NAME.exec(entry);
    if (!m) {
      throw new MigrationFileError(
        `${path.join(dir, entry)}: expected NNNN_name.up.sql or NNNN_name.down.sql (name in [a-z0-9_])`,
      );
    }
    const version = Number(m[1]);
    const name = m[2] as string;
    const direction = m[3] as 'up' | 'down';
    const slot = byVersion.get(version) ?? { name };
    if (slot.name !== name || slot[direction] !== undefined) {
      throw new MigrationFileError(
        `${path.join(dir, entry)}: version ${version} is used by another migration`,
      );
    }
    slot[direction] = entry;
    byVersion.set(version, slot);
  }
  const migrations: MigrationFile[] = [];
  for (const [version, slot] of [...byVersion].sort((a, b) => a[0] - b[0])) {
    if (slot.up === undefined || slot.down === undefined) {
      const have = slot.up ?? slot.down;
      throw new MigrationFileError(
        `${path.join(dir, have as string)}: has no ${slot.up === undefined ? 'up' : 'down'} file`,
      );
    }
    const up = readScript(path.join(dir, slot.up));
    const down = readScript(path.join(dir, slot.down));
    migrations.push({ version, name: slot.name, up, down, checksum: checksumOf(up.text) });
  }
  return migrations;
}

function readScript(file: string): MigrationScript {
  const text = fs.readFileSync(file, 'utf8');
  const firstLine = text.split('\n', 1)[0] ?? '';
  // Parsing the sections now reports a malformed file before anything runs.
  const conditional = selectSections(text, 'partitions', file) !== text;
  return { file, text, noTransaction: NO_TRANSACTION.test(firstLine), conditional };
}

/**
 * The text with the sections for other storages blanked out. Excluded lines become empty lines,
 * so a line number PostgreSQL reports in the result is the line number in the file.
 */
export function selectSections(text: string, storage: TimeSeriesStorage, file = 'migration'): string {
  const lines = text.split('\n');
  let open: { storage: string; line: number; inElse: boolean } | undefined;
  let changed = false;
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).replace(/\r$/, '');
    const ifMatch = SECTION_IF.exec(line);
    if (ifMatch) {
      const wanted = ifMatch[1] as string;
      if (open) throw new MigrationFileError(`${file}:${i + 1}: sluice:if inside another sluice:if`);
      if (!STORAGES.includes(wanted)) {
        throw new MigrationFileError(
          `${file}:${i + 1}: unknown storage "${wanted}" (${STORAGES.join(', ')})`,
        );
      }
      open = { storage: wanted, line: i + 1, inElse: false };
      lines[i] = '';
      changed = true;
      continue;
    }
    if (SECTION_ELSE.test(line)) {
      if (!open || open.inElse)
        throw new MigrationFileError(`${file}:${i + 1}: sluice:else without sluice:if`);
      open.inElse = true;
      lines[i] = '';
      continue;
    }
    if (SECTION_END.test(line)) {
      if (!open) throw new MigrationFileError(`${file}:${i + 1}: sluice:end without sluice:if`);
      open = undefined;
      lines[i] = '';
      continue;
    }
    if (open && (open.storage === storage) === open.inElse) lines[i] = '';
  }
  if (open) throw new MigrationFileError(`${file}:${open.line}: sluice:if is never closed by sluice:end`);
  return changed ? lines.join('\n') : text;
}

/** `0007` for 7: the width the directory already uses, at least 4. */
export function formatVersion(version: number, width = 4): string {
  return String(version).padStart(width, '0');
}

/** Writes an empty up/down pair after the highest version; returns the two paths. */
export function createMigrationFiles(dir: string, rawName: string): { up: string; down: string } {
  const name = rawName
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
  if (name === '') throw new MigrationFileError(`"${rawName}" has no letters or digits to name a migration`);
  fs.mkdirSync(dir, { recursive: true });
  const existing = loadMigrations(dir);
  const next = (existing.at(-1)?.version ?? 0) + 1;
  const widths = fs
    .readdirSync(dir)
    .map((f) => FILE_NAME.exec(f)?.[1]?.length)
    .filter((w): w is number => w !== undefined);
  const base = `${formatVersion(next, Math.max(4, ...widths))}_${name}`;
  const up = path.join(dir, `${base}.up.sql`);
  const down = path.join(dir, `${base}.down.sql`);
  fs.writeFileSync(up, `-- ${name}: what this migration changes, and why\n\n`, { flag: 'wx' });
  fs.writeFileSync(down, `-- undoes ${base}.up.sql\n\n`, { flag: 'wx' });
  return { up, down };
}
