// Owns what `sluice migrate ...` and `sluice seed` do once the flags are parsed: open the target,
// run, print, and map failures to exit codes (1: a migration or the seed failed, 2: refused input).
import { logger } from '../observe/logger.js';
import { SeedError, type SeedOptions, seedDatabase } from '../seed/seed.js';
import { createMigrationFiles, MigrationFileError } from './files.js';
import { MigrationLockTimeout } from './lock.js';
import { MigrationError, Migrator, type RunResult } from './runner.js';
import { formatStatus } from './status.js';
import { openTarget, type Target } from './target.js';
import { TimeSeriesError, type TimeSeriesRequest } from './time-series.js';

export interface MigrateFlags {
  upstream?: string;
  dir: string;
  force?: boolean;
  timeSeries?: TimeSeriesRequest;
}

type Out = (line: string) => void;

export async function runMigrate(
  action: 'up' | 'down' | 'status' | 'new',
  arg: number | string | undefined,
  flags: MigrateFlags,
  out: Out,
): Promise<number> {
  logger.level = 'warn'; // the embedded server's info lines are not this command's output
  try {
    if (action === 'new') {
      const { up, down } = createMigrationFiles(flags.dir, String(arg));
      out(`created ${up}\ncreated ${down}`);
      return 0;
    }
    const target = await openTarget(flags.upstream, `sluice migrate ${action}`);
    try {
      const migrator = new Migrator(target.client, {
        dir: flags.dir,
        force: flags.force,
        timeSeries: flags.timeSeries,
        log: out,
      });
      if (action === 'status') {
        out(formatStatus(await migrator.status(), target.label));
        return 0;
      }
      const result =
        action === 'up' ? await migrator.up(arg as number | undefined) : await migrator.down(arg as number);
      out(summary(action, result, target.label));
      return 0;
    } finally {
      await target.close();
    }
  } catch (err) {
    if (
      err instanceof MigrationError ||
      err instanceof MigrationLockTimeout ||
      err instanceof TimeSeriesError ||
      err instanceof MigrationFileError
    ) {
      process.stderr.write(`sluice migrate ${action}: ${err.message}\n`);
      return err instanceof MigrationFileError ? 2 : 1;
    }
    throw err;
  }
}

function summary(action: 'up' | 'down', r: RunResult, database: string): string {
  if (r.steps.length === 0)
    return `${database}: nothing to ${action === 'up' ? 'apply' : 'revert'} (version ${r.to})`;
  const verb = action === 'up' ? 'applied' : 'reverted';
  const ms = Math.round(r.steps.reduce((sum, s) => sum + s.durationMs, 0));
  return `${database}: ${verb} ${r.steps.length} migration(s) in ${ms} ms, version ${r.from} -> ${r.to}`;
}

export async function runSeed(upstream: string | undefined, opts: SeedOptions, out: Out): Promise<number> {
  logger.level = 'warn';
  const target = await openTarget(upstream, 'sluice seed');
  try {
    return await seedAndReport(target, opts, out);
  } catch (err) {
    if (!(err instanceof SeedError)) throw err;
    process.stderr.write(`sluice seed: ${err.message}\n`);
    return 1;
  } finally {
    await target.close();
  }
}

async function seedAndReport(target: Target, opts: SeedOptions, out: Out): Promise<number> {
  const report = await seedDatabase(target.client, opts);
  for (const t of report.tables) {
    out(`  ${t.table.padEnd(20)} ${String(t.rows).padStart(10)} rows  ${Math.round(t.rowsPerSecond)} rows/s`);
  }
  out(
    `${target.label}: seeded ${report.totalRows} rows in ${report.seconds.toFixed(1)} s ` +
      `(${Math.round(report.totalRows / report.seconds)} rows/s overall, COPY ${report.copyMethod})`,
  );
  return 0;
}
