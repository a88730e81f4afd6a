// Owns pgbench: initialising the tables, running one measurement against one target, and reading
// tps / latency / failed transactions out of its report (format of pgbench 14–17).

import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { processTicks } from './cpu.mjs';
import { psql, run } from './processes.mjs';

function pgEnv(conn) {
  return {
    ...process.env,
    PGHOST: conn.host,
    PGPORT: String(conn.port),
    PGUSER: conn.user,
    PGPASSWORD: conn.password ?? '',
    PGDATABASE: conn.database ?? 'postgres',
  };
}

export async function pgbenchVersion() {
  const r = await run('pgbench', ['--version']);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** `pgbench -i -s <scale>` straight into PostgreSQL, then a checkpoint so none lands mid-row. */
export async function initPgbench(conn, { scale }) {
  const r = await run('pgbench', ['-i', '-q', '-s', String(scale)], {
    env: pgEnv(conn),
    timeoutMs: 15 * 60_000,
  });
  if (r.code !== 0) throw new Error(`pgbench -i failed (code ${r.code}):\n${r.stderr}`);
  await maintain(conn);
}

/**
 * What pgbench does before a run unless given -n: vacuum the two small tables, empty the history.
 * Done here, directly against PostgreSQL, before every run of every target, and pgbench itself
 * always gets -n — so direct, Sluice and PgBouncer each start from the same table state.
 */
export async function maintain(conn) {
  const r = await psql(
    conn,
    ['vacuum pgbench_branches', 'vacuum pgbench_tellers', 'truncate pgbench_history', 'checkpoint'],
    { timeoutMs: 120_000 },
  );
  if (r.code !== 0) throw new Error(`pre-run vacuum failed: ${r.stderr.trim()}`);
}

/**
 * Runs pgbench once. `workload` is { builtin?: 'select-only' | 'tpcb-like', scripts?, extraArgs?,
 * mode, clients }: `scripts` ([{ file, weight? }]) are custom scripts (`-f file[@weight]`) instead of
 * a builtin, `extraArgs` more pgbench options (e.g. `-l --log-prefix …`). Resolves the parsed result
 * plus `args`, `exitCode` and `error` (a short reason when pgbench failed or printed no tps); with
 * several scripts, `scripts` too: [{ name, transactions }] from pgbench's per-script section. With
 * `details`, also `errors` — every distinct error line pgbench printed, with how often — and
 * `abortedClients`.
 */
export async function runPgbench(conn, workload, { duration, threads = 2, details = false, cpu = false }) {
  const jobs = Math.min(threads, workload.clients);
  const args = ['-n', '-c', String(workload.clients), '-j', String(jobs), '-T', String(duration)];
  args.push('-M', workload.mode);
  if (workload.builtin === 'select-only') args.push('-S');
  for (const s of workload.scripts ?? [])
    args.push('-f', s.weight == null ? s.file : `${s.file}@${s.weight}`);
  if (workload.extraArgs) args.push(...workload.extraArgs);
  const timeoutMs = (duration + 120) * 1000;
  const r = cpu
    ? await runWithCpu('pgbench', args, { env: pgEnv(conn), timeoutMs })
    : await run('pgbench', args, { env: pgEnv(conn), timeoutMs });
  const parsed = parsePgbenchOutput(`${r.stdout}\n${r.stderr}`);
  if ((workload.scripts?.length ?? 0) > 1) parsed.scripts = parseScriptCounts(r.stdout);
  if (cpu) parsed.cpuTicks = r.cpuTicks ?? null;
  let error;
  if (r.code !== 0 || parsed.tps === null) {
    const lines = `${r.stderr}\n${r.stdout}`
      .split('\n')
      .filter((l) => /error|abort|fatal|could not/i.test(l));
    error = `pgbench exit ${r.code}: ${(lines.slice(0, 3).join(' | ') || r.stderr.trim().slice(0, 300)).trim()}`;
  }
  const result = { ...parsed, args: `pgbench ${args.join(' ')}`, exitCode: r.code, error };
  if (details) Object.assign(result, summariseErrors(r.stderr));
  return result;
}

/**
 * run(), sampling the child's CPU time (user + system, all threads, from /proc/<pid>/stat) every
 * 50 ms while it runs: the last reading before it exits is its CPU time, short by at most 50 ms of
 * the end (when pgbench only joins its threads and prints). Resolves run()'s result plus `cpuTicks`.
 */
async function runWithCpu(command, args, opts) {
  let last;
  let timer;
  const r = await run(command, args, {
    ...opts,
    onSpawn: (pid) => {
      const sample = () =>
        processTicks(pid).then((t) => {
          if (t !== undefined) last = t;
        });
      void sample();
      timer = setInterval(sample, 50);
    },
  });
  clearInterval(timer);
  return { ...r, cpuTicks: last };
}

/**
 * The distinct error lines in pgbench's stderr, client numbers masked ("client N"), most frequent
 * first, each with the server's message when the line carries one; plus how many clients aborted.
 */
export function summariseErrors(stderr) {
  const counts = new Map();
  let abortedClients = 0;
  for (const raw of stderr.split('\n')) {
    // Many threads write to one stderr, so prefixes interleave ("error: pgbench: error: pgbench:client
    // 3 …"): drop every leading "pgbench:" and "error:" and key the line on what follows.
    const line = raw.trim().replace(/^(?:(?:pgbench|error):\s*)+/, '');
    if (!/error|abort|fatal|could not/i.test(line)) continue;
    if (/\bclient \d+ script \d+ aborted\b/.test(line)) abortedClients++;
    const key = line.replace(/\bclient \d+/g, 'client N').replace(/\s+/g, ' ');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const errors = [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([line, count]) => {
      const m = /\b(?:ERROR|FATAL):\s+(.*)$/.exec(line);
      return { line, count, server: m ? m[1].trim() : undefined, aborted: /\baborted in\b/.test(line) };
    });
  return { errors, abortedClients };
}

/** Pulls the summary figures out of pgbench's report; absent figures are null. */
export function parsePgbenchOutput(text) {
  const num = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : null;
  };
  return {
    tps: num(/^tps = ([\d.]+)/m),
    latencyMs: num(/^latency average = ([\d.]+) ms/m),
    latencyStddevMs: num(/^latency stddev = ([\d.]+) ms/m),
    processed: num(/^number of transactions actually processed: (\d+)/m),
    failed: num(/^number of failed transactions: (\d+)/m),
    connectMs: num(/^initial connection time = ([\d.]+) ms/m),
    aborted: /Run was aborted/.test(text),
  };
}

/**
 * pgbench's per-script section, printed when it runs several scripts:
 *   SQL script 1: /tmp/…/read.sql
 *    - weight: 48 (targets 48.0% of total)
 *    - 123456 transactions (48.1% of total, tps = 12345.678901)
 * Resolves [{ name, transactions }] in script order.
 */
export function parseScriptCounts(text) {
  const out = [];
  const re = /^SQL script \d+: (.+)\n(?:.*\n)*? - (\d+) transactions \(/gm;
  for (const m of text.matchAll(re)) out.push({ name: m[1].trim(), transactions: Number(m[2]) });
  return out;
}

/**
 * Per-transaction latencies (µs) from the logs of `pgbench -l --log-prefix <prefix>`: one file per
 * thread, `<prefix>.<pid>` and `<prefix>.<pid>.<thread>`, each line `client_id transaction_no time
 * script_no time_epoch time_us …` with `time` the transaction's latency in µs (or "failed" /
 * "skipped"). Resolves { latenciesUs: Float64Array (sorted), failed, files }.
 */
export async function readTransactionLog(prefix) {
  const dir = path.dirname(prefix);
  const base = path.basename(prefix);
  const files = (await readdir(dir)).filter((f) => f === base || f.startsWith(`${base}.`));
  const values = [];
  let failed = 0;
  for (const f of files) {
    const text = await readFile(path.join(dir, f), 'utf8');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const t = line.split(' ')[2];
      const v = Number(t);
      if (Number.isFinite(v)) values.push(v);
      else failed++;
    }
  }
  const latenciesUs = Float64Array.from(values).sort();
  return { latenciesUs, failed, files: files.length };
}

/** The q-quantile (0..1) of sorted values, nearest rank; null when empty. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}
