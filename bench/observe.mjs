// The observe scenario: what metrics cost on the hot path — pgbench select-only straight into
// PostgreSQL, and through Sluice with metrics off (`metrics: false`), on but never scraped, and on
// with /metrics scraped every second (as Prometheus would, only more often than its default).

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup, runCleanup, wasSignalled } from './lib/cleanup.mjs';
import { initPgbench, maintain, pgbenchVersion, runPgbench } from './lib/pgbench.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { freePort } from './lib/processes.mjs';
import { fmt, machineFacts, NOISE_NOTE, ratio, stamp, table, writeReport } from './lib/report.mjs';
import { sluiceUnavailable, startSluice } from './lib/sluice.mjs';

export const description =
  'cost of metrics: pgbench -S through Sluice with metrics off, on, and scraped every second';

const SCALE = 10;
const CLIENTS = 16;
const THREADS = 2;
const POOL_SIZE = 20;
const MAX_CONNECTIONS = 300;
const MODES = ['simple', 'extended'];
const SCRAPE_MS = 1000;
/**
 * The three Sluices run side by side and take turns, round after round, and each cell reports its
 * median: on a shared 2-core machine the load drifts by minutes, and one run per target in a row
 * would measure the drift.
 */
const ROUNDS = 3;

/** Sluice targets, in run order. */
const TARGETS = [
  { id: 'off', label: 'metrics off', metrics: false, scrape: false },
  { id: 'on', label: 'metrics on, not scraped', metrics: true, scrape: false },
  { id: 'scraped', label: 'metrics on, scraped every 1 s', metrics: true, scrape: true },
];

const log = (msg) => console.error(`[observe] ${msg}`);

/** Scrapes /metrics every SCRAPE_MS until stopped; counts scrapes, their time and size. */
function startScraper(url) {
  const stats = { scrapes: 0, failures: 0, totalMs: 0, maxMs: 0, bytes: 0 };
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    const t0 = performance.now();
    try {
      const res = await fetch(url);
      const body = await res.text();
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const ms = performance.now() - t0;
      stats.scrapes++;
      stats.totalMs += ms;
      stats.maxMs = Math.max(stats.maxMs, ms);
      stats.bytes = body.length;
    } catch {
      stats.failures++;
    }
  };
  const timer = setInterval(tick, SCRAPE_MS);
  return {
    stats,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}

/**
 * @param {{ duration: number, quick: boolean, profile: boolean, targets: Set<string> }} opts
 */
export async function run(opts) {
  const startedAt = new Date();
  const machine = await machineFacts();
  machine.pgbench = await pgbenchVersion();
  if (!machine.pgbench)
    throw new Error('pgbench not found on PATH (Debian: apt-get install postgresql-client)');
  const unavailable = await sluiceUnavailable();
  if (unavailable) throw new Error(unavailable);
  try {
    log('starting PostgreSQL…');
    const pg = await startPostgres({ maxConnections: MAX_CONNECTIONS });
    const direct = { host: pg.host, port: pg.port, user: pg.user, password: pg.password };
    machine.postgres = await serverVersion(direct);
    log(`PostgreSQL ${machine.postgres} on ${pg.host}:${pg.port}; pgbench -i -s ${SCALE}…`);
    await initPgbench(direct, { scale: SCALE });

    const warmup = { builtin: 'select-only', mode: 'simple', clients: 4 };
    const warmSecs = opts.quick ? 1 : 2;
    const rounds = opts.quick ? 1 : ROUNDS;
    const cells = []; // { target, mode, round, result, scrape? }
    const once = async (target, conn, mode, round, scrapeUrl) => {
      if (wasSignalled()) throw new Error('interrupted');
      await maintain(direct);
      const scraper = scrapeUrl ? startScraper(scrapeUrl) : undefined;
      const r = await runPgbench(
        conn,
        { builtin: 'select-only', mode, clients: CLIENTS },
        { duration: opts.duration, threads: THREADS },
      );
      scraper?.stop();
      const scrape = scraper ? { ...scraper.stats } : undefined;
      cells.push({ target, mode, round, result: r, scrape });
      log(
        `round ${round} ${target.padEnd(8)} -M ${mode.padEnd(8)} ${r.error ? `ERROR ${r.error}` : `${fmt.tps(r.tps)} tps`}` +
          (scrape
            ? ` (${scrape.scrapes} scrapes, mean ${(scrape.totalMs / Math.max(1, scrape.scrapes)).toFixed(1)} ms)`
            : ''),
      );
    };
    const w = await runPgbench(direct, warmup, { duration: warmSecs, threads: THREADS });
    if (w.error) throw new Error(`direct warm-up failed: ${w.error}`);
    for (const mode of MODES) await once('direct', direct, mode, 1);

    const commands = {};
    const running = [];
    try {
      for (const t of TARGETS) {
        const dir = await mkdtemp(path.join(tmpdir(), `sluice-bench-observe-${t.id}-`));
        onCleanup(`observe config ${t.id}`, () => rm(dir, { recursive: true, force: true }));
        const configFile = path.join(dir, 'sluice.yaml');
        await writeFile(configFile, `metrics: ${t.metrics}\n`);
        const httpPort = await freePort();
        log(`starting Sluice, ${t.label}…`);
        const sluice = await startSluice(direct, {
          poolSize: POOL_SIZE,
          profile: opts.profile,
          extraArgs: ['--config', configFile, '--http', `127.0.0.1:${httpPort}`],
        });
        running.push({ t, sluice, scrapeUrl: t.scrape ? `http://127.0.0.1:${httpPort}/metrics` : undefined });
        commands[t.id] =
          `${sluice.command.replace(/\S*\/(dist\/cli\.js)/, '$1').replace(/\/tmp\/\S+/, '<tmp>/sluice.yaml')}` +
          ` (sluice.yaml: metrics: ${t.metrics})`;
        const wu = await runPgbench(sluice, warmup, { duration: warmSecs, threads: THREADS });
        if (wu.error) throw new Error(`${t.id} warm-up failed: ${wu.error}`);
      }
      for (let round = 1; round <= rounds; round++) {
        for (const mode of MODES) {
          for (const { t, sluice, scrapeUrl } of running) await once(t.id, sluice, mode, round, scrapeUrl);
        }
      }
    } finally {
      for (const { sluice } of running) await sluice.stop();
    }

    /** The median tps of a target's runs in a mode (null when any failed). */
    const tps = (target, mode) => {
      const runs = cells.filter((x) => x.target === target && x.mode === mode);
      if (runs.length === 0 || runs.some((c) => c.result.error)) return null;
      const sorted = runs.map((c) => c.result.tps).sort((a, b) => a - b);
      return sorted[Math.floor(sorted.length / 2)];
    };
    const rows = MODES.map((mode) => ({
      mode,
      direct: tps('direct', mode),
      targets: TARGETS.map((t) => ({
        id: t.id,
        tps: tps(t.id, mode),
        toOff: ratio(tps(t.id, mode), tps('off', mode)),
        toDirect: ratio(tps(t.id, mode), tps('direct', mode)),
        runs: cells.filter((x) => x.target === t.id && x.mode === mode).map((x) => x.result.tps ?? null),
        scrape: mergeScrapes(
          cells.filter((x) => x.target === t.id && x.mode === mode && x.scrape).map((x) => x.scrape),
        ),
      })),
    }));
    machine.loadAverageAtEnd = (await import('node:os')).loadavg().map((l) => Math.round(l * 100) / 100);
    const report = {
      scenario: 'observe',
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      options: {
        duration: opts.duration,
        quick: opts.quick,
        scale: SCALE,
        clients: CLIENTS,
        threads: THREADS,
        poolSize: POOL_SIZE,
        poolMode: 'transaction',
        scrapeMs: SCRAPE_MS,
        rounds,
      },
      machine,
      pgbench: rows,
      cells: cells.map((c) => ({
        target: c.target,
        mode: c.mode,
        round: c.round,
        ...c.result,
        scrape: c.scrape,
      })),
      sluiceCommands: commands,
      notes: [NOISE_NOTE],
    };
    const markdown = renderMarkdown(report);
    const { jsonPath, mdPath } = await writeReport(`observe-${stamp(startedAt)}`, report, markdown);
    process.stdout.write(`${markdown}\n`);
    log(`wrote ${mdPath}`);
    log(`wrote ${jsonPath}`);
    return report;
  } finally {
    log('stopping everything this run started…');
    await runCleanup();
  }
}

function mergeScrapes(list) {
  if (list.length === 0) return undefined;
  return list.reduce(
    (m, s) => ({
      scrapes: m.scrapes + s.scrapes,
      failures: m.failures + s.failures,
      totalMs: m.totalMs + s.totalMs,
      maxMs: Math.max(m.maxMs, s.maxMs),
      bytes: s.bytes,
    }),
    { scrapes: 0, failures: 0, totalMs: 0, maxMs: 0, bytes: 0 },
  );
}

function renderMarkdown(report) {
  const o = report.options;
  const out = [];
  out.push('# Cost of observability on the hot path', '');
  out.push(
    `${report.startedAt} · pgbench \`-S\` scale ${o.scale}, ${o.clients} clients, \`-j ${o.threads} -T ${o.duration}\`, ` +
      `Sluice in transaction mode, pool ${o.poolSize}, \`--http\` on for every target. The three Sluices run side ` +
      `by side and take turns, ${o.rounds} round(s); each cell is the median of its runs (all runs below). "scraped": a ` +
      `GET /metrics every ${o.scrapeMs} ms from the benchmark process during the run.${o.quick ? ' Quick run.' : ''}`,
    '',
  );
  out.push(`> ${NOISE_NOTE}`, '');
  out.push('## pgbench select-only: tps (ratio to metrics off)', '');
  const header = ['mode', 'direct', ...TARGETS.map((t) => t.label)];
  out.push(
    table(
      header,
      report.pgbench.map((r) => [
        `\`-M ${r.mode}\``,
        fmt.tps(r.direct),
        ...r.targets.map((t) =>
          t.id === 'off'
            ? `${fmt.tps(t.tps)} (1.00; ${fmt.ratio(t.toDirect)} of direct)`
            : `${fmt.tps(t.tps)} (${fmt.ratio(t.toOff)})`,
        ),
      ]),
    ),
    '',
  );
  out.push('Runs (tps, in round order):', '');
  for (const r of report.pgbench) {
    for (const t of r.targets)
      out.push(`- \`-M ${r.mode}\` ${t.id}: ${t.runs.map((v) => fmt.tps(v)).join(', ')}`);
  }
  out.push('');
  const scraped = report.pgbench.flatMap((r) =>
    r.targets.filter((t) => t.scrape).map((t) => ({ mode: r.mode, ...t.scrape })),
  );
  if (scraped.length > 0) {
    out.push('## Scrapes during the scraped runs', '');
    out.push(
      table(
        ['mode', 'scrapes', 'failures', 'mean ms', 'max ms', 'body bytes'],
        scraped.map((s) => [
          `\`-M ${s.mode}\``,
          String(s.scrapes),
          String(s.failures),
          (s.totalMs / Math.max(1, s.scrapes)).toFixed(1),
          s.maxMs.toFixed(1),
          String(s.bytes),
        ]),
      ),
      '',
    );
  }
  out.push('## Commands', '');
  for (const [id, cmd] of Object.entries(report.sluiceCommands)) out.push(`- ${id}: \`${cmd}\``);
  out.push('');
  return out.join('\n');
}
