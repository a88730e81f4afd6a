// The connection-storm scenario (suite only): 1 000 clients (250 with --quick) open a connection
// at the same moment, run one query and leave, against every suite target; completion time,
// errors, and each client's connect + query latency in an HDR histogram.

import pg from 'pg';
import { wasSignalled } from './lib/cleanup.mjs';
import { newHistogram, recordUs, summarise } from './lib/latency.mjs';

export const title = 'Connection storm';
export const description =
  '1 000 clients connect at once and run one query each; completion time, errors, p50/p99';

const CLIENTS = 1000;
const QUICK_CLIENTS = 250;
/** Every client gives up after this; the storm as a whole is bounded by it too. */
const CLIENT_TIMEOUT_MS = 30_000;
const QUERY = 'SELECT 1';

const clientsFor = (opts) => (opts.quick ? QUICK_CLIENTS : CLIENTS);

export function suitePlan(opts) {
  return [{ label: `${clientsFor(opts)} clients`, seconds: opts.quick ? 4 : 10, perTarget: true }];
}

export async function suite(ctx) {
  const n = clientsFor(ctx.opts);
  const cells = {};
  for (const name of ctx.active) {
    ctx.step(`${n} clients`, name);
    const gone = ctx.gone(name);
    if (gone) {
      cells[name] = { throughput: null, latency: null, errors: 0, error: gone };
      continue;
    }
    const run = await storm(ctx.connFor(name), n);
    if (wasSignalled()) throw new Error('interrupted');
    cells[name] = {
      throughput: run.ok / (run.completionMs / 1000),
      latency: summarise(run.histogram),
      errors: run.failed,
      errorsByMessage: run.errorsByMessage,
      clients: n,
      ok: run.ok,
      completionMs: run.completionMs,
    };
    if (run.ok === 0) cells[name].error = Object.keys(run.errorsByMessage)[0] ?? 'no client succeeded';
    ctx.progress.note(
      `${run.ok}/${n} ok in ${(run.completionMs / 1000).toFixed(2)} s, p50 ${ms(cells[name].latency?.p50)} ms, ` +
        `p99 ${ms(cells[name].latency?.p99)} ms, ${run.failed} errors${run.failed ? ` (${Object.keys(run.errorsByMessage)[0]})` : ''}`,
    );
  }
  const limit = ctx.machine.postgresMaxConnections;
  return {
    title,
    description:
      `${n} node-postgres clients start together; each connects, runs \`${QUERY}\` and disconnects (each bounded ` +
      `by ${CLIENT_TIMEOUT_MS / 1000} s). Throughput is clients completed per second of the storm's completion ` +
      'time; latency is connect + query per successful client. Clients log in to PostgreSQL directly with ' +
      'SCRAM (the password), to the proxies with trust: the proxies log in to PostgreSQL only for their pool of ' +
      `${20} server connections.`,
    rows: [
      {
        id: 'storm',
        label: `${n} clients, connect + \`${QUERY}\``,
        short: `${n} clients`,
        unit: 'clients/s',
        latencyOf: 'connect + query per client',
        cells,
      },
    ],
    tables: [
      {
        title: 'Storm completion',
        header: ['target', 'completed', 'completion time', 'errors (first message)'],
        rows: Object.entries(cells).map(([t, c]) => [
          ctx.targets[t].label,
          c.ok == null ? '—' : `${c.ok} / ${n}`,
          c.completionMs == null ? '—' : `${(c.completionMs / 1000).toFixed(2)} s`,
          c.errors ? `${c.errors} (${Object.keys(c.errorsByMessage ?? {})[0] ?? c.error})` : '0',
        ]),
      },
    ],
    notes:
      limit && limit < n
        ? [
            `PostgreSQL's max_connections is ${limit}: direct, at most that many clients can be connected at once.`,
          ]
        : [],
  };
}

async function storm(conn, n) {
  const histogram = newHistogram();
  const errorsByMessage = {};
  let ok = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({
        ...conn,
        connectionTimeoutMillis: CLIENT_TIMEOUT_MS,
        query_timeout: CLIENT_TIMEOUT_MS,
      });
      c.on('error', () => {});
      const start = performance.now();
      try {
        await c.connect();
        await c.query(QUERY);
        recordUs(histogram, (performance.now() - start) * 1000);
        ok++;
      } catch (err) {
        failed++;
        const key = String(err.message).slice(0, 120);
        errorsByMessage[key] = (errorsByMessage[key] ?? 0) + 1;
      } finally {
        await c.end().catch(() => {});
      }
    }),
  );
  return { ok, failed, errorsByMessage, histogram, completionMs: performance.now() - t0 };
}

const ms = (us) => (us == null ? '—' : (us / 1000).toFixed(1));
