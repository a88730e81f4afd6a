// Hostile and broken clients at the byte level: garbage instead of a startup packet, bad lengths,
// unsupported protocol versions, SSL/GSSENC refusals, oversized and truncated frames, abrupt
// hang-ups, the client-connection limit and the login timeout. After each, a well-behaved
// node-postgres client must still get served, and no server connection may be left behind.
import type { Socket } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  firstError,
  rawConnect,
  readUntilClose,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

const SSL_REQUEST_CODE = 80877103;
const GSSENC_REQUEST_CODE = 80877104;
const CANCEL_REQUEST_CODE = 80877102;
const MAX_MESSAGE_BYTES = 65536;

let db: string;

beforeAll(async () => {
  db = await createTestDatabase('protocol_hostile');
  const c = await directClient(db);
  await c.query('create table notes (id int primary key, body text not null)');
  await c.end();
});

afterAll(async () => {
  await dropTestDatabase(db);
});

// ---- helpers ------------------------------------------------------------------------------------

interface Message {
  type: string;
  body: Buffer;
}

/** A raw connection that reads whole backend messages (or single bytes) on demand. */
class Wire {
  private buffer = Buffer.alloc(0);
  private isClosed = false;
  private wake: (() => void) | undefined;
  readonly closed: Promise<void>;
  /** False once rest() gave up waiting and closed the socket itself. */
  closedByPeer = true;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake?.();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  static async open(port: number): Promise<Wire> {
    return new Wire(await rawConnect(port));
  }

  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  private async waitFor(bytes: number, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.buffer.length < bytes) {
      if (this.isClosed) throw new Error(`connection closed with ${this.buffer.length}/${bytes} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${bytes} bytes (have ${this.buffer.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  async bytes(n: number, ms = 5000): Promise<Buffer> {
    await this.waitFor(n, ms);
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(n);
    return out;
  }

  async message(ms = 5000): Promise<Message> {
    await this.waitFor(5, ms);
    const length = this.buffer.readInt32BE(1);
    const frame = await this.bytes(1 + length, ms);
    return { type: String.fromCharCode(frame[0]!), body: frame.subarray(5) };
  }

  /** Reads messages up to and including the first of `type`. */
  async until(type: string, ms = 5000): Promise<Message[]> {
    const seen: Message[] = [];
    for (;;) {
      const m = await this.message(ms);
      seen.push(m);
      if (m.type === type) return seen;
    }
  }

  /** Everything left once the peer closes (bounded by `ms`). */
  async rest(ms = 5000): Promise<Buffer> {
    const timer = setTimeout(() => {
      this.closedByPeer = false;
      this.socket.destroy();
    }, ms);
    await this.closed;
    clearTimeout(timer);
    return this.buffer;
  }
}

function frame(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

function query(sql: string): Buffer {
  return frame('Q', Buffer.from(`${sql}\0`));
}

const TERMINATE = frame('X', Buffer.alloc(0));

function int32s(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  for (const [i, v] of values.entries()) b.writeInt32BE(v, 4 * i);
  return b;
}

function errorFields(m: Message): Record<string, string> {
  return firstError(frame(m.type, m.body)) ?? {};
}

function login(): Buffer {
  return startupMessage({ user: pgInfo().user, database: db });
}

/** Logs in (trust) and reads through the first ReadyForQuery. */
async function loggedIn(proxy: TestProxy): Promise<Wire> {
  const wire = await Wire.open(proxy.port);
  wire.send(login());
  const welcome = await wire.until('Z');
  expect(welcome[0]).toMatchObject({ type: 'R' });
  expect(welcome[0]!.body.readInt32BE(0)).toBe(0);
  return wire;
}

/** Runs a simple query on a raw connection; returns the messages through ReadyForQuery. */
async function rawQuery(wire: Wire, sql: string): Promise<Message[]> {
  wire.send(query(sql));
  return wire.until('Z');
}

function dataRowValues(messages: Message[]): string[] {
  const values: string[] = [];
  for (const m of messages) {
    if (m.type !== 'D') continue;
    const n = m.body.readInt16BE(0);
    let p = 2;
    for (let i = 0; i < n; i++) {
      const len = m.body.readInt32BE(p);
      p += 4;
      values.push(len < 0 ? 'NULL' : m.body.toString('utf8', p, p + len));
      p += Math.max(len, 0);
    }
  }
  return values;
}

/** Sends `bytes` on a fresh connection and returns all the proxy answers before it closes. */
async function answerTo(proxy: TestProxy, bytes: Buffer, halfClose = false): Promise<Buffer> {
  const socket = await rawConnect(proxy.port);
  const reply = readUntilClose(socket);
  socket.write(bytes);
  if (halfClose) socket.end();
  return reply;
}

async function expectServing(proxy: TestProxy): Promise<void> {
  const c = new pg.Client({ connectionString: proxy.url(db) });
  await c.connect();
  try {
    expect((await c.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
  } finally {
    await c.end();
  }
}

/** Polls `read` until `ok` holds or `ms` pass; returns the last value for the caller to assert. */
async function settle<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (ok(value) || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
}

function poolOf(proxy: TestProxy) {
  const user = pgInfo().user;
  return proxy.sluice.pools.stats().find((s) => s.database === db && s.user === user);
}

/** Backends of the test database other than the caller's, by state. */
async function backendsByState(): Promise<Record<string, number>> {
  const c = await directClient(db);
  try {
    const { rows } = await c.query<{ state: string | null; n: number }>(
      `select coalesce(state, 'null') as state, count(*)::int as n from pg_stat_activity
        where datname = $1 and pid <> pg_backend_pid() and backend_type = 'client backend' group by 1`,
      [db],
    );
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  } finally {
    await c.end();
  }
}

/**
 * No leak: nothing active or waiting in the pool, no client left in the proxy, and PostgreSQL
 * holds exactly the pool's idle servers for this database, none of them in a transaction.
 */
async function expectNoLeaks(proxy: TestProxy): Promise<void> {
  const stats = await settle(
    () => poolOf(proxy),
    (s) => s === undefined || (s.active === 0 && s.connecting === 0 && s.waiting === 0),
  );
  expect(stats).toMatchObject({ active: 0, connecting: 0, waiting: 0 });
  expect(
    await settle(
      () => proxy.sluice.proxy.clients,
      (n) => n === 0,
    ),
  ).toBe(0);
  const idle = poolOf(proxy)?.idle ?? 0;
  const states = await settle(backendsByState, (s) => sum(s) === idle && !s['idle in transaction']);
  expect(states['idle in transaction'] ?? 0).toBe(0);
  expect(states['idle in transaction (aborted)'] ?? 0).toBe(0);
  expect(sum(states)).toBe(idle);
}

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/** Small deterministic PRNG (mulberry32), so the fuzz inputs are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- before login ---------------------------------------------------------------------------------

describe('hostile input before login', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ pool_size: 5, max_message_bytes: MAX_MESSAGE_BYTES, client_login_timeout: 5 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('answers an HTTP request with FATAL 08P01 instead of a startup packet, and keeps serving', async () => {
    // 'GET ' read as a length is 1195725856, far over the 10000-byte startup packet limit.
    const reply = await answerTo(proxy, Buffer.from('GET / HTTP/1.1\r\nHost: sluice\r\n\r\n'));
    expect(firstError(reply)).toMatchObject({
      S: 'FATAL',
      C: '08P01',
      M: 'invalid length of startup packet',
    });
    await expectServing(proxy);
  });

  it('answers a TLS ClientHello sent without SSLRequest with FATAL 08P01', async () => {
    const hello = Buffer.from('16030100a5010000a10303', 'hex');
    expect(firstError(await answerTo(proxy, hello))).toMatchObject({ S: 'FATAL', C: '08P01' });
    await expectServing(proxy);
  });

  it('answers a typed message sent in place of the startup packet with FATAL 08P01', async () => {
    expect(firstError(await answerTo(proxy, query('select 1')))).toMatchObject({ S: 'FATAL', C: '08P01' });
    await expectServing(proxy);
  });

  it('closes without a reply when the client hangs up before sending a whole length word', async () => {
    const reply = await answerTo(proxy, Buffer.from([0, 0]), true);
    expect(reply.length).toBe(0);
    await expectServing(proxy);
  });

  it('survives seeded random byte strings, answering each with an ErrorResponse or a close', async () => {
    const random = prng(0x5111ce);
    const codes = new Map<string, number>();
    for (let i = 0; i < 100; i++) {
      const bytes = Buffer.alloc(1 + Math.floor(random() * 64));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
      const reply = await answerTo(proxy, bytes, true);
      const length = bytes.length >= 4 ? bytes.readInt32BE(0) : undefined;
      const error = firstError(reply);
      if (length === undefined) {
        // Not even a length: the client is gone, nothing to answer.
        expect(reply.length).toBe(0);
      } else if (length < 8 || length > 10_000) {
        expect(error).toMatchObject({ S: 'FATAL', C: '08P01', M: 'invalid length of startup packet' });
      } else if (length > bytes.length) {
        // A plausible length whose packet never completes: the half-close ends the login.
        expect(reply.length).toBe(0);
      } else {
        expect(error?.S).toBe('FATAL');
      }
      const key = error?.C ?? 'close';
      codes.set(key, (codes.get(key) ?? 0) + 1);
    }
    // The seed must exercise the interesting branch, not just short inputs.
    expect(codes.get('08P01') ?? 0).toBeGreaterThan(50);
    expect(
      await settle(
        () => proxy.sluice.proxy.clients,
        (n) => n === 0,
      ),
    ).toBe(0);
    await expectServing(proxy);
  });

  it.each([
    ['0', 0],
    ['4 (the length word alone)', 4],
    ['7', 7],
    ['-1', -1],
    ['10001', 10_001],
    ['2^31-1', 0x7fffffff],
  ])('refuses a startup packet length of %s with FATAL 08P01', async (_label, length) => {
    const packet = Buffer.concat([int32s(length, 196608), Buffer.from('user\0x\0\0')]);
    expect(firstError(await answerTo(proxy, packet))).toMatchObject({
      S: 'FATAL',
      C: '08P01',
      M: 'invalid length of startup packet',
    });
    await expectServing(proxy);
  });

  it('refuses an 8-byte startup packet (no terminator) with FATAL 08P01', async () => {
    expect(firstError(await answerTo(proxy, int32s(8, 196608)))).toMatchObject({ S: 'FATAL', C: '08P01' });
    await expectServing(proxy);
  });

  it('accepts a StartupMessage of exactly 10000 bytes', async () => {
    const base = startupMessage({ user: pgInfo().user, database: db, application_name: '' });
    const packet = startupMessage({
      user: pgInfo().user,
      database: db,
      application_name: 'a'.repeat(10_000 - base.length),
    });
    expect(packet.length).toBe(10_000);
    const wire = await Wire.open(proxy.port);
    wire.send(packet);
    await wire.until('Z');
    expect(dataRowValues(await rawQuery(wire, 'select 1'))).toEqual(['1']);
    wire.send(TERMINATE);
    await wire.rest();
  });

  it('refuses a CancelRequest of the wrong length with FATAL 08P01', async () => {
    const packet = int32s(12, CANCEL_REQUEST_CODE, 42);
    expect(firstError(await answerTo(proxy, packet))).toMatchObject({
      S: 'FATAL',
      C: '08P01',
      M: 'invalid length of cancel request',
    });
    await expectServing(proxy);
  });

  it('closes a CancelRequest for an unknown key without a reply, as PostgreSQL does', async () => {
    const reply = await answerTo(proxy, int32s(16, CANCEL_REQUEST_CODE, 12345, 67890));
    expect(reply.length).toBe(0);
    await expectServing(proxy);
  });

  it.each([
    ['2.0', 2 << 16],
    ['1.0', 1 << 16],
    ['4.0', 4 << 16],
  ])('refuses protocol %s with FATAL 0A000', async (label, version) => {
    const reply = await answerTo(proxy, startupMessage({ user: pgInfo().user, database: db }, version));
    const error = firstError(reply);
    expect(error).toMatchObject({ S: 'FATAL', C: '0A000' });
    expect(error?.M).toContain(`unsupported frontend protocol ${label}`);
    await expectServing(proxy);
  });

  it('answers protocol 3.1 with NegotiateProtocolVersion for 3.0, then logs in', async () => {
    const wire = await Wire.open(proxy.port);
    wire.send(startupMessage({ user: pgInfo().user, database: db }, (3 << 16) | 1));
    const negotiate = await wire.message();
    expect(negotiate.type).toBe('v');
    expect(negotiate.body.readInt32BE(0)).toBe(0);
    expect(negotiate.body.readInt32BE(4)).toBe(0);
    const welcome = await wire.until('Z');
    expect(welcome[0]?.type).toBe('R');
    expect(welcome.some((m) => m.type === 'K')).toBe(true);
    expect(dataRowValues(await rawQuery(wire, 'select 31'))).toEqual(['31']);
    wire.send(TERMINATE);
    await wire.rest();
  });

  it('reports an unknown _pq_ protocol option in NegotiateProtocolVersion, then logs in', async () => {
    const wire = await Wire.open(proxy.port);
    wire.send(startupMessage({ user: pgInfo().user, database: db, '_pq_.foo': 'on' }));
    const negotiate = await wire.message();
    expect(negotiate.type).toBe('v');
    expect(negotiate.body.readInt32BE(0)).toBe(0);
    expect(negotiate.body.readInt32BE(4)).toBe(1);
    expect(negotiate.body.toString('utf8', 8)).toBe('_pq_.foo\0');
    await wire.until('Z');
    expect(dataRowValues(await rawQuery(wire, "select 'pq'"))).toEqual(['pq']);
    wire.send(TERMINATE);
    await wire.rest();
  });

  it('answers SSLRequest with a single N and then logs in on the same socket', async () => {
    const wire = await Wire.open(proxy.port);
    wire.send(int32s(8, SSL_REQUEST_CODE));
    expect((await wire.bytes(1)).toString()).toBe('N');
    wire.send(login());
    const welcome = await wire.until('Z');
    expect(welcome[0]?.type).toBe('R');
    expect(dataRowValues(await rawQuery(wire, "select 'plain'"))).toEqual(['plain']);
    wire.send(TERMINATE);
    await wire.rest();
  });

  it('takes a GSSENCRequest then an SSLRequest (as libpq sends them) but refuses a second SSLRequest', async () => {
    const wire = await Wire.open(proxy.port);
    wire.send(int32s(8, GSSENC_REQUEST_CODE));
    expect((await wire.bytes(1)).toString()).toBe('N');
    wire.send(int32s(8, SSL_REQUEST_CODE));
    expect((await wire.bytes(1)).toString()).toBe('N');
    wire.send(int32s(8, SSL_REQUEST_CODE));
    expect(firstError(await wire.rest())).toMatchObject({ S: 'FATAL', C: '0A000' });
    await expectServing(proxy);
  });

  it('answers GSSENCRequest with a single N and then logs in on the same socket', async () => {
    const wire = await Wire.open(proxy.port);
    wire.send(int32s(8, GSSENC_REQUEST_CODE));
    expect((await wire.bytes(1)).toString()).toBe('N');
    wire.send(login());
    await wire.until('Z');
    expect(dataRowValues(await rawQuery(wire, "select 'gss'"))).toEqual(['gss']);
    wire.send(TERMINATE);
    await wire.rest();
  });

  it('refuses a StartupMessage without a user with FATAL 28000', async () => {
    const reply = await answerTo(proxy, startupMessage({ database: db }));
    expect(firstError(reply)).toMatchObject({
      S: 'FATAL',
      C: '28000',
      M: 'no PostgreSQL user name specified in startup packet',
    });
    await expectServing(proxy);
  });
});

// ---- after login ------------------------------------------------------------------------------------

describe('hostile input after login', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({
      pool_mode: 'transaction',
      pool_size: 5,
      max_message_bytes: MAX_MESSAGE_BYTES,
    });
    await expectServing(proxy);
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('answers a message announcing length 2 with FATAL 08P01 and closes', async () => {
    const wire = await loggedIn(proxy);
    wire.send(Buffer.from([0x51, 0, 0, 0, 2]));
    const error = firstError(await wire.rest());
    expect(error).toMatchObject({ S: 'FATAL', C: '08P01', M: 'invalid message length 2' });
    await expectNoLeaks(proxy);
    await expectServing(proxy);
  });

  it('answers a Query over max_message_bytes with FATAL 08P01 naming the limit, and drops the server it held', async () => {
    const wire = await loggedIn(proxy);
    await rawQuery(wire, 'begin');
    expect(dataRowValues(await rawQuery(wire, 'select 1'))).toEqual(['1']);
    // The client holds a server inside a transaction: PostgreSQL sees it idle in transaction.
    expect((await backendsByState())['idle in transaction']).toBe(1);
    const sql = `select '${'x'.repeat(100 * 1024)}'`;
    wire.send(query(sql));
    const error = firstError(await wire.rest());
    expect(error).toMatchObject({ S: 'FATAL', C: '08P01', M: `invalid message length ${sql.length + 5}` });
    expect(error?.H).toContain('max_message_bytes');
    expect(error?.D).toContain(String(sql.length + 5));
    await expectNoLeaks(proxy);
    await expectServing(proxy);
  });

  it('accepts a Query just under max_message_bytes', async () => {
    const wire = await loggedIn(proxy);
    const payload = 'y'.repeat(MAX_MESSAGE_BYTES - 64);
    const values = dataRowValues(await rawQuery(wire, `select length('${payload}')`));
    expect(values).toEqual([String(payload.length)]);
    wire.send(TERMINATE);
    await wire.rest();
    await expectNoLeaks(proxy);
  });

  it('answers a Query sent in the same write as the StartupMessage', async () => {
    const wire = await Wire.open(proxy.port);
    wire.send(login(), query("select 'pipelined'"));
    await wire.until('Z');
    expect(dataRowValues(await wire.until('Z'))).toEqual(['pipelined']);
    wire.send(TERMINATE);
    await wire.rest();
  });

  // BUG (src/server/client-session.ts onBadLength): FrameReader.read() first calls onChunkEnd(buf,
  // pos), which forwards [runStart, pos) and resets runStart to 0, then onBadLength(buf, pos),
  // whose forwardRun(buf, start) forwards [0, pos) again. Every frame before the bad header in the
  // same chunk reaches PostgreSQL twice. Drop `.fails` once fixed.
  it('forwards the frames before a bad length once, not twice', async () => {
    const c = await directClient(db);
    await c.query('create sequence twice');
    await c.end();
    const attempts = 3;
    for (let i = 0; i < attempts; i++) {
      const wire = await loggedIn(proxy);
      // Inside a transaction the client owns a server, so runs go straight to it.
      await rawQuery(wire, 'begin');
      wire.send(query("select nextval('twice')"), Buffer.from([0x51, 0, 0, 0, 2]));
      expect(firstError(await wire.rest())).toMatchObject({ C: '08P01' });
    }
    await expectNoLeaks(proxy);
    // nextval is not transactional: PostgreSQL counts every call that ran.
    const d = await directClient(db);
    const { rows } = await d.query<{ n: string }>('select last_value as n from twice');
    await d.end();
    expect(Number(rows[0]!.n)).toBeLessThanOrEqual(attempts);
  });

  it('drops the server of a client that hangs up halfway through a frame', async () => {
    const wire = await loggedIn(proxy);
    await rawQuery(wire, 'select 1');
    // Announce a 1000-byte Execute, send 20 bytes of it, then vanish. (A Query would be held
    // back whole, since Sluice reads query text; Execute is forwarded as it arrives.)
    const head = Buffer.alloc(5);
    head[0] = 0x45;
    head.writeInt32BE(1000, 1);
    wire.send(head, Buffer.from('portal-name-that-is-'));
    // Give the proxy the partial frame (it forwards it to a server) before the hang-up.
    expect(
      await settle(
        () => poolOf(proxy)?.active ?? 0,
        (n) => n === 1,
      ),
    ).toBe(1);
    wire.socket.destroy();
    await expectNoLeaks(proxy);
    await expectServing(proxy);
  });

  it('runs the Query sent before Terminate, answers it and closes', async () => {
    const wire = await loggedIn(proxy);
    wire.send(query("insert into notes values (1, 'before terminate')"), TERMINATE);
    const rest = await wire.rest();
    expect(rest.includes(Buffer.from('INSERT 0 1\0'))).toBe(true);
    expect(firstError(rest)).toBeUndefined();
    const c = await directClient(db);
    const { rows } = await c.query('select body from notes where id = 1');
    await c.end();
    expect(rows).toEqual([{ body: 'before terminate' }]);
    await expectNoLeaks(proxy);
    await expectServing(proxy);
  });

  it('rolls back an open transaction when the client sends Terminate inside it', async () => {
    const wire = await loggedIn(proxy);
    await rawQuery(wire, 'begin');
    await rawQuery(wire, "insert into notes values (2, 'never committed')");
    wire.send(TERMINATE);
    expect((await wire.rest()).length).toBe(0);
    await expectNoLeaks(proxy);
    const c = await directClient(db);
    const { rows } = await c.query('select count(*)::int as n from notes where id = 2');
    await c.end();
    expect(rows).toEqual([{ n: 0 }]);
    await expectServing(proxy);
  });

  it('drops the server when Terminate arrives between Parse/Bind and Sync', async () => {
    const wire = await loggedIn(proxy);
    const parse = frame('P', Buffer.concat([Buffer.from('\0select 1\0'), Buffer.from([0, 0])]));
    const bind = frame('B', Buffer.alloc(8));
    wire.send(parse, bind, TERMINATE);
    await wire.rest();
    await expectNoLeaks(proxy);
    await expectServing(proxy);
  });

  it('survives 200 clients hanging up abruptly at every stage of a session', async () => {
    const stages: ((wire: Wire) => Promise<void>)[] = [
      // Connect and vanish.
      async () => {},
      // Half a startup packet.
      async (wire) => wire.send(login().subarray(0, 10)),
      // A whole startup packet, gone before the answer.
      async (wire) => wire.send(login()),
      // Startup and a query in one write (the query arrives with the login), gone at once.
      async (wire) => wire.send(login(), query('select pg_sleep(0.01)')),
      // Logged in, inside a transaction, mid-frame.
      async (wire) => {
        wire.send(login());
        await wire.until('Z');
        await rawQuery(wire, 'begin');
        wire.send(query('select 1').subarray(0, 7));
      },
      // Logged in, a query in flight.
      async (wire) => {
        wire.send(login());
        await wire.until('Z');
        wire.send(query('select pg_sleep(0.01)'));
      },
    ];
    const concurrency = 10;
    for (let round = 0; round < 200 / concurrency; round++) {
      await Promise.all(
        Array.from({ length: concurrency }, async (_, k) => {
          const i = round * concurrency + k;
          const wire = await Wire.open(proxy.port);
          await stages[i % stages.length]!(wire);
          // Alternate a reset (RST) with a plain FIN.
          if (i % 2 === 0) wire.socket.resetAndDestroy();
          else wire.socket.destroy();
          await wire.closed;
        }),
      );
    }
    await expectNoLeaks(proxy);
    expect(poolOf(proxy)!.idle).toBeLessThanOrEqual(5);
    await expectServing(proxy);
  });
});

describe('a Query that arrives while the first server of a pool is connecting', () => {
  // BUG (src/server/proxy-server.ts login()): runLogin() detaches its 'data' listener, then
  // `await pool.parametersForLogin()` runs (a whole upstream connect + auth for a new pool) before
  // `new ClientSession(...)` attaches the next one. The socket stays in flowing mode, so bytes
  // arriving in that window are emitted to no listener and lost; the client waits forever.
  // PostgreSQL (and PgBouncer) buffer them. Drop `.fails` once fixed.
  it('answers a Query sent after AuthenticationOk but before ReadyForQuery', async () => {
    // A fresh proxy has no pool yet, so the login connects upstream while the Query arrives.
    const proxy = await startProxy({});
    try {
      const wire = await Wire.open(proxy.port);
      wire.send(login());
      const auth = await wire.message();
      expect(auth).toMatchObject({ type: 'R' });
      expect(auth.body.readInt32BE(0)).toBe(0);
      wire.send(query("select 'early'"));
      await wire.until('Z');
      expect(dataRowValues(await wire.until('Z', 3000))).toEqual(['early']);
      wire.socket.destroy();
    } finally {
      await proxy.stop();
    }
  });
});

describe('a saturated pool', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1, query_wait_timeout: 1 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  /** A node-postgres client holding the only server inside a transaction. */
  async function holdTheServer(): Promise<pg.Client> {
    const holder = new pg.Client({ connectionString: proxy.url(db) });
    await holder.connect();
    await holder.query('begin');
    return holder;
  }

  it('answers a Query that waited past query_wait_timeout with 57014 and keeps the client', async () => {
    const holder = await holdTheServer();
    const wire = await loggedIn(proxy);
    const reply = await rawQuery(wire, 'select 1');
    expect(errorFields(reply[0]!)).toMatchObject({ S: 'ERROR', C: '57014' });
    expect(reply.at(-1)?.body.toString()).toBe('I');
    await holder.query('commit');
    expect(dataRowValues(await rawQuery(wire, 'select 2'))).toEqual(['2']);
    wire.send(TERMINATE);
    await wire.rest();
    await holder.end();
    await expectNoLeaks(proxy);
  });

  // BUG (src/server/client-session.ts onAcquireFailed): when the wait times out while the client
  // is halfway through a frame, the queued head of that frame is dropped but the FrameReader is
  // still skipping the rest of it; the tail is then forwarded to the next server as if it began
  // new messages. Bytes inside a query's text get executed as their own statements (message
  // smuggling). Drop `.fails` once fixed.
  it('never forwards the tail of a frame whose head was dropped at query_wait_timeout', async () => {
    const holder = await holdTheServer();
    const wire = await loggedIn(proxy);
    const inner = query("insert into notes values (666, 'smuggled')");
    const head = Buffer.from("select '");
    const header = Buffer.alloc(5);
    header[0] = 0x45; // Execute: forwarded as it arrives (a Query would be held back whole)
    header.writeInt32BE(4 + head.length + inner.length, 1);
    wire.send(header, head);
    expect(errorFields(await wire.message(3000))).toMatchObject({ C: '57014' });
    await holder.query('commit');
    await holder.end();
    // The rest of the same Query message: its text happens to look like a whole Query.
    wire.send(inner);
    await wire.rest(1000);
    const c = await directClient(db);
    const { rows } = await c.query('select body from notes where id = 666');
    await c.end();
    expect(rows).toEqual([]);
  });

  // BUG (src/server/client-session.ts finishTerminate/onServerAcquired): Terminate after
  // Parse/Bind without Sync, while the client waits for a server, sets `terminating` but nothing
  // closes the client: finishTerminate() waits for the acquire, and onServerAcquired() writes the
  // queued frames without checking `terminating`; no ReadyForQuery will ever come. The client
  // socket stays open and the server stays checked out until the client itself hangs up.
  // PostgreSQL closes at once. Drop `.fails` once fixed.
  it('closes a client that sends Terminate after Parse/Bind while it waits for a server', async () => {
    const holder = await holdTheServer();
    const wire = await loggedIn(proxy);
    const parse = frame('P', Buffer.concat([Buffer.from('\0select 1\0'), Buffer.from([0, 0])]));
    const bind = frame('B', Buffer.alloc(8));
    wire.send(parse, bind, TERMINATE);
    await holder.query('commit');
    await holder.end();
    await wire.rest(2000);
    expect(wire.closedByPeer).toBe(true);
    await expectNoLeaks(proxy);
  });
});

// ---- limits ------------------------------------------------------------------------------------

describe('max_client_conn', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ max_client_conn: 3, pool_size: 3 });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it('refuses the 4th concurrent client with FATAL 53300 and admits a new one after one leaves', async () => {
    const clients: pg.Client[] = [];
    for (let i = 0; i < 3; i++) {
      const c = new pg.Client({ connectionString: proxy.url(db) });
      await c.connect();
      clients.push(c);
    }
    const raw = await answerTo(proxy, login());
    expect(firstError(raw)).toMatchObject({
      S: 'FATAL',
      C: '53300',
      M: 'sorry, too many clients already',
      D: 'max_client_conn is 3',
    });
    const fourth = new pg.Client({ connectionString: proxy.url(db) });
    fourth.on('error', () => {});
    await expect(fourth.connect()).rejects.toMatchObject({ code: '53300' });
    // The three admitted clients are unaffected.
    for (const c of clients) expect((await c.query('select 1 as one')).rows).toEqual([{ one: 1 }]);

    await clients.pop()!.end();
    expect(
      await settle(
        () => proxy.sluice.proxy.clients,
        (n) => n === 2,
      ),
    ).toBe(2);
    await expectServing(proxy);
    for (const c of clients) await c.end();
    expect(
      await settle(
        () => proxy.sluice.proxy.clients,
        (n) => n === 0,
      ),
    ).toBe(0);
  });

  // BUG (src/server/proxy-server.ts login(), `this.clientCount > options.maxClientConnections`):
  // clientCount includes every accepted socket still logging in, and the check runs after login.
  // When 4 sockets are accepted before any finishes logging in, each sees 4 > 3 and all four are
  // refused: nobody gets in. PgBouncer admits the first 3. Drop `.fails` once fixed.
  it('admits 3 of 4 clients whose logins race, refusing only one', async () => {
    const sockets = await Promise.all([0, 1, 2, 3].map(() => rawConnect(proxy.port)));
    expect(
      await settle(
        () => proxy.sluice.proxy.clients,
        (n) => n === 4,
      ),
    ).toBe(4);
    const replies = sockets.map((s) => readUntilClose(s, 1000));
    for (const s of sockets) s.write(login());
    const outcomes = (await Promise.all(replies)).map((b) => firstError(b)?.C ?? 'admitted');
    expect(outcomes.filter((o) => o === 'admitted')).toHaveLength(3);
    expect(outcomes.filter((o) => o === '53300')).toHaveLength(1);
  });
});

describe('client_login_timeout', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({ client_login_timeout: 1, auth: 'scram-sha-256' });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  async function timedOut(send: (wire: Wire) => Promise<void>): Promise<void> {
    const started = Date.now();
    const wire = await Wire.open(proxy.port);
    await send(wire);
    const rest = await wire.rest(10_000);
    const elapsed = Date.now() - started;
    expect(firstError(rest)).toMatchObject({
      S: 'FATAL',
      C: '08P01',
      M: 'canceling authentication due to timeout',
    });
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(3000);
  }

  it('closes a client that connects and sends nothing with FATAL 08P01 after about a second', async () => {
    await timedOut(async () => {});
    await expectServing(proxy);
  });

  it('closes a client stuck halfway through its startup packet', async () => {
    await timedOut(async (wire) => wire.send(login().subarray(0, 12)));
    await expectServing(proxy);
  });

  it('closes a client that goes quiet in the middle of SCRAM', async () => {
    await timedOut(async (wire) => {
      wire.send(login());
      const sasl = await wire.message();
      expect(sasl.type).toBe('R');
      expect(sasl.body.readInt32BE(0)).toBe(10);
    });
    expect(
      await settle(
        () => proxy.sluice.proxy.clients,
        (n) => n === 0,
      ),
    ).toBe(0);
    await expectServing(proxy);
  });
});
