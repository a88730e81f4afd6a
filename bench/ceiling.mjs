// The ceiling scenario: how far above direct PostgreSQL any Node server can answer the cached
// hot-read workload on this machine. pgbench's hot-read script (16 clients, `-M simple`) runs
// against PostgreSQL, Sluice with the cache on (every read a hit after the first), and a null
// responder (bench/lib/null-responder.mjs: frames bytes, answers every Query with one fixed row)
// in one and in two processes. With the CPU each side spends per transaction it reports the most
// the machine's cores could give at that cost: when even the null responder cannot reach 2×
// direct, the load generator and the kernel's loopback TCP are the bound, not the cache.

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { onCleanup, runCleanup, wasSignalled } from './lib/cleanup.mjs';
import { clockTicks, processTicks, treeTicks } from './lib/cpu.mjs';
import { pgbenchVersion, runPgbench } from './lib/pgbench.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { freePort, psql, sleep, stopProcess, tcpConnects, waitFor } from './lib/processes.mjs';
import { startRedis } from './lib/redis.mjs';
import { fmt, machineFacts, NOISE_NOTE, ratio, stamp, table, writeReport } from './lib/report.mjs';
import { sluiceUnavailable, startSluice } from './lib/sluice.mjs';

export const description =
  'how far above direct PostgreSQL a Node server can answer cached hot reads here (Sluice vs a null responder)';

const SYMBOLS = 100;
const CLIENTS = 16;
const THREADS = 2;
const ROUNDS = 3;
const HOT = `\\set k random(1, ${SYMBOLS})\nSELECT price FROM hot_prices WHERE instrument_id = :k;\n`;
const RESPONDER = fileURLToPath(new URL('./lib/null-responder.mjs', import.meta.url));

const log = (msg) => console.error(`[ceiling] ${msg}`);

async function startResponder(processes) {
  const port = await freePort();
  const child = spawn(process.execPath, [RESPONDER, String(port), String(processes)], { stdio: 'ignore' });
  onCleanup(`null responder ×${processes}`, () => stopProcess(child));
  const up = await waitFor(() => tcpConnects('127.0.0.1', port), { timeoutMs: 10_000 });
  if (!up) throw new Error(`null responder ×${processes} did not listen on ${port}`);
  return { host: '127.0.0.1', port, user: 'bench', password: '', pid: child.pid, child };
}

/**
 * @param {{ duration: number, quick: boolean, profile: boolean }} opts
 */
export async function run(opts) {
  const startedAt = new Date();
  const machine = await machineFacts();
  machine.pgbench = await pgbenchVersion();
  if (!machine.pgbench)
    throw new Error('pgbench not found on PATH (Debian: apt-get install postgresql-client)');
  const unavailable = await sluiceUnavailable();
  if (unavailable) throw new Error(unavailable);
  const hz = await clockTicks();
  try {
    log('starting PostgreSQL…');
    const pg = await startPostgres({ maxConnections: 100 });
    const direct = { host: pg.host, port: pg.port, user: pg.user, password: pg.password };
    machine.postgres = await serverVersion(direct);
    const t = await psql(direct, [
      'create table hot_prices (instrument_id int primary key, symbol text not null, price numeric not null)',
      `insert into hot_prices select i, 'S' || i, 100 + i from generate_series(1, ${SYMBOLS}) i`,
      'vacuum analyze hot_prices',
    ]);
    if (t.code !== 0) throw new Error(`creating hot_prices failed: ${t.stderr.trim()}`);
    const dir = await mkdtemp(path.join(tmpdir(), 'sluice-bench-ceiling-'));
    onCleanup('ceiling script dir', () => rm(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'hot.sql');
    await writeFile(script, HOT);

    log('starting Sluice --cache (one, and two on one Redis) and the null responders…');
    const sluice = await startSluice(direct, { poolSize: 20, profile: opts.profile, extraArgs: ['--cache'] });
    // One Sluice per core, as PgBouncer users run one PgBouncer per core: they share entries and
    // invalidations through Redis, and the clients are split between them.
    const redis = await startRedis();
    const pair = [];
    for (let i = 0; i < 2; i++)
      pair.push(
        await startSluice(direct, {
          poolSize: 10,
          extraArgs: ['--cache', ...(redis ? ['--redis', redis.url] : [])],
        }),
      );
    const sumTicks = async (read) => {
      const all = await Promise.all(read());
      return all.some((v) => v == null) ? undefined : all.reduce((a, b) => a + b, 0);
    };
    const targets = [
      { id: 'direct', label: 'PostgreSQL (direct)', conns: [direct], ticks: () => treeTicks(pg.pid) },
      {
        id: 'direct-split',
        label: `PostgreSQL (direct), clients split 2 × ${CLIENTS / 2}`,
        conns: [direct, direct],
        ticks: () => treeTicks(pg.pid),
      },
      { id: 'sluice', label: 'Sluice --cache', conns: [sluice], ticks: () => processTicks(sluice.pid) },
      {
        id: 'sluice2',
        label: `2 × Sluice --cache${redis ? ' on one Redis' : ' (no redis-server: nothing shared)'}, clients split 2 × ${CLIENTS / 2}`,
        conns: pair,
        ticks: () => sumTicks(() => pair.map((p) => processTicks(p.pid))),
      },
    ];
    for (const n of [1, 2]) {
      const r = await startResponder(n);
      targets.push({
        id: `null${n}`,
        label: `null responder, ${n} process${n > 1 ? 'es' : ''}`,
        conns: [r],
        ticks: () => treeTicks(r.pid),
      });
    }
    const workload = { mode: 'simple', clients: CLIENTS, scripts: [{ file: script }] };
    /** pgbench against every connection of a target at once, the clients and threads split evenly. */
    const drive = async (target, duration, cpu) => {
      const n = target.conns.length;
      const parts = await Promise.all(
        target.conns.map((conn) =>
          runPgbench(
            conn,
            { ...workload, clients: CLIENTS / n },
            { duration, threads: Math.max(1, THREADS / n), cpu },
          ),
        ),
      );
      const sum = (key) => (parts.some((p) => p[key] == null) ? null : parts.reduce((a, p) => a + p[key], 0));
      return {
        tps: sum('tps'),
        processed: sum('processed'),
        cpuTicks: sum('cpuTicks'),
        error: parts.find((p) => p.error)?.error,
      };
    };
    for (const target of targets) {
      const w = await drive(target, opts.quick ? 1 : 5, false);
      if (w.error) throw new Error(`${target.id} warm-up failed: ${w.error}`);
    }
    const rounds = opts.quick ? 1 : ROUNDS;
    const cells = [];
    for (let round = 1; round <= rounds; round++) {
      for (const target of targets) {
        if (wasSignalled()) throw new Error('interrupted');
        // PostgreSQL's backends exit with their clients: their CPU reaches the postmaster's cutime
        // once reaped, so both readings wait for the previous run's to be.
        await sleep(500);
        const before = await target.ticks();
        const r = await drive(target, opts.duration, true);
        await sleep(500);
        const after = await target.ticks();
        const txns = r.processed ?? (r.tps ?? 0) * opts.duration;
        const us = (ticks) => (ticks != null && txns > 0 ? (ticks / hz / txns) * 1e6 : null);
        const cell = {
          target: target.id,
          round,
          tps: r.tps,
          error: r.error,
          pgbenchUs: us(r.cpuTicks),
          serverUs: before != null && after != null ? us(after - before) : null,
        };
        cells.push(cell);
        log(
          `round ${round} ${target.id.padEnd(7)} ${r.error ? `ERROR ${r.error}` : `${fmt.tps(r.tps)} tps, pgbench ${cell.pgbenchUs?.toFixed(1)} µs + server ${cell.serverUs?.toFixed(1)} µs per txn`}`,
        );
      }
    }
    await sluice.stop();
    for (const p of pair) await p.stop();
    const median = (xs) => {
      const v = xs.filter((x) => x != null).sort((a, b) => a - b);
      return v.length ? v[Math.floor(v.length / 2)] : null;
    };
    const cores = cpus().length;
    const directTps = median(cells.filter((c) => c.target === 'direct').map((c) => c.tps));
    const rows = targets.map((target) => {
      const mine = cells.filter((c) => c.target === target.id);
      const tps = mine.some((c) => c.error) ? null : median(mine.map((c) => c.tps));
      const pgbenchUs = median(mine.map((c) => c.pgbenchUs));
      const serverUs = median(mine.map((c) => c.serverUs));
      const total = pgbenchUs != null && serverUs != null ? pgbenchUs + serverUs : null;
      const bound = total ? (cores * 1e6) / total : null;
      return {
        id: target.id,
        label: target.label,
        tps,
        toDirect: ratio(tps, directTps),
        runs: mine.map((c) => c.tps),
        pgbenchUs,
        serverUs,
        totalUs: total,
        coreBoundTps: bound,
        coreBoundToDirect: ratio(bound, directTps),
      };
    });
    machine.loadAverageAtEnd = loadavg().map((l) => Math.round(l * 100) / 100);
    const report = {
      scenario: 'ceiling',
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      options: {
        duration: opts.duration,
        quick: opts.quick,
        clients: CLIENTS,
        threads: THREADS,
        rounds,
        cores,
      },
      machine,
      rows,
      cells,
      sluiceCommand: sluice.command,
      notes: [NOISE_NOTE],
    };
    const markdown = renderMarkdown(report);
    const { jsonPath, mdPath } = await writeReport(`ceiling-${stamp(startedAt)}`, report, markdown);
    process.stdout.write(`${markdown}\n`);
    log(`wrote ${mdPath}`);
    log(`wrote ${jsonPath}`);
    return report;
  } finally {
    log('stopping everything this run started…');
    await runCleanup();
  }
}

function renderMarkdown(report) {
  const o = report.options;
  const us = (v) => (v == null ? '—' : v.toFixed(1));
  const out = [];
  out.push('# Ceiling: cached hot reads against a null responder', '');
  out.push(
    `${report.startedAt} · pgbench \`-M simple -c ${o.clients} -j ${o.threads} -T ${o.duration}\`, script ` +
      `\`SELECT price FROM hot_prices WHERE instrument_id = :k\` (k in 1..${SYMBOLS}). The targets take turns, ` +
      `${o.rounds} round(s); each figure is the median. CPU µs per transaction from /proc (user + system, all ` +
      `threads; PostgreSQL and the two-process responder with their children; both Sluices of a pair). A split ` +
      `target runs two pgbench processes at once, ${o.clients / 2} clients and one thread each (the same clients ` +
      `and threads as one pgbench with -j ${o.threads}). "${o.cores}-core bound": the tps ` +
      `the machine's ${o.cores} cores would give if pgbench and the server used nothing but them at these costs ` +
      `(${o.cores} × 10⁶ ÷ total µs). Load average at the end: ${report.machine.loadAverageAtEnd?.join(' / ')}.`,
    '',
  );
  out.push(`> ${report.notes[0]}`, '');
  out.push(
    table(
      [
        'target',
        'tps',
        '×direct',
        'pgbench µs/txn',
        'server µs/txn',
        'total µs/txn',
        `${o.cores}-core bound tps (×direct)`,
        'runs',
      ],
      report.rows.map((r) => [
        r.label,
        fmt.tps(r.tps),
        fmt.ratio(r.toDirect),
        us(r.pgbenchUs),
        us(r.serverUs),
        us(r.totalUs),
        r.coreBoundTps == null ? '—' : `${fmt.tps(r.coreBoundTps)} (${fmt.ratio(r.coreBoundToDirect)})`,
        r.runs.map((v) => fmt.tps(v)).join(', '),
      ]),
    ),
    '',
  );
  out.push(`Sluice: \`${report.sluiceCommand.replace(/\S*\/(dist\/cli\.js)/, '$1')}\``, '');
  return out.join('\n');
}
