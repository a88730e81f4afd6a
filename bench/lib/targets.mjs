// Owns what every scenario does with its three targets: starting the two proxies (or recording why
// one is not in the run), the unrecorded warm-up, one measured cell, and the Markdown lines about
// the machine and the proxies that every report ends with.

import os from 'node:os';
import { wasSignalled } from './cleanup.mjs';
import { maintain, runPgbench } from './pgbench.mjs';
import { PGBOUNCER_BIN, startPgbouncer } from './pgbouncer.mjs';
import { sluiceUnavailable, startSluice } from './sluice.mjs';

export const TARGET_LABELS = {
  direct: 'direct',
  sluice: 'Sluice',
  // The cache scenario's second Sluice target (`--cache`); the other scenarios never start it.
  'sluice-cache': 'Sluice cache on',
  pgbouncer: 'PgBouncer',
};
export const TARGET_ORDER = ['direct', 'sluice', 'pgbouncer'];

export const MAINTAIN_NOTE =
  'Every run gets `pgbench -n`; before each run the bench itself does what pgbench would otherwise do ' +
  '(vacuum pgbench_branches and pgbench_tellers, truncate pgbench_history), directly against PostgreSQL, ' +
  'plus a checkpoint — so all three targets start from the same state.';

/**
 * Starts Sluice and PgBouncer in transaction mode with `poolSize` server connections in front of
 * `direct`. Resolves { sluice, pgbouncer }, each { available, conn?, proxy?, reason? }.
 */
export async function startProxies(direct, { opts, machine, poolSize, log }) {
  const sluice = await startTarget(
    'sluice',
    opts,
    async () => {
      const unavailable = await sluiceUnavailable();
      if (unavailable) throw new Error(unavailable);
      return startSluice(direct, { poolSize, profile: opts.profile });
    },
    log,
  );
  const pgbouncer = await startTarget(
    'pgbouncer',
    opts,
    async () => {
      if (!machine.pgbouncer) throw new Error(`PgBouncer is not installed (no ${PGBOUNCER_BIN})`);
      return startPgbouncer(direct, { poolSize, maxClientConn: 1000 });
    },
    log,
  );
  return { sluice, pgbouncer };
}

/** Starts one proxy target, or records why it is not part of this run. */
export async function startTarget(name, opts, start, log) {
  if (!opts.targets.has(name)) return { available: false, reason: 'left out with --targets' };
  try {
    log(`starting ${TARGET_LABELS[name]}…`);
    const proxy = await start();
    log(`${TARGET_LABELS[name]} serving on ${proxy.host}:${proxy.port} (pid ${proxy.pid})`);
    return { available: true, conn: proxy, proxy };
  } catch (err) {
    log(`${TARGET_LABELS[name]} not benchmarked: ${err.message}`);
    return { available: false, reason: err.message };
  }
}

/**
 * A short unrecorded `-S -M simple` run per target fills caches and pools and proves each path
 * works; a proxy that fails it is stopped and marked unavailable. Resolves the targets still in.
 */
export async function warmUp(targets, { quick, threads, log }) {
  const order = TARGET_ORDER.filter((t) => targets[t].available);
  for (const name of order) {
    const w = await runPgbench(
      targets[name].conn,
      { builtin: 'select-only', mode: 'simple', clients: 4 },
      { duration: quick ? 1 : 2, threads },
    );
    if (!w.error) continue;
    if (name === 'direct') throw new Error(`warm-up against PostgreSQL failed: ${w.error}`);
    targets[name].available = false;
    targets[name].reason = `warm-up failed: ${w.error}`;
    log(`${TARGET_LABELS[name]} dropped: ${targets[name].reason}`);
    await targets[name].proxy.stop();
  }
  return order.filter((t) => targets[t].available);
}

/**
 * One measured cell: refuses if the proxy has died, resets the tables directly against PostgreSQL
 * (`direct`), then runs pgbench through the target. `before(direct)` runs after the reset, just
 * before pgbench. Throws 'interrupted' once a signal has arrived.
 */
export async function runCell(targets, name, direct, workload, pgbenchOpts, { before } = {}) {
  if (wasSignalled()) throw new Error('interrupted');
  const proxy = targets[name].proxy;
  if (proxy?.child.exitInfo) {
    const { code, signal } = proxy.child.exitInfo;
    return { error: `${TARGET_LABELS[name]} had exited (code ${code}, signal ${signal})` };
  }
  await maintain(direct);
  const pre = before ? await before(direct) : undefined;
  const r = await runPgbench(targets[name].conn, workload, pgbenchOpts);
  if (wasSignalled()) throw new Error('interrupted');
  return pre === undefined ? r : { ...r, pre };
}

/** The report's "## Machine" section. */
/**
 * After the last row: stops Sluice now (not in the final cleanup) so a --cpu-prof profile is on
 * disk to report, and records the load average. Returns the new profile paths.
 */
export async function finishTargets(targets, opts, machine) {
  let profiles = [];
  if (targets.sluice.proxy) {
    await targets.sluice.proxy.stop();
    if (opts.profile) profiles = await targets.sluice.proxy.newProfiles();
  }
  machine.loadAverageAtEnd = os.loadavg().map((l) => Math.round(l * 100) / 100);
  return profiles;
}

export function machineLines(m) {
  return [
    '## Machine',
    '',
    `- nproc ${m.nproc} (${m.cpu}), ${m.memoryGiB} GiB RAM, ${m.os}`,
    `- Node ${m.node}; Sluice ${m.sluice} at ${m.gitCommit}${m.srcDirty ? ' (src/ has uncommitted changes)' : ''}`,
    `- PostgreSQL ${m.postgres}; ${m.pgbench}`,
    `- ${m.pgbouncer ?? 'PgBouncer not installed'}`,
    `- load average (1/5/15 min) at start ${m.loadAverageAtStart.join(' / ')}, at end ${m.loadAverageAtEnd?.join(' / ') ?? '—'}`,
    '',
  ];
}

/** Notes lines: why a proxy is not in the run, or the command it ran with. */
export function targetNotes(reportTargets) {
  const out = [];
  for (const [name, t] of Object.entries(reportTargets)) {
    if (name === 'direct') continue;
    if (!t.available) out.push(`- ${TARGET_LABELS[name]} not in this run: ${t.reason.split('\n')[0]}`);
    else if (t.command)
      out.push(`- ${TARGET_LABELS[name]}: \`${t.command.replace(/\S*\/(dist\/cli\.js)/, '$1')}\``);
  }
  return out;
}

/** The `targets` object of a JSON report. */
export function targetsForReport(targets) {
  return Object.fromEntries(
    Object.entries(targets).map(([name, t]) => [
      name,
      { available: t.available, reason: t.reason, command: t.proxy?.command },
    ]),
  );
}
