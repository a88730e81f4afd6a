// The rules scenario: what loaded rules cost on the hot path — pgbench select-only straight into
// PostgreSQL and through Sluice without `--rules`, with an empty rules directory, with 10 and with
// 100 rules that do not match pgbench's query — and what the sargable-time-range rewrite does to a
// date_trunc query on a hypertable-like `ticks` table (EXPLAIN before and after, directly).

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onCleanup, runCleanup, wasSignalled } from './lib/cleanup.mjs';
import { initPgbench, maintain, pgbenchVersion, runPgbench } from './lib/pgbench.mjs';
import { serverVersion, startPostgres } from './lib/postgres.mjs';
import { psql, run as runCommand } from './lib/processes.mjs';
import { fmt, machineFacts, NOISE_NOTE, ratio, stamp, table, writeReport } from './lib/report.mjs';
import { SLUICE_CLI, sluiceUnavailable, startSluice } from './lib/sluice.mjs';
import { machineLines } from './lib/targets.mjs';

export const description =
  'rules on the hot path (pgbench -S through Sluice with 0/10/100 rules) and the sargable-time-range rewrite';

const SCALE = 10;
const CLIENTS = 16;
const THREADS = 2;
const POOL_SIZE = 20;
const MAX_CONNECTIONS = 300;
const MODES = ['simple', 'extended'];
const TICKS_FULL = 10_000_000;
const TICKS_QUICK = 1_000_000;
const TICKS_DAYS = 100; // ticks spread evenly over 100 days from 2024-01-01
const DAY = '2024-02-15';
const EXPLAIN_REPEATS = 3;

/** Sluice targets, in run order; `rules` is the number of generated rules, null for no --rules. */
const SLUICE_TARGETS = [
  { id: 'sluice', label: 'Sluice, no `--rules`', rules: null },
  { id: 'rules-0', label: 'Sluice, 0 rules', rules: 0 },
  { id: 'rules-10', label: 'Sluice, 10 rules', rules: 10 },
  { id: 'rules-100', label: 'Sluice, 100 rules', rules: 100 },
  { id: 'rules-acting', label: 'Sluice, 10 rules + timeout & limit matching', rules: 10, acting: true },
];

/**
 * Two rules that DO apply to pgbench's query: a timeout (each simple-protocol statement goes out
 * as `SET LOCAL statement_timeout = 30000; ...`, its SET reply dropped) and a row cap (a LIMIT
 * appended). Extended-protocol statements are not acted on, so only `-M simple` pays for them.
 */
const ACTING_RULES = `  - name: pgbench-timeout
    match: { kind: select, tables: [pgbench_accounts] }
    timeout: 30
  - name: pgbench-limit
    match: { kind: select, tables: [pgbench_accounts] }
    limit: 1000
`;

const log = (msg) => console.error(`[rules] ${msg}`);

/**
 * `n` rules, none matching pgbench's `SELECT abalance FROM pgbench_accounts WHERE aid = $1`. One in
 * four is `kind: select` on other_table_N (25 of 100), so the select bucket is not empty; the rest
 * are writes on other tables, insert rules by regex / digest / function, and kind-less rules on a
 * user, database or application_name nobody uses.
 */
export function generateRules(n) {
  const lines = ['rules:'];
  const selectActions = [
    'log: true',
    'limit: 1000',
    'timeout: 30',
    'max_concurrency: { limit: 4 }',
    'cache: { ttl: 60 }',
  ];
  for (let i = 0; i < n; i++) {
    const name = `  - name: r${i}`;
    const q = Math.floor(i / 4);
    switch (i % 4) {
      case 0:
        lines.push(
          name,
          `    match: { kind: select, tables: [other_table_${i}] }`,
          `    ${selectActions[q % selectActions.length]}`,
        );
        break;
      case 1:
        lines.push(
          name,
          `    match: { kind: ${q % 2 ? 'update' : 'delete'}, tables: [other_table_${i}, "archive_${i}_*"], has_where: false }`,
          `    block: { message: "r${i}: not through the proxy" }`,
        );
        break;
      case 2: {
        const m = [
          `{ kind: insert, regex: "other_table_${i}\\\\s+VALUES" }`,
          `{ kind: insert, digest: "insert into other_table_${i} (a, b) values ($1, $2)" }`,
          `{ kind: insert, tables: [other_table_${i}], functions: [gen_random_uuid] }`,
        ][q % 3];
        lines.push(name, `    match: ${m}`, '    timeout: 5');
        break;
      }
      default: {
        const m = [`{ user: bot_${i} }`, `{ database: db_${i} }`, `{ application_name: "app_${i}_*" }`][
          q % 3
        ];
        lines.push(name, `    match: ${m}`, '    log: true');
      }
    }
  }
  if (n === 0) lines[0] = 'rules: []';
  return `${lines.join('\n')}\n`;
}

/** A temp rules directory with one file holding `text`; removed on cleanup. */
async function rulesDir(label, text) {
  const dir = await mkdtemp(path.join(tmpdir(), `sluice-bench-${label}-`));
  onCleanup(`rules dir ${label}`, () => rm(dir, { recursive: true, force: true }));
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'rules.yaml'), text);
  return dir;
}

/**
 * @param {{ duration: number, quick: boolean, profile: boolean, targets: Set<string> }} opts
 */
export async function run(opts) {
  const startedAt = new Date();
  const notes = [];
  const machine = await machineFacts();
  machine.pgbench = await pgbenchVersion();
  if (!machine.pgbench)
    throw new Error('pgbench not found on PATH (Debian: apt-get install postgresql-client)');
  const unavailable = await sluiceUnavailable();
  if (unavailable) throw new Error(unavailable);
  const ticksRows = opts.quick ? TICKS_QUICK : TICKS_FULL;
  try {
    log('starting PostgreSQL…');
    const pg = await startPostgres({ maxConnections: MAX_CONNECTIONS });
    const direct = { host: pg.host, port: pg.port, user: pg.user, password: pg.password };
    machine.postgres = await serverVersion(direct);
    log(`PostgreSQL ${machine.postgres} on ${pg.host}:${pg.port}; pgbench -i -s ${SCALE}…`);
    await initPgbench(direct, { scale: SCALE });

    // Part 1: pgbench -S, direct then each Sluice target alone (start, warm up, both modes, stop).
    const warmup = { builtin: 'select-only', mode: 'simple', clients: 4 };
    const warmSecs = opts.quick ? 1 : 2;
    const cells = []; // { target, mode, result }
    const measure = async (target, conn) => {
      const w = await runPgbench(conn, warmup, { duration: warmSecs, threads: THREADS });
      if (w.error) throw new Error(`${target} warm-up failed: ${w.error}`);
      for (const mode of MODES) {
        if (wasSignalled()) throw new Error('interrupted');
        await maintain(direct);
        const r = await runPgbench(
          conn,
          { builtin: 'select-only', mode, clients: CLIENTS },
          { duration: opts.duration, threads: THREADS },
        );
        cells.push({ target, mode, result: r });
        log(
          `${target.padEnd(9)} -M ${mode.padEnd(8)} ${r.error ? `ERROR ${r.error}` : `${fmt.tps(r.tps)} tps`}`,
        );
      }
    };
    await measure('direct', direct);

    const commands = {};
    for (const t of SLUICE_TARGETS) {
      const extraArgs = [];
      if (t.rules !== null) {
        const dir = await rulesDir(t.id, generateRules(t.rules) + (t.acting ? ACTING_RULES : ''));
        const check = await runCommand(process.execPath, [SLUICE_CLI, 'rules', 'check', dir], {
          timeoutMs: 30_000,
        });
        if (check.code !== 0)
          throw new Error(`generated ${t.rules} rules do not load: ${check.stdout}${check.stderr}`);
        extraArgs.push('--rules', dir);
      }
      log(`starting ${t.label}…`);
      const sluice = await startSluice(direct, { poolSize: POOL_SIZE, profile: opts.profile, extraArgs });
      commands[t.id] = sluice.command.replace(/\S*\/(dist\/cli\.js)/, '$1').replace(/\/tmp\/\S+/, '<tmp>/');
      try {
        await measure(t.id, sluice);
      } finally {
        await sluice.stop();
      }
    }
    const pgbenchRows = MODES.map((mode) => {
      const tps = (target) => {
        const c = cells.find((x) => x.target === target && x.mode === mode);
        return c && !c.result.error ? c.result.tps : null;
      };
      return {
        mode,
        direct: tps('direct'),
        targets: SLUICE_TARGETS.map((t) => ({
          id: t.id,
          rules: t.rules,
          tps: tps(t.id),
          toNoRules: ratio(tps(t.id), tps('sluice')),
          toDirect: ratio(tps(t.id), tps('direct')),
        })),
      };
    });

    // Part 2: the rewrite, directly against PostgreSQL.
    const rewrite = await rewritePart(direct, ticksRows);

    machine.loadAverageAtEnd = (await import('node:os')).loadavg().map((l) => Math.round(l * 100) / 100);
    const report = {
      scenario: 'rules',
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
        ticksRows,
      },
      machine,
      pgbench: pgbenchRows,
      cells: cells.map((c) => ({ target: c.target, mode: c.mode, ...c.result })),
      sluiceCommands: commands,
      rewrite,
      notes: [NOISE_NOTE, ...notes],
    };
    const markdown = renderMarkdown(report);
    const { jsonPath, mdPath } = await writeReport(`rules-${stamp(startedAt)}`, report, markdown);
    process.stdout.write(`${markdown}\n`);
    log(`wrote ${mdPath}`);
    log(`wrote ${jsonPath}`);
    return report;
  } finally {
    log('stopping everything this run started…');
    await runCleanup();
  }
}

async function sql(direct, statements, timeoutMs = 30 * 60_000) {
  const r = await psql(direct, statements, { timeoutMs });
  if (r.code !== 0) throw new Error(`psql failed: ${r.stderr.trim()}`);
  return r.stdout;
}

async function rewritePart(direct, rows) {
  log(`ticks: ${rows.toLocaleString('en-US')} rows over ${TICKS_DAYS} days…`);
  const stepMs = (TICKS_DAYS * 86_400_000) / rows;
  const t0 = Date.now();
  await sql(direct, [
    'drop table if exists ticks',
    'create table ticks (ts timestamptz not null, symbol text not null, price numeric not null)',
    `insert into ticks select timestamptz '2024-01-01' + (i::float8 * ${stepMs}) * interval '1 millisecond', ` +
      `'S' || (i % 100), round((100 + (i % 10000) / 100.0)::numeric, 2) from generate_series(0, ${rows - 1}) i`,
    'create index ticks_ts_idx on ticks (ts)',
    'vacuum (freeze, analyze) ticks',
    'checkpoint',
  ]);
  const loadSeconds = (Date.now() - t0) / 1000;
  log(`ticks loaded in ${loadSeconds.toFixed(1)} s`);

  const before = `select count(*), avg(price) from ticks where date_trunc('day', ts) = '${DAY}'`;
  const dir = await rulesDir(
    'rewrite',
    'rules:\n  - name: sargable-ticks\n    match: { kind: select, tables: [ticks] }\n    rewrite: { builtin: sargable-time-range }\n',
  );
  // 120 s: the CLI's start alone took over 30 s on the shared 2-core machine at load average 30.
  const ex = await runCommand(process.execPath, [SLUICE_CLI, 'rules', 'explain', '--rules', dir, before], {
    timeoutMs: 120_000,
  });
  if (ex.code !== 0)
    throw new Error(`sluice rules explain failed (code ${ex.code}): ${ex.stderr || ex.stdout}`);
  const lines = ex.stdout.split('\n');
  const at = lines.findIndex((l) => l.trim() === 'final query');
  const after = at >= 0 ? lines[at + 1]?.trim() : undefined;
  if (!after) throw new Error(`no "final query" in sluice rules explain output:\n${ex.stdout}`);

  const out = { rows, days: TICKS_DAYS, day: DAY, loadSeconds, explainRepeats: EXPLAIN_REPEATS };
  for (const [key, text] of [
    ['before', before],
    ['after', after],
  ]) {
    const runs = [];
    let plan = '';
    for (let i = 0; i < EXPLAIN_REPEATS; i++) {
      plan = await sql(direct, `explain (analyze, buffers) ${text}`);
      const exec = /Execution Time: ([\d.]+) ms/.exec(plan);
      runs.push(exec ? Number(exec[1]) : null);
    }
    const cost = /cost=([\d.]+)\.\.([\d.]+)/.exec(plan);
    const nodes = [
      ...plan.matchAll(
        /(Parallel Seq Scan|Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan)/g,
      ),
    ].map((m) => m[1]);
    const sorted = runs.filter((v) => v != null).sort((a, b) => a - b);
    out[key] = {
      sql: text,
      result: (await sql(direct, text)).trim(),
      totalCost: cost ? Number(cost[2]) : null,
      scans: [...new Set(nodes)],
      shape: nodes.some((n) => n.includes('Index'))
        ? 'index/bitmap scan'
        : nodes.length
          ? 'seq scan'
          : 'unknown',
      executionMs: runs,
      medianMs: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null,
      plan: plan.trim(),
    };
    log(
      `${key}: ${out[key].shape}, cost ${out[key].totalCost}, median ${out[key].medianMs} ms, row ${out[key].result}`,
    );
  }
  out.sameResult = out.before.result === out.after.result;
  out.speedup = ratio(out.before.medianMs, out.after.medianMs);
  await sql(direct, 'drop table ticks');
  return out;
}

function renderMarkdown(report) {
  const o = report.options;
  const rw = report.rewrite;
  const out = [];
  out.push('# Rules on the hot path, and the sargable-time-range rewrite', '');
  out.push(
    `${report.startedAt} · pgbench \`-S\` scale ${o.scale}, ${o.clients} clients, \`-j ${o.threads} -T ${o.duration}\`, ` +
      `one run per cell. Sluice in transaction mode, pool ${o.poolSize}; each Sluice target started, warmed up, ` +
      'run in both modes and stopped before the next (direct first). The generated rules match none of ' +
      "pgbench's queries; the 100-rule set has 25 `kind: select` rules (on other tables). The last target adds " +
      "a timeout and a limit rule that match pgbench's query (acted on in `-M simple` only)." +
      `${o.quick ? ' Quick run.' : ''}`,
    '',
  );
  out.push(`> ${NOISE_NOTE}`, '');
  out.push('## pgbench select-only: tps (ratio to Sluice without `--rules`)', '');
  const header = ['mode', 'direct', ...SLUICE_TARGETS.map((t) => t.label)];
  const rows = report.pgbench.map((r) => [
    `\`-M ${r.mode}\``,
    fmt.tps(r.direct),
    ...r.targets.map((t) =>
      t.id === 'sluice'
        ? `${fmt.tps(t.tps)} (1.00; ${fmt.ratio(t.toDirect)} of direct)`
        : `${fmt.tps(t.tps)} (${fmt.ratio(t.toNoRules)})`,
    ),
  ]);
  out.push(table(header, rows), '');
  const errors = report.cells.filter((c) => c.error);
  for (const c of errors) out.push(`- ${c.target} \`-M ${c.mode}\`: ${c.error}`);
  if (errors.length) out.push('');

  out.push(`## Rewrite: \`date_trunc('day', ts) = …\` on ticks, ${rw.rows.toLocaleString('en-US')} rows`, '');
  out.push(
    `\`ticks(ts timestamptz, symbol text, price numeric)\`, index on \`ts\`, ${rw.rows.toLocaleString('en-US')} rows ` +
      `evenly over ${rw.days} days from 2024-01-01 (loaded, vacuum-frozen and analyzed in ${rw.loadSeconds.toFixed(0)} s); ` +
      `a plain table, not a TimescaleDB hypertable. The query is run directly against PostgreSQL; "after" is the ` +
      '`final query` line of `sluice rules explain --rules <dir with a sargable-time-range rule on ticks>`. ' +
      `\`EXPLAIN (ANALYZE, BUFFERS)\` ${rw.explainRepeats}× each; execution time is the median.`,
    '',
  );
  out.push(
    table(
      ['', 'plan', 'estimated cost', 'execution ms (median; all runs)', 'result'],
      ['before', 'after'].map((k) => [
        k,
        `${rw[k].shape} (${rw[k].scans.join(', ')})`,
        rw[k].totalCost?.toLocaleString('en-US') ?? '—',
        `${rw[k].medianMs ?? '—'} (${rw[k].executionMs.join(', ')})`,
        `\`${rw[k].result.replaceAll('|', ', ')}\``,
      ]),
    ),
    '',
  );
  out.push(
    `Same row before and after: **${rw.sameResult ? 'yes' : 'NO'}**. Speed-up (median before ÷ after): ${fmt.ratio(rw.speedup)}×; ` +
      `cost before ÷ after: ${fmt.ratio(ratio(rw.before.totalCost, rw.after.totalCost))}×.`,
    '',
  );
  for (const k of ['before', 'after']) {
    out.push(
      `<details><summary>${k}: plan</summary>`,
      '',
      '```sql',
      rw[k].sql,
      '```',
      '',
      '```',
      rw[k].plan,
      '```',
      '',
      '</details>',
      '',
    );
  }
  out.push(...machineLines(report.machine));
  out.push('## Notes', '');
  for (const [id, cmd] of Object.entries(report.sluiceCommands)) out.push(`- ${id}: \`${cmd}\``);
  out.push(
    '- pgbench gets `-n`; before each run: vacuum pgbench_branches/tellers, truncate history, checkpoint.',
  );
  return out.join('\n');
}
