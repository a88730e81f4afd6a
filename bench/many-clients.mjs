#!/usr/bin/env node
// Owns the many-clients benchmark: 10 000 idle logged-in clients on Sluice (and PgBouncer when
// installed), the proxy's RSS and one active client's `select 1` latency meanwhile, and a
// 1 000-client connection storm. Standalone: `npm run build && node bench/many-clients.mjs
// [--clients N] [--storm N] [--queries N] [--settle SECONDS]`. Prints Markdown.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = path.join(ROOT, 'dist', 'cli.js');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const CLIENTS = opt('clients', 10_000);
const STORM = opt('storm', 1_000);
const QUERIES = opt('queries', 2_000);
const BATCH = 200;
const SETTLE_MS = opt('settle', 20) * 1000;

const out = (line = '') => process.stdout.write(`${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function fdLimit(pid) {
  const m = /Max open files\s+(\d+)\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return m ? { soft: Number(m[1]), hard: Number(m[2]) } : undefined;
}

const mb = (b) => (b / 1048576).toFixed(1);

function startupMessage(params) {
  const body = Buffer.concat([
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

/** A raw client that logs in (trust) and then stays idle; resolves its socket after ReadyForQuery. */
function idleClient(port, user, database) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('login timeout'));
    }, 60_000);
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => socket.write(startupMessage({ user, database })));
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let pos = 0;
      while (pos + 5 <= buf.length) {
        const len = buf.readInt32BE(pos + 1);
        if (pos + 1 + len > buf.length) break;
        if (buf[pos] === 0x45) {
          clearTimeout(timer);
          socket.destroy();
          reject(
            new Error(`ErrorResponse: ${buf.toString('utf8', pos + 5, pos + 1 + len).replaceAll('\0', ' ')}`),
          );
          return;
        }
        if (buf[pos] === 0x5a) {
          clearTimeout(timer);
          socket.off('data', onData);
          // Idle from here on: nothing read, nothing kept.
          socket.on('data', () => {});
          resolve(socket);
          return;
        }
        pos += 1 + len;
      }
      buf = buf.subarray(pos);
    };
    socket.on('data', onData);
  });
}

async function openIdle(port, user, database, n) {
  const sockets = [];
  const errors = [];
  for (let i = 0; i < n; i += BATCH) {
    const batch = await Promise.allSettled(
      Array.from({ length: Math.min(BATCH, n - i) }, () => idleClient(port, user, database)),
    );
    for (const r of batch) {
      if (r.status === 'fulfilled') sockets.push(r.value);
      else if (errors.length < 5) errors.push(r.reason.message);
      else errors.push('');
    }
  }
  return { sockets, errors };
}

async function latency(port, user, database, n) {
  const c = new pg.Client({ host: '127.0.0.1', port, user, database });
  await c.connect();
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await c.query('select 1');
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  await c.end();
  times.sort((a, b) => a - b);
  const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
  return { p50: q(0.5), p99: q(0.99) };
}

async function storm(port, user, database, n) {
  const started = Date.now();
  const results = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({ host: '127.0.0.1', port, user, database, connectionTimeoutMillis: 60_000 });
      c.on('error', () => {});
      await c.connect();
      try {
        const r = await c.query('select 1 as one');
        if (r.rows[0].one !== 1) throw new Error('wrong answer');
      } finally {
        await c.end();
      }
    }),
  );
  const failed = results.filter((r) => r.status === 'rejected');
  return {
    ms: Date.now() - started,
    ok: n - failed.length,
    failed: failed.length,
    firstErrors: [...new Set(failed.map((r) => r.reason.message))].slice(0, 3),
  };
}

async function measure(name, target) {
  const { port, pid, user, database } = target;
  const base = rssBytes(pid);
  const idleLatency = await latency(port, user, database, QUERIES);
  const afterWarm = rssBytes(pid);
  const t = Date.now();
  const { sockets, errors } = await openIdle(port, user, database, CLIENTS);
  const openMs = Date.now() - t;
  await sleep(2000);
  const loaded = rssBytes(pid);
  // V8 gives back the garbage of the login burst once the process has been quiet for a while
  // (its memory reducer): an idle proxy's own figure is the one after that.
  await sleep(SETTLE_MS - 2000);
  const settled = rssBytes(pid);
  const busyLatency = await latency(port, user, database, QUERIES);
  const loadedAfter = rssBytes(pid);
  for (const s of sockets) s.destroy();
  await sleep(2000);
  const stormResult = await storm(port, user, database, STORM);
  return {
    name,
    base,
    afterWarm,
    loaded,
    settled,
    loadedAfter,
    perClient: (settled - afterWarm) / Math.max(1, sockets.length),
    logged: sockets.length,
    errors,
    openMs,
    idleLatency,
    busyLatency,
    storm: stormResult,
    fds: fdLimit(pid),
  };
}

async function spawnSluice(upstream) {
  // The V8 flags the `sluice` command's shebang gives node (src/node-startup-flags.ts).
  const { NODE_STARTUP_FLAGS } = await import(
    pathToFileURL(path.join(ROOT, 'dist/node-startup-flags.js')).href
  );
  // Raise the soft descriptor limit for the child to the hard limit (clients + pool + spare).
  const child = spawn(
    'sh',
    [
      '-c',
      'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"',
      process.execPath,
      ...NODE_STARTUP_FLAGS,
      CLI,
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--upstream',
      upstream,
      '--auth',
      'trust',
      '--pool-size',
      '20',
      '--max-client-conn',
      String(CLIENTS + STORM + 100),
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let text = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sluice did not start: ${text}`)), 30_000);
    child.stdout.on('data', (d) => {
      text += d;
      const m = /@127\.0\.0\.1:(\d+)\//.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`sluice exited ${code}: ${text}`)));
  });
  const exited = new Promise((r) => child.once('exit', r));
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

function report(r) {
  out(`### ${r.name}`);
  out();
  out(`| figure | value |`);
  out(`|---|---|`);
  out(
    `| idle clients logged in | ${r.logged} of ${CLIENTS} (${r.errors.length} failed${r.errors.length ? `: ${r.errors.filter(Boolean).join('; ')}` : ''}) in ${(r.openMs / 1000).toFixed(1)} s |`,
  );
  out(`| RSS at start / after warm-up | ${mb(r.base)} MB / ${mb(r.afterWarm)} MB |`);
  out(`| RSS with ${r.logged} idle clients, 2 s after the last login | ${mb(r.loaded)} MB |`);
  out(`| RSS with ${r.logged} idle clients, after ${SETTLE_MS / 1000} s idle | **${mb(r.settled)} MB** |`);
  out(
    `| RSS with ${r.logged} idle clients, after the active client's ${QUERIES} queries | ${mb(r.loadedAfter)} MB |`,
  );
  out(
    `| RSS per idle client (after ${SETTLE_MS / 1000} s idle, less the warmed-up figure) | ${(r.perClient / 1024).toFixed(2)} KB |`,
  );
  out(
    `| active client select 1, no idle clients: p50 / p99 | ${r.idleLatency.p50.toFixed(3)} / ${r.idleLatency.p99.toFixed(3)} ms |`,
  );
  out(
    `| active client select 1, ${r.logged} idle clients: p50 / p99 | ${r.busyLatency.p50.toFixed(3)} / ${r.busyLatency.p99.toFixed(3)} ms |`,
  );
  out(
    `| storm: ${STORM} clients connect + select 1 at once | ${r.storm.ok} ok, ${r.storm.failed} failed, ${(r.storm.ms / 1000).toFixed(1)} s${r.storm.firstErrors.length ? ` (${r.storm.firstErrors.join('; ')})` : ''} |`,
  );
  out(`| open files limit (soft/hard) | ${r.fds ? `${r.fds.soft}/${r.fds.hard}` : '?'} |`);
  out();
}

async function main() {
  if (!existsSync(CLI)) throw new Error('dist/cli.js not found: run `npm run build` first');
  const { startEmbeddedPostgres } = await import(
    pathToFileURL(path.join(ROOT, 'dist/embedded/embedded-postgres.js')).href
  );
  const pgServer = await startEmbeddedPostgres({ fast: true, maxConnections: 300 });
  const user = pgServer.user;
  const database = 'postgres';
  const stops = [() => pgServer.stop()];
  const cleanup = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
  };
  process.once('SIGINT', () => cleanup().then(() => process.exit(130)));
  try {
    out(`## Many clients (${new Date().toISOString()})`);
    out();
    out(
      `${CLIENTS} idle clients, ${QUERIES} sequential \`select 1\` by one active client, a ${STORM}-client storm; ` +
        `bench process open files limit ${fdLimit(process.pid)?.soft}. Machine: shared, ${(await import('node:os')).cpus().length} cores.`,
    );
    out();
    const sluice = await spawnSluice(pgServer.url);
    stops.push(() => sluice.stop());
    report(await measure('Sluice', { port: sluice.port, pid: sluice.pid, user, database }));
    await sluice.stop();
    stops.pop();
    let bouncer;
    try {
      const lib = await import('./lib/pgbouncer.mjs');
      if (await lib.pgbouncerVersion()) {
        bouncer = await lib.startPgbouncer(pgServer, { poolSize: 20, maxClientConn: CLIENTS + STORM + 100 });
        stops.push(() => bouncer.stop());
        report(
          await measure(await lib.pgbouncerVersion(), {
            port: bouncer.port,
            pid: bouncer.pid,
            user,
            database,
          }),
        );
      } else {
        out('PgBouncer is not installed: no comparison.');
      }
    } catch (err) {
      out(`PgBouncer comparison skipped: ${err.message}`);
    }
  } finally {
    await cleanup();
  }
}

await main();
