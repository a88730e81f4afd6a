// Owns the text `sluice migrate status` prints: the version, the time-series storage and why, and
// one line per migration.
import { formatVersion } from './files.js';
import type { StatusReport } from './runner.js';

const STATE_TEXT = {
  applied: 'applied',
  pending: 'pending',
  changed: 'CHANGED (checksum mismatch)',
  missing: 'MISSING (applied, no file)',
} as const;

export function formatStatus(report: StatusReport, database: string): string {
  const applied = report.entries.filter((e) => e.row !== undefined).length;
  const pending = report.entries.filter((e) => e.state === 'pending').length;
  const out: string[] = [
    `database: ${database}`,
    `version: ${report.current} (${applied} applied, ${pending} pending)`,
  ];
  const ts = report.timeSeries;
  const label = ts.storage === 'timescaledb' ? 'TimescaleDB hypertables' : 'native range partitioning';
  out.push(`time-series storage: ${label} (${ts.reason})`);
  for (const t of report.tables) {
    const parts =
      t.storage === 'hypertable'
        ? `hypertable, ${t.parts} chunks`
        : `range-partitioned, ${t.parts} partitions${t.hasDefault ? ' (one default)' : ''}`;
    out.push(`  ${t.table}: ${parts}`);
  }
  out.push('');
  const nameWidth = Math.max(4, ...report.entries.map((e) => e.name.length));
  out.push(`${'version'.padEnd(8)}${'name'.padEnd(nameWidth + 2)}state`);
  for (const e of report.entries) {
    let line = `${formatVersion(e.version).padEnd(8)}${e.name.padEnd(nameWidth + 2)}${STATE_TEXT[e.state]}`;
    if (e.row) {
      line += `  ${e.row.applied_at.toISOString()}  ${e.row.duration_ms} ms`;
      if (e.row.storage) line += `  [${e.row.storage}]`;
    }
    out.push(line);
  }
  return out.join('\n');
}
