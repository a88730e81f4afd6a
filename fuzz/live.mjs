// Owns the live half of the fuzzer: Sluice run as a child process (`node dist/cli.js serve`) so a
// crash is observable, hostile sessions over real sockets (mutated startup packets, auth
// exchanges and post-login message streams), a canary client querying throughout, and RSS samples.
import { spawn } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { authSeeds, FUZZ_TABLE, MARKER, startupSeeds, streamSeeds } from './corpus.mjs';
import { makeRng, mutateBytes, mutateFrames, randomChunks } from './mutate.mjs';

const REPO = path.join(path.dirname(new URL(import.meta.url).pathname), '..');
const CLI = path.join(REPO, 'dist', 'cli.js');
const SSL_CODE = 80877103;
const GSS_CODE = 80877104;
const CANCEL_CODE = 80877102;

// ---- Sluice child ---------------------------------------------------------------------------

/** Children still running, so an interrupted run can stop them. */
export const runningSluices = new Set();

/** Spawns `node dist/cli.js serve` with a config file; resolves once it prints its address. */
export async function spawnSluice({ upstream, auth, user, password, extra = {} }) {
  const dir = await mkdtemp(path.join(tmpdir(), 'sluice-fuzz-'));
  const config = path.join(dir, 'sluice.json');
  // JSON is YAML: no quoting to get wrong.
  await writeFile(
    config,
    JSON.stringify({
      listen: '127.0.0.1:0',
      upstream,
      auth,
      users: [{ name: user, password }],
      pool_size: 40,
      client_login_timeout: 5,
      max_message_bytes: 1 << 20,
      log_level: 'error',
      ...extra,
    }),
  );
  const child = spawn(process.execPath, [CLI, 'serve', '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SLUICE_LOG_LEVEL: 'error', NODE_OPTIONS: '--trace-warnings' },
  });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-20000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sluice did not start:\n${output}`)), 30_000);
    const onData = () => {
      const m = /postgres(?:ql)?:\/\/[^\s"]*@127\.0\.0\.1:(\d+)\//.exec(output);
      if (m) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`sluice exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  let exit;
  exited.then((e) => {
    exit = e;
  });
  const handle = {
    auth,
    port,
    pid: child.pid,
    get exit() {
      return exit;
    },
    get output() {
      return output;
    },
    rssBytes() {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        return m ? Number(m[1]) * 1024 : 0;
      } catch {
        return 0;
      }
    },
    async stop() {
      if (exit === undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      runningSluices.delete(handle);
      await rm(dir, { recursive: true, force: true });
    },
  };
  runningSluices.add(handle);
  return handle;
}

// ---- a raw client ---------------------------------------------------------------------------

/** A raw connection that reads whole backend messages; 'N'/'S' single bytes are SSL answers. */
class RawClient {
  constructor(socket) {
    this.socket = socket;
    this.received = [];
    this.receivedBytes = 0;
    this.buffer = Buffer.alloc(0);
    /** Whether message() is still in use: after login, bytes are only kept, not parsed. */
    this.framing = true;
    this.closedByPeer = false;
    this.closed = false;
    this.lastActivity = Date.now();
    this.waiter = undefined;
    socket.on('data', (chunk) => {
      this.received.push(chunk);
      this.receivedBytes += chunk.length;
      if (this.framing) this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.lastActivity = Date.now();
      this.waiter?.();
    });
    socket.on('end', () => {
      if (!this.closed) this.closedByPeer = true;
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  static open(port) {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  write(bytes) {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** The next whole backend message, or undefined when the peer closed or `ms` passed. */
  async message(ms = 3000) {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.buffer.length >= 5) {
        const length = this.buffer.readInt32BE(1);
        if (this.buffer.length >= 1 + length) {
          const msg = { type: this.buffer[0], body: this.buffer.subarray(5, 1 + length) };
          this.buffer = this.buffer.subarray(1 + length);
          return msg;
        }
      }
      if (this.closed || Date.now() >= deadline) return undefined;
      await this.wait(deadline - Date.now());
    }
  }

  wait(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.waiter = () => {
        this.waiter = undefined;
        done();
      };
    });
  }

  /** Waits until the peer closes, or `done()`, or nothing arrives for `quietMs`, or `maxMs` pass. */
  async settle(quietMs, maxMs, done = () => false) {
    const deadline = Date.now() + maxMs;
    while (!this.closed && Date.now() < deadline && !done()) {
      const quietLeft = this.lastActivity + quietMs - Date.now();
      if (quietLeft <= 0) break;
      await this.wait(Math.min(quietLeft, deadline - Date.now()));
    }
  }

  destroy() {
    this.closed = true;
    this.socket.destroy();
  }

  allReceived() {
    return Buffer.concat(this.received);
  }
}

/** Whether a backend byte stream holds an ErrorResponse (single-byte SSL answers skipped). */
export function hasErrorResponse(bytes) {
  let pos = 0;
  while (pos < bytes.length) {
    if (pos + 5 > bytes.length) return false;
    const type = bytes[pos];
    const length = bytes.readInt32BE(pos + 1);
    if (length < 4 || pos + 1 + length > bytes.length) {
      // An 'N'/'S' answer to SSLRequest/GSSENCRequest is one byte with no length.
      if (type === 0x4e || type === 0x53) {
        pos++;
        continue;
      }
      return false;
    }
    if (type === 0x45 && bytes.indexOf('SFATAL', pos + 5) !== -1) return true;
    if (type === 0x45) return true;
    pos += 1 + length;
  }
  return false;
}

/**
 * Where the protocol lets the server close without an ErrorResponse, given what the client sent
 * (`typedFrom`: where typed frames start; -1 while still in the startup phase): after a
 * CancelRequest (no reply is defined) and after a Terminate.
 */
export function closeWithoutErrorAllowed(sent, typedFrom) {
  let pos = 0;
  if (typedFrom < 0) {
    for (;;) {
      if (pos + 8 > sent.length) return false;
      const length = sent.readInt32BE(pos);
      const code = sent.readInt32BE(pos + 4);
      if (length === 16 && code === CANCEL_CODE) return true;
      if (length === 8 && (code === SSL_CODE || code === GSS_CODE)) {
        pos += 8;
        continue;
      }
      if (length < 8 || length > 10000 || pos + length > sent.length) return false;
      pos += length;
      break;
    }
  } else {
    pos = typedFrom;
  }
  while (pos + 5 <= sent.length) {
    const type = sent[pos];
    const length = sent.readInt32BE(pos + 1);
    if (length < 4) return false;
    if (type === 0x58) return true;
    pos += 1 + length;
  }
  return false;
}

// ---- logging in properly ----------------------------------------------------------------------

const keyCache = new Map();

function scramKeys(password, salt, iterations) {
  const k = `${salt}:${iterations}`;
  let keys = keyCache.get(k);
  if (!keys) {
    const salted = pbkdf2Sync(password, Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
    keys = {
      clientKey: createHmac('sha256', salted).update('Client Key').digest(),
    };
    keyCache.set(k, keys);
  }
  return keys;
}

function authFrame(body) {
  const out = Buffer.alloc(5 + body.length);
  out[0] = 0x70;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function saslInitial(mechanism, data) {
  const mech = Buffer.from(`${mechanism}\0`);
  const len = Buffer.alloc(4);
  len.writeInt32BE(data.length);
  return authFrame(Buffer.concat([mech, len, data]));
}

/**
 * Logs in properly; `mutateAuth(frame)` may corrupt the auth replies. Returns 'ready' after
 * ReadyForQuery, 'error' after an ErrorResponse, 'closed' or 'timeout'.
 */
async function login(client, { user, password, database }, mutateAuth = (f) => f) {
  client.write(startupFrame({ user, database, application_name: 'sluice-fuzz' }));
  let clientFirstBare = '';
  let nonce = '';
  for (;;) {
    const msg = await client.message();
    if (!msg) return client.closed ? 'closed' : 'timeout';
    if (msg.type === 0x45) return 'error';
    if (msg.type === 0x5a) return 'ready';
    if (msg.type !== 0x52) continue;
    const code = msg.body.readInt32BE(0);
    if (code === 5) {
      const salt = msg.body.subarray(4, 8);
      const inner = createHash('md5')
        .update(password + user)
        .digest('hex');
      const outer = createHash('md5').update(inner).update(salt).digest('hex');
      client.write(mutateAuth(authFrame(Buffer.from(`md5${outer}\0`))));
    } else if (code === 10) {
      nonce = randomBytes(18).toString('base64');
      clientFirstBare = `n=*,r=${nonce}`;
      client.write(mutateAuth(saslInitial('SCRAM-SHA-256', Buffer.from(`n,,${clientFirstBare}`))));
    } else if (code === 11) {
      const serverFirst = msg.body.toString('utf8', 4);
      const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
      const { clientKey } = scramKeys(password, attrs.s, Number(attrs.i));
      const withoutProof = `c=biws,r=${attrs.r}`;
      const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
      const storedKey = createHash('sha256').update(clientKey).digest();
      const signature = createHmac('sha256', storedKey).update(authMessage).digest();
      const proof = Buffer.alloc(32);
      for (let i = 0; i < 32; i++) proof[i] = clientKey[i] ^ signature[i];
      client.write(mutateAuth(authFrame(Buffer.from(`${withoutProof},p=${proof.toString('base64')}`))));
    }
  }
}

function startupFrame(params) {
  const body = Buffer.concat([
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

/** Frames a server parses in `bytes` before a bad length stops it (the bad one counts). */
function countFrames(bytes) {
  let pos = 0;
  let n = 0;
  while (pos + 5 <= bytes.length) {
    n++;
    const length = bytes.readInt32BE(pos + 1);
    if (length < 4) break;
    pos += 1 + length;
  }
  return n;
}

const MARKER_QUERY = (() => {
  const text = Buffer.from(`select '${MARKER}'\0`);
  const out = Buffer.alloc(5 + text.length);
  out[0] = 0x51;
  out.writeInt32BE(4 + text.length, 1);
  text.copy(out, 5);
  return out;
})();

// ---- one hostile session ----------------------------------------------------------------------

/**
 * Runs one session against `sluice`; returns { frames, finding? }. A finding is a closed
 * connection without an ErrorResponse where the protocol requires one.
 */
async function runSession(rng, sluice, creds, seeds) {
  const client = await RawClient.open(sluice.port);
  const kind = rng.int(10);
  let sent = Buffer.alloc(0);
  let typedFrom = -1;
  let frames = 0;
  let phase;
  let markerDone;
  let rejected = false;
  try {
    if (kind < 2) {
      // Startup phase: mutated startup packets, sometimes followed by auth replies.
      phase = 'startup';
      const parts = [...rng.pick(seeds.startups), ...(rng.chance(0.5) ? rng.pick(seeds.auths) : [])];
      sent = rng.chance(0.9) ? mutateBytes(rng, Buffer.concat(parts)) : Buffer.concat(parts);
      frames = parts.length;
      for (const chunk of randomChunks(rng, sent)) client.write(chunk);
    } else if (kind < 4) {
      // Auth exchange: a proper startup, then corrupted SCRAM or md5 replies.
      phase = 'auth';
      const outcome = await login(client, creds, (frame) =>
        rng.chance(0.6) ? mutateBytes(rng, frame) : frame,
      );
      frames = 3;
      if (outcome === 'ready') return { frames };
      // What we sent is not tracked byte-for-byte here: an auth failure must always be an error.
      sent = Buffer.from('auth');
      typedFrom = sent.length;
    } else {
      phase = 'stream';
      const outcome = await login(client, creds);
      if (outcome !== 'ready') {
        return { frames: 0, finding: { phase: 'login', detail: `proper login ended with ${outcome}` } };
      }
      const scripts = [];
      const n = 1 + rng.int(30);
      for (let i = 0; i < n; i++) scripts.push(...mutateFrames(rng, rng.pick(seeds.streams), seeds.donors));
      const clean = Buffer.concat(scripts);
      sent = rng.chance(0.85) ? mutateBytes(rng, clean) : clean;
      typedFrom = 0;
      frames = countFrames(sent);
      for (const chunk of randomChunks(rng, sent)) client.write(chunk);
      // Answered only when the stream ended on a frame boundary outside COPY; otherwise the
      // quiet timeout ends the session.
      client.write(MARKER_QUERY);
      client.framing = false;
      markerDone = () => {
        const { received } = client;
        const chunk = received.at(-1);
        if (chunk === undefined || chunk.length < 6 || chunk[chunk.length - 6] !== 0x5a) return false;
        // The marker's DataRow and its ReadyForQuery arrive together, or in the chunk before.
        return chunk.includes(MARKER) || (received.length > 1 && received.at(-2).includes(MARKER));
      };
    }
    await client.settle(150, 3000, markerDone);
    if (client.closedByPeer) {
      rejected = true;
      const received = client.allReceived();
      if (!hasErrorResponse(received) && !closeWithoutErrorAllowed(sent, typedFrom)) {
        return {
          frames,
          rejected,
          finding: {
            phase,
            detail: 'server closed without an ErrorResponse',
            sent: sent.toString('hex').slice(0, 2000),
            received: received.toString('hex').slice(0, 2000),
          },
        };
      }
    }
    return { frames, rejected };
  } finally {
    client.destroy();
  }
}

// ---- canary -------------------------------------------------------------------------------------

/** A well-behaved pg client querying through Sluice all along; counts failures and dirty servers. */
function startCanary(sluice, creds) {
  const stats = { queries: 0, failures: 0, dirty: 0, errors: [] };
  let stopped = false;
  let client;
  let timeZone;
  const loop = (async () => {
    while (!stopped) {
      try {
        if (!client) {
          client = new pg.Client({
            host: '127.0.0.1',
            port: sluice.port,
            user: creds.user,
            password: creds.password,
            database: creds.database,
            query_timeout: 10_000,
          });
          client.on('error', () => {});
          await client.connect();
        }
        // A server returned with an open transaction answers now() from its start, not ours;
        // one returned with a fuzz client's SET TimeZone shows another zone.
        const r = await client.query(
          `select now() = statement_timestamp() as fresh, current_setting('TimeZone') as tz, count(*)::int as n from ${FUZZ_TABLE}`,
        );
        const row = r.rows[0];
        if (row === undefined) {
          // One row always: none means another request's answer reached this client.
          throw new Error(
            `canary answered without its row: command ${r.command}, ${r.rowCount} rows, fields ${r.fields.map((f) => f.name).join(',') || 'none'}`,
          );
        }
        timeZone ??= row.tz;
        if (!row.fresh || row.tz !== timeZone) {
          stats.dirty++;
          if (stats.errors.length < 10) stats.errors.push(`dirty server: fresh=${row.fresh} tz=${row.tz}`);
        }
        stats.queries++;
      } catch (err) {
        stats.failures++;
        if (stats.errors.length < 10) stats.errors.push(`${new Date().toISOString()} ${err.message}`);
        await client?.end().catch(() => {});
        client = undefined;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await client?.end().catch(() => {});
  })();
  return {
    stats,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

// ---- the run --------------------------------------------------------------------------------------

/** Creates the fuzz database and table straight on PostgreSQL (idempotent). */
export async function prepareDatabase(upstream, database) {
  const admin = new pg.Client({ connectionString: upstream });
  await admin.connect();
  try {
    const exists = await admin.query('select 1 from pg_database where datname = $1', [database]);
    if (exists.rowCount === 0) await admin.query(`create database ${admin.escapeIdentifier(database)}`);
  } finally {
    await admin.end();
  }
  const url = new URL(upstream);
  url.pathname = `/${database}`;
  const c = new pg.Client({ connectionString: url.toString() });
  await c.connect();
  try {
    await c.query(`create table if not exists ${FUZZ_TABLE} (id serial primary key, note text)`);
    await c.query(`insert into ${FUZZ_TABLE} (note) select 'seed' from generate_series(1, 5)`);
  } finally {
    await c.end();
  }
}

/**
 * Fuzzes live Sluice children (one per auth method) until `frames` frames were delivered.
 * Returns the figures and findings; `onProgress` gets a line every few seconds.
 */
export async function fuzzLive({ upstream, database, frames, seed, concurrency = 24, onProgress }) {
  const url = new URL(upstream);
  const creds = {
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database,
  };
  await prepareDatabase(upstream, database);
  const sluices = [];
  for (const auth of ['scram-sha-256', 'md5']) {
    sluices.push(await spawnSluice({ upstream, auth, user: creds.user, password: creds.password }));
  }
  const canary = startCanary(sluices[0], creds);
  const seeds = {
    startups: startupSeeds(creds.user, database),
    auths: authSeeds(),
    streams: streamSeeds(),
  };
  seeds.donors = [...seeds.streams, ...seeds.auths];
  const rng = makeRng(seed);
  const findings = [];
  const started = Date.now();
  let delivered = 0;
  let sessions = 0;
  let rejected = 0;
  let maxRss = 0;
  const rssSamples = [];
  const sample = () => {
    const rss = sluices.map((s) => s.rssBytes());
    for (const r of rss) maxRss = Math.max(maxRss, r);
    rssSamples.push({ t: Date.now() - started, frames: delivered, rss });
  };
  sample();
  const sampler = setInterval(() => {
    sample();
    onProgress?.(
      `live: ${delivered} frames, ${sessions} sessions, ${Math.round(delivered / ((Date.now() - started) / 1000))} frames/s, ` +
        `rss ${rssSamples
          .at(-1)
          .rss.map((r) => Math.round(r / 1048576))
          .join('/')} MB, canary ${canary.stats.queries} ok ${canary.stats.failures} failed`,
    );
  }, 5000);
  const dead = () => sluices.find((s) => s.exit !== undefined);
  const worker = async () => {
    while (delivered < frames && !dead() && findings.length < 50) {
      const sluice = sluices[rng.int(sluices.length)];
      try {
        const result = await runSession(rng, sluice, creds, seeds);
        delivered += result.frames;
        sessions++;
        if (result.rejected) rejected++;
        // The time lets a finding be matched with the PostgreSQL log (a backend crash, a restart).
        if (result.finding)
          findings.push({ auth: sluice.auth, at: new Date().toISOString(), ...result.finding });
      } catch (err) {
        if (!dead())
          findings.push({
            auth: sluice.auth,
            at: new Date().toISOString(),
            phase: 'connect',
            detail: String(err.message),
          });
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    clearInterval(sampler);
  }
  sample();
  await canary.stop();
  // After the storm: every child still alive and still serving a fresh client.
  const crashes = [];
  for (const s of sluices) {
    if (s.exit !== undefined) {
      crashes.push({ auth: s.auth, exit: s.exit, output: s.output.slice(-4000) });
      continue;
    }
    const c = new pg.Client({ host: '127.0.0.1', port: s.port, ...creds });
    try {
      await c.connect();
      await c.query('select 1');
    } catch (err) {
      crashes.push({ auth: s.auth, exit: 'alive but not serving', output: String(err.message) });
    } finally {
      await c.end().catch(() => {});
    }
  }
  const seconds = (Date.now() - started) / 1000;
  // Node's own warnings from a child (say MaxListenersExceededWarning) hint at leaks: reported,
  // not failing the run (a known one is open: 'drain' listeners stacking under pipelined streams).
  const warnings = [];
  for (const s of sluices) {
    const at = s.output.indexOf('Warning:');
    if (at >= 0) warnings.push({ auth: s.auth, detail: s.output.slice(Math.max(0, at - 200), at + 1500) });
  }
  for (const s of sluices) await s.stop();
  return {
    frames: delivered,
    sessions,
    rejected,
    seconds,
    framesPerSecond: Math.round(delivered / seconds),
    crashes,
    maxRssBytes: maxRss,
    rss: rssSamples,
    canary: canary.stats,
    findings,
    warnings,
  };
}
