// Owns one measured suite cell driven by pgbench: refuses when the target's proxy has exited, runs
// the caller's reset first, runs pgbench with its per-transaction log (-l) and turns that log into
// an HDR histogram; the cell is { throughput, latency, errors, error?, pgbench }.

import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { wasSignalled } from './cleanup.mjs';
import { histogramFromPgbenchLog, summarise } from './latency.mjs';
import { runPgbench } from './pgbench.mjs';

/**
 * `workload` as runPgbench takes it; `before()` runs just before pgbench (e.g. the table reset,
 * directly against PostgreSQL). Resolves the cell.
 */
export async function pgbenchCell(ctx, name, conn, workload, { duration, threads = 2, before } = {}) {
  if (wasSignalled()) throw new Error('interrupted');
  const gone = ctx.gone(name);
  if (gone) return { throughput: null, latency: null, errors: 0, error: gone };
  if (before) await before();
  const logDir = await mkdtemp(path.join(ctx.tmpDir, 'pgbench-log-'));
  try {
    const prefix = path.join(logDir, 'tx');
    const r = await runPgbench(
      conn,
      { ...workload, extraArgs: [...(workload.extraArgs ?? []), '-l', '--log-prefix', prefix] },
      { duration, threads, details: true },
    );
    if (wasSignalled()) throw new Error('interrupted');
    const { histogram, failed } = await histogramFromPgbenchLog(prefix);
    let error = r.error;
    // pgbench prints no tps when no transaction finished in time (e.g. its clients' logins took
    // longer than -T on a loaded machine): say that rather than an empty error.
    if (error && r.exitCode === 0 && !r.processed)
      error = `pgbench completed no transaction in ${duration} s (logins slower than the run?)`;
    return {
      throughput: error ? null : r.tps,
      latency: summarise(histogram),
      errors: (r.failed ?? 0) + (r.abortedClients ?? 0),
      error,
      pgbench: {
        args: r.args,
        tps: r.tps,
        latencyAverageMs: r.latencyMs,
        processed: r.processed,
        failed: r.failed,
        loggedFailed: failed,
        abortedClients: r.abortedClients,
        connectMs: r.connectMs,
        exitCode: r.exitCode,
        errorLines: r.errors?.slice(0, 5),
      },
    };
  } finally {
    await rm(logDir, { recursive: true, force: true });
  }
}

/** One line for the progress display. */
export function cellLine(cell, unit) {
  if (cell.error) return `ERROR ${cell.error.split('\n')[0]}`;
  const l = cell.latency;
  const t = cell.throughput == null ? '—' : Math.round(cell.throughput).toLocaleString('en-US');
  return (
    `${t} ${unit}` +
    (l ? `, p50 ${(l.p50 / 1000).toFixed(3)} ms, p99 ${(l.p99 / 1000).toFixed(3)} ms` : '') +
    (cell.errors ? `, ${cell.errors} errors` : '')
  );
}
