// Owns pgbench: initialising the tables, running one measurement against one target, and reading
// tps / latency / failed transactions out of its report (format of pgbench 14–17).

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
 * Runs pgbench once. `workload` is { builtin?: 'select-only' | 'tpcb-like', mode, clients }.
 * Resolves the parsed result plus `args`, `exitCode` and `error` (a short reason when pgbench
 * failed or printed no tps). With `details`, also `errors` — every distinct error line pgbench
 * printed, with how often — and `abortedClients`.
 */
export async function runPgbench(conn, workload, { duration, threads = 2, details = false }) {
  const jobs = Math.min(threads, workload.clients);
  const args = ['-n', '-c', String(workload.clients), '-j', String(jobs), '-T', String(duration)];
  args.push('-M', workload.mode);
  if (workload.builtin === 'select-only') args.push('-S');
  const r = await run('pgbench', args, { env: pgEnv(conn), timeoutMs: (duration + 120) * 1000 });
  const parsed = parsePgbenchOutput(`${r.stdout}\n${r.stderr}`);
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
