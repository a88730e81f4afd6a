// Owns the suite run (`npm run bench` with no scenario, or `--scenarios LIST`): one PostgreSQL
// (embedded, or the `--upstream` URL), Sluice with the cache off, Sluice with the cache on and
// PgBouncer in front of it, each suite scenario run against every target in turn, progress on
// stderr, and the report directory bench/results/<time>/ (see suite-report.mjs).

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { onCleanup, runCleanup, wasSignalled } from './cleanup.mjs';
import { pgbenchVersion } from './pgbench.mjs';
import { PGBOUNCER_BIN, pgbouncerVersion, startPgbouncer } from './pgbouncer.mjs';
import { serverVersion, startPostgres } from './postgres.mjs';
import { psql } from './processes.mjs';
import { Progress } from './progress.mjs';
import { machineFacts, stamp } from './report.mjs';
import { sluiceUnavailable, startSluice } from './sluice.mjs';
import { writeSuiteReport } from './suite-report.mjs';

export const SUITE_TARGETS = ['direct', 'sluice', 'sluice-cache', 'pgbouncer'];
export const SUITE_LABELS = {
  direct: 'direct',
  sluice: 'Sluice cache off',
  'sluice-cache': 'Sluice cache on',
  pgbouncer: 'PgBouncer',
};
/** Every database the suite creates starts with this; on an --upstream server it drops them at the end. */
export const BENCH_DB = 'sluice_bench';
const POOL_SIZE = 20;
const MAX_CONNECTIONS = 300;
/** Client connections the proxies accept: the storm's 1 000 plus headroom. */
const MAX_CLIENT_CONN = 1100;

const log = (msg) => console.error(`[bench] ${msg}`);

/**
 * postgres://user:password@host:port/database -> { host, port, user, password, database }.
 * Throws a readable error for anything else.
 */
export function parseUpstream(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--upstream: not a URL: ${url}`);
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:')
    throw new Error('--upstream must be a postgres:// URL');
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || 'postgres'),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres',
  };
}

/**
 * Runs `scenarios` ([{ id, module }], modules exporting `suitePlan(opts)` and `suite(ctx)`).
 * opts: { quick, duration?, upstream?, writeRatio, targets: Set, profile }.
 */
export async function runSuite(scenarios, opts) {
  const startedAt = new Date();
  const duration = opts.duration ?? (opts.quick ? 2 : 10);
  const sopts = { quick: opts.quick, duration, writeRatio: opts.writeRatio, profile: opts.profile };
  const machine = await machineFacts();
  machine.pgbench = await pgbenchVersion();
  machine.pgbouncer = await pgbouncerVersion();
  if (!machine.pgbench)
    throw new Error('pgbench not found on PATH (Debian: apt-get install postgresql-client)');

  const wanted = SUITE_TARGETS.filter(
    (t) => t === 'direct' || (opts.targets.has(t) && (t !== 'pgbouncer' || machine.pgbouncer)),
  );
  log(
    `${scenarios.map((s) => s.id).join(', ')} against ${wanted.map((t) => SUITE_LABELS[t]).join(', ')}` +
      `${opts.quick ? ' (quick)' : ''}, ${duration} s per measured cell`,
  );

  const targets = Object.fromEntries(
    SUITE_TARGETS.map((t) => [
      t,
      { label: SUITE_LABELS[t], available: false, reason: 'left out with --targets' },
    ]),
  );
  if (!machine.pgbouncer && opts.targets.has('pgbouncer'))
    targets.pgbouncer.reason = `PgBouncer is not installed (no ${PGBOUNCER_BIN})`;
  const outcomes = [];
  let profiles = [];
  try {
    const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'sluice-bench-suite-'));
    onCleanup('suite temp dir', () => rm(tmpDir, { recursive: true, force: true }));

    log(opts.upstream ? 'checking the upstream PostgreSQL…' : 'starting PostgreSQL…');
    let admin;
    let postgresNote;
    if (opts.upstream) {
      admin = parseUpstream(opts.upstream);
      const r = await psql(admin, 'select 1');
      if (r.code !== 0) throw new Error(`--upstream: cannot run a query: ${r.stderr.trim()}`);
      postgresNote = `PostgreSQL at ${admin.host}:${admin.port} (--upstream), as ${admin.user}`;
    } else {
      const pg = await startPostgres({ maxConnections: MAX_CONNECTIONS });
      admin = { host: pg.host, port: pg.port, user: pg.user, password: pg.password, database: 'postgres' };
      postgresNote = `PostgreSQL started by ${pg.startedBy}; max_connections ${MAX_CONNECTIONS}`;
    }
    machine.postgres = await serverVersion(admin);
    log(`PostgreSQL ${machine.postgres} on ${admin.host}:${admin.port}`);
    const maxConn = await psql(admin, 'show max_connections');
    machine.postgresMaxConnections = Number(maxConn.stdout.trim()) || null;

    const createDatabase = async (suffix) => {
      const name = suffix ? `${BENCH_DB}_${suffix}` : BENCH_DB;
      // The bench owns every database named sluice_bench*: one left by an interrupted run goes.
      const r = await psql(admin, [
        `drop database if exists ${name} with (force)`,
        `create database ${name}`,
      ]);
      if (r.code !== 0) throw new Error(`creating database ${name} failed: ${r.stderr.trim()}`);
      if (opts.upstream)
        onCleanup(`drop ${name}`, () => psql(admin, `drop database if exists ${name} with (force)`));
      return name;
    };
    await createDatabase();
    const direct = { ...admin, database: BENCH_DB };
    targets.direct = { label: SUITE_LABELS.direct, available: true, conn: { ...admin } };

    const upstream = { ...admin, password: admin.password ?? '' };
    const sluiceProblem = wanted.some((t) => t.startsWith('sluice')) ? await sluiceUnavailable() : undefined;
    // The proxies start side by side: each waits mostly for its own readiness probe.
    await Promise.all(
      wanted
        .filter((t) => t !== 'direct')
        .map(async (name) => {
          try {
            if (name.startsWith('sluice') && sluiceProblem) throw new Error(sluiceProblem);
            const proxy =
              name === 'pgbouncer'
                ? await startPgbouncer(upstream, { poolSize: POOL_SIZE, maxClientConn: MAX_CLIENT_CONN })
                : await startSluice(upstream, {
                    poolSize: POOL_SIZE,
                    profile: opts.profile,
                    extraArgs: [
                      '--max-client-conn',
                      String(MAX_CLIENT_CONN),
                      ...(name === 'sluice-cache' ? ['--cache'] : []),
                    ],
                  });
            if (name === 'pgbouncer')
              proxy.command = `${machine.pgbouncer}: pool_mode transaction, default_pool_size ${POOL_SIZE}, max_client_conn ${MAX_CLIENT_CONN}, auth_type trust`;
            targets[name] = { label: SUITE_LABELS[name], available: true, conn: proxy, proxy };
            log(`${SUITE_LABELS[name]} on ${proxy.host}:${proxy.port} (pid ${proxy.pid})`);
          } catch (err) {
            targets[name] = { label: SUITE_LABELS[name], available: false, reason: err.message };
            log(`${SUITE_LABELS[name]} not benchmarked: ${err.message.split('\n')[0]}`);
          }
        }),
    );
    const active = () => SUITE_TARGETS.filter((t) => targets[t].available);

    // The plan, for the step count and the ETA: every scenario's steps, per-target ones once per
    // target that is in the run.
    const steps = [];
    for (const s of scenarios) {
      for (const p of s.module.suitePlan(sopts)) {
        const names = p.perTarget ? active().filter((t) => !p.only || p.only.includes(t)) : [null];
        for (const t of names)
          steps.push({
            label: `${s.id} · ${p.label}${t ? ` · ${SUITE_LABELS[t]}` : ''}`,
            seconds: p.seconds,
          });
      }
    }
    const progress = new Progress(steps, {
      startedAt: performance.now() - (Date.now() - startedAt.getTime()),
    });
    log(
      `${steps.length} steps, about ${Math.ceil(steps.reduce((n, s) => n + s.seconds, 0) / 60)} min planned`,
    );

    const ctx = {
      opts: sopts,
      targets,
      get active() {
        return active();
      },
      admin,
      direct,
      machine,
      progress,
      /** Announces the next step: `label` of the current scenario, optionally for one target. */
      step: (label, name) =>
        progress.step(`${ctx.scenario} · ${label}${name ? ` · ${SUITE_LABELS[name]}` : ''}`),
      scenario: '',
      tmpDir,
      createDatabase,
      /** Connection settings for `name` to `database` (default: the bench database). */
      connFor: (name, database = BENCH_DB) => ({
        host: targets[name].conn.host,
        port: targets[name].conn.port,
        user: targets[name].conn.user,
        password: targets[name].conn.password ?? '',
        database,
      }),
      /** Why `name` cannot run a cell now (its proxy exited), or undefined. */
      gone: (name) => {
        const info = targets[name].proxy?.child.exitInfo;
        return info
          ? `${SUITE_LABELS[name]} had exited (code ${info.code}, signal ${info.signal})`
          : undefined;
      },
    };

    for (const s of scenarios) {
      if (wasSignalled()) throw new Error('interrupted');
      const t0 = performance.now();
      ctx.scenario = s.id;
      try {
        const result = await s.module.suite(ctx);
        outcomes.push({ ...result, id: s.id, seconds: Math.round((performance.now() - t0) / 100) / 10 });
      } catch (err) {
        if (wasSignalled()) throw err;
        // One scenario failing must not cost the others' figures.
        progress.note(`${s.id} FAILED: ${err.message}`);
        outcomes.push({
          id: s.id,
          title: s.module.title ?? s.id,
          error: err.message,
          seconds: Math.round((performance.now() - t0) / 100) / 10,
          rows: [],
        });
      }
    }

    for (const name of ['sluice', 'sluice-cache']) {
      const proxy = targets[name].proxy;
      if (!proxy) continue;
      await proxy.stop();
      if (opts.profile) profiles.push(...(await proxy.newProfiles()));
    }
    profiles = [...new Set(profiles)];
    machine.loadAverageAtEnd = os.loadavg().map((l) => Math.round(l * 100) / 100);
    const finishedAt = new Date();
    const report = {
      suite: true,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      wallSeconds: Math.round((finishedAt - startedAt) / 100) / 10,
      options: {
        quick: opts.quick,
        duration,
        writeRatio: opts.writeRatio,
        upstream: opts.upstream ? opts.upstream.replace(/:[^:@/]*@/, ':***@') : null,
        poolSize: POOL_SIZE,
        poolMode: 'transaction',
        scenarios: scenarios.map((s) => s.id),
      },
      machine,
      postgres: postgresNote,
      targets: Object.fromEntries(
        Object.entries(targets).map(([name, t]) => [
          name,
          { label: t.label, available: t.available, reason: t.reason, command: t.proxy?.command },
        ]),
      ),
      scenarios: outcomes,
      profiles,
    };
    const dir = await writeSuiteReport(report, stamp(startedAt), opts.out);
    log(`done in ${report.wallSeconds} s; wrote ${dir}/ (results.json, summary.md, *.svg)`);
    return { report, dir };
  } finally {
    log('stopping everything this run started…');
    await runCleanup();
  }
}
