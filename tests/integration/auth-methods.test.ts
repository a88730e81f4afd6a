// Client authentication through real drivers (node-postgres, postgres.js, psql): SCRAM-SHA-256
// with plaintext and verifier users entries, md5 with plaintext and hash entries, wrong passwords
// and unknown users (28P01, indistinguishable), and upstream refusals forwarded as PostgreSQL
// words them (unknown database 3D000, a role whose password Sluice cannot supply 28P01).
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { md5PasswordHash } from '../../src/protocol/md5-auth.js';
import { formatScramVerifier, makeScramVerifier } from '../../src/protocol/scram.js';
import {
  createRole,
  createTestDatabase,
  directClient,
  dropRole,
  dropTestDatabase,
  pgInfo,
} from './harness/database.js';
import { firstError, psql, rawConnect, startProxy, startupMessage, type TestProxy } from './harness/proxy.js';

const suffix = randomBytes(4).toString('hex');
/** A role whose password PostgreSQL stores as SCRAM (it must log in upstream with SCRAM). */
const scramRole = `auth_scram_${suffix}`;
const scramPassword = `scram pw ${suffix}`;
/** A role whose password PostgreSQL stores as md5 (pg_hba lets it log in upstream with md5). */
const md5Role = `auth_md5_${suffix}`;
const md5Password = `md5 pw ${suffix}`;
const unknownUser = `auth_nobody_${suffix}`;

let db: string;

beforeAll(async () => {
  db = await createTestDatabase('auth_methods');
  await createRole(scramRole, scramPassword, 'scram-sha-256');
  await createRole(md5Role, md5Password, 'md5');
});

afterAll(async () => {
  await dropTestDatabase(db);
  await dropRole(scramRole);
  await dropRole(md5Role);
});

// ---- helpers ------------------------------------------------------------------------------------

interface LoginFailure {
  code: string | undefined;
  message: string;
}

type Driver = {
  /** Logs in, runs `select current_user`, logs out; resolves the user name. */
  login(url: string): Promise<string>;
  /** Logs in expecting a refusal; resolves what the driver reports. */
  failure(url: string): Promise<LoginFailure>;
};

const nodePostgres: Driver = {
  async login(url) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query<{ u: string }>('select current_user as u')).rows[0]!.u;
    } finally {
      await c.end();
    }
  },
  async failure(url) {
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => {});
    const err = (await c.connect().then(
      () => c.end().then(() => new Error('login succeeded')),
      (e: unknown) => e,
    )) as pg.DatabaseError;
    return { code: err.code, message: err.message };
  },
};

const postgresJs: Driver = {
  async login(url) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      const rows = await sql<{ u: string }[]>`select current_user as u`;
      return rows[0]!.u;
    } finally {
      await sql.end({ timeout: 5 });
    }
  },
  async failure(url) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      const err = (await sql`select 1`.then(
        () => new Error('login succeeded'),
        (e: unknown) => e,
      )) as postgres.PostgresError;
      return { code: err.code, message: err.message };
    } finally {
      await sql.end({ timeout: 5 });
    }
  },
};

const psqlDriver: Driver = {
  async login(url) {
    return (await psql(url, ['-w', '-At', '-c', 'select current_user'])).trim();
  },
  async failure(url) {
    // libpq reports a login failure as "FATAL:  <message>" without the SQLSTATE, so psql's
    // failures are checked by their words alone.
    const err = (await psql(url, ['-w', '-At', '-c', 'select 1']).then(
      () => new Error('login succeeded'),
      (e: unknown) => e,
    )) as Error & { stderr?: string };
    return { code: undefined, message: err.stderr ?? err.message };
  },
};

const drivers: [string, Driver][] = [
  ['node-postgres', nodePostgres],
  ['postgres.js', postgresJs],
  ['psql', psqlDriver],
];

function url(proxy: TestProxy, user: string, password: string): string {
  return proxy.url(db, user, password);
}

/** What each driver must report when a password is refused. */
function expectPasswordFailure(name: string, failure: LoginFailure, user: string): void {
  const message = `password authentication failed for user "${user}"`;
  if (name === 'psql') {
    expect(failure.message).toContain(`FATAL:  ${message}`);
  } else {
    expect(failure).toEqual({ code: '28P01', message });
  }
}

async function expectServing(proxy: TestProxy): Promise<void> {
  const { user, password } = pgInfo();
  expect(await nodePostgres.login(url(proxy, user, password))).toBe(user);
}

function scramVerifier(password: string): string {
  return formatScramVerifier(makeScramVerifier(password));
}

/** A raw connection that reads whole backend messages on demand. */
class Wire {
  private buffer = Buffer.alloc(0);
  private isClosed = false;
  private wake: (() => void) | undefined;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake?.();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.isClosed = true;
      this.wake?.();
    });
  }

  async message(ms = 5000): Promise<{ type: string; body: Buffer; frame: Buffer }> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.buffer.length >= 5) {
        const length = this.buffer.readInt32BE(1);
        if (this.buffer.length >= 1 + length) {
          const frame = this.buffer.subarray(0, 1 + length);
          this.buffer = this.buffer.subarray(1 + length);
          return { type: String.fromCharCode(frame[0]!), body: frame.subarray(5), frame };
        }
      }
      if (this.isClosed) throw new Error('connection closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a message');
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
}

function frame(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

function saslInitialResponse(mechanism: string, data: string): Buffer {
  const len = Buffer.alloc(4);
  len.writeInt32BE(Buffer.byteLength(data));
  return frame('p', Buffer.concat([Buffer.from(`${mechanism}\0`), len, Buffer.from(data)]));
}

/** Starts a SCRAM exchange by hand and returns the server-first-message's attributes. */
async function scramChallenge(proxy: TestProxy, user: string): Promise<Record<string, string>> {
  const wire = new Wire(await rawConnect(proxy.port));
  try {
    wire.socket.write(startupMessage({ user, database: db }));
    const sasl = await wire.message();
    expect(sasl.type).toBe('R');
    expect(sasl.body.readInt32BE(0)).toBe(10);
    expect(sasl.body.toString('utf8', 4)).toBe('SCRAM-SHA-256\0\0');
    wire.socket.write(saslInitialResponse('SCRAM-SHA-256', 'n,,n=,r=clientnonce'));
    const cont = await wire.message();
    expect(cont.type).toBe('R');
    expect(cont.body.readInt32BE(0)).toBe(11);
    const text = cont.body.toString('utf8', 4);
    return Object.fromEntries(text.split(',').map((a) => [a.slice(0, 1), a.slice(2)]));
  } finally {
    wire.socket.destroy();
  }
}

/** Sends a startup packet, then `next` once the server asks for SASL; returns the error. */
async function saslRefusal(proxy: TestProxy, next: Buffer): Promise<Record<string, string> | undefined> {
  const wire = new Wire(await rawConnect(proxy.port));
  try {
    wire.socket.write(startupMessage({ user: pgInfo().user, database: db }));
    expect((await wire.message()).type).toBe('R');
    wire.socket.write(next);
    const reply = await wire.message();
    return firstError(reply.frame);
  } finally {
    wire.socket.destroy();
  }
}

// ---- SCRAM-SHA-256 ------------------------------------------------------------------------------

describe('auth scram-sha-256 with plaintext users entries', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    const { user, password } = pgInfo();
    proxy = await startProxy({
      auth: 'scram-sha-256',
      users: [
        { name: user, password },
        { name: scramRole, password: scramPassword },
      ],
    });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it.each(drivers)('logs %s in with the right password', async (_name, driver) => {
    const { user, password } = pgInfo();
    expect(await driver.login(url(proxy, user, password))).toBe(user);
  });

  it.each(drivers)(
    'logs %s in as a non-superuser role, replaying its password upstream',
    async (_n, driver) => {
      expect(await driver.login(url(proxy, scramRole, scramPassword))).toBe(scramRole);
    },
  );

  it.each(drivers)('refuses %s with 28P01 for a wrong password', async (name, driver) => {
    const { user } = pgInfo();
    expectPasswordFailure(name, await driver.failure(url(proxy, user, 'not the password')), user);
    await expectServing(proxy);
  });

  it.each(drivers)(
    'refuses %s with 28P01 for an unknown user, worded as for a wrong password',
    async (name, driver) => {
      expectPasswordFailure(name, await driver.failure(url(proxy, unknownUser, 'whatever')), unknownUser);
      await expectServing(proxy);
    },
  );

  it('gives an unknown user a SCRAM challenge shaped like a known user’s, with a stable salt', async () => {
    const known = [await scramChallenge(proxy, pgInfo().user), await scramChallenge(proxy, pgInfo().user)];
    const unknown = [await scramChallenge(proxy, unknownUser), await scramChallenge(proxy, unknownUser)];
    for (const c of [...known, ...unknown]) {
      expect(Object.keys(c)).toEqual(['r', 's', 'i']);
      expect(c.r).toMatch(/^clientnonce[\x21-\x2b\x2d-\x7e]{16,}$/);
      expect(Buffer.from(c.s!, 'base64')).toHaveLength(16);
      expect(c.i).toBe('4096');
    }
    expect(known[1]!.s).toBe(known[0]!.s);
    expect(unknown[1]!.s).toBe(unknown[0]!.s);
    expect(unknown[0]!.s).not.toBe(known[0]!.s);
    expect(await scramChallenge(proxy, `${unknownUser}_other`)).not.toMatchObject({ s: unknown[0]!.s });
  });

  it('refuses a client that picks a SASL mechanism it was not offered with FATAL 08P01', async () => {
    const error = await saslRefusal(
      proxy,
      saslInitialResponse('SCRAM-SHA-256-PLUS', 'p=tls-server-end-point,,n=,r=x'),
    );
    expect(error).toMatchObject({
      S: 'FATAL',
      C: '08P01',
      M: 'client selected an invalid SASL authentication mechanism',
    });
    await expectServing(proxy);
  });

  it('refuses a Query sent instead of the SASL response with FATAL 08P01', async () => {
    const error = await saslRefusal(proxy, frame('Q', Buffer.from('select 1\0')));
    expect(error).toMatchObject({ S: 'FATAL', C: '08P01' });
    expect(error?.M).toContain('expected password response');
    await expectServing(proxy);
  });

  it('refuses a malformed SCRAM client-first-message with FATAL 08P01', async () => {
    const error = await saslRefusal(proxy, saslInitialResponse('SCRAM-SHA-256', 'garbage'));
    expect(error).toMatchObject({ S: 'FATAL', C: '08P01' });
    expect(error?.M).toContain('malformed SCRAM message');
    await expectServing(proxy);
  });
});

describe('auth scram-sha-256 with SCRAM verifier users entries', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    const { user, password } = pgInfo();
    proxy = await startProxy({
      auth: 'scram-sha-256',
      users: [
        { name: user, password: scramVerifier(password) },
        { name: scramRole, password: scramVerifier(scramPassword) },
      ],
    });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it.each(drivers)('logs %s in against the verifier (upstream with the URL password)', async (_n, driver) => {
    const { user, password } = pgInfo();
    expect(await driver.login(url(proxy, user, password))).toBe(user);
  });

  it.each(drivers)('refuses %s with 28P01 for a wrong password', async (name, driver) => {
    const { user } = pgInfo();
    expectPasswordFailure(name, await driver.failure(url(proxy, user, 'not the password')), user);
    await expectServing(proxy);
  });

  it('forwards 28P01 for a role whose upstream password Sluice cannot know from a verifier', async () => {
    // The client proves its password to Sluice, but a verifier cannot be replayed upstream.
    const failure = await nodePostgres.failure(url(proxy, scramRole, scramPassword));
    expect(failure.code).toBe('28P01');
    expect(failure.message).toBe(`upstream asked for a password for user "${scramRole}" and Sluice has none`);
    await expectServing(proxy);
    const pool = proxy.sluice.pools.stats().find((s) => s.user === scramRole);
    expect(pool).toMatchObject({ active: 0, connecting: 0, waiting: 0 });
  });
});

// ---- md5 ---------------------------------------------------------------------------------------------

describe('auth md5', () => {
  let proxy: TestProxy;
  const verifierOnly = `auth_verifier_${suffix}`;
  beforeAll(async () => {
    const { user, password } = pgInfo();
    proxy = await startProxy({
      auth: 'md5',
      users: [
        // The superuser by hash: upstream, Sluice uses the URL's password.
        { name: user, password: md5PasswordHash(user, password) },
        { name: scramRole, password: scramPassword },
        { name: md5Role, password: md5Password },
        { name: verifierOnly, password: scramVerifier('verifier pw') },
      ],
    });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it.each(drivers)('logs %s in against an md5-hash entry', async (_n, driver) => {
    const { user, password } = pgInfo();
    expect(await driver.login(url(proxy, user, password))).toBe(user);
  });

  it.each(drivers)(
    'logs %s in against a plaintext entry (role stored as SCRAM upstream)',
    async (_n, driver) => {
      expect(await driver.login(url(proxy, scramRole, scramPassword))).toBe(scramRole);
    },
  );

  it.each(drivers)(
    'logs %s in against a plaintext entry (role stored as md5 upstream)',
    async (_n, driver) => {
      expect(await driver.login(url(proxy, md5Role, md5Password))).toBe(md5Role);
    },
  );

  it.each(drivers)(
    'refuses %s with 28P01 for a wrong password against a hash entry',
    async (name, driver) => {
      const { user } = pgInfo();
      expectPasswordFailure(name, await driver.failure(url(proxy, user, 'not the password')), user);
      await expectServing(proxy);
    },
  );

  it.each(drivers)(
    'refuses %s with 28P01 for a wrong password against a plaintext entry',
    async (name, driver) => {
      expectPasswordFailure(name, await driver.failure(url(proxy, md5Role, 'not the password')), md5Role);
      await expectServing(proxy);
    },
  );

  it.each(drivers)('refuses %s with 28P01 for an unknown user', async (name, driver) => {
    expectPasswordFailure(name, await driver.failure(url(proxy, unknownUser, 'whatever')), unknownUser);
    await expectServing(proxy);
  });

  it('refuses with 28P01 a user whose entry is a SCRAM verifier, which cannot answer md5', async () => {
    expectPasswordFailure(
      'node-postgres',
      await nodePostgres.failure(url(proxy, verifierOnly, 'verifier pw')),
      verifierOnly,
    );
    await expectServing(proxy);
  });
});

describe('auth md5 with an md5-hash entry for a role that logs in upstream with md5', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({
      auth: 'md5',
      users: [{ name: md5Role, password: md5PasswordHash(md5Role, md5Password) }],
    });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  // BUG (src/app.ts, upstreamPasswordFor: "Only a plaintext password can be replayed upstream;
  // hashes and verifiers cannot"): an md5 hash *can* answer an upstream AuthenticationMD5Password
  // (md5Response() in src/protocol/md5-auth.ts takes the hash for exactly that, and PgBouncer
  // relies on it), but app.ts discards it, so the client is authenticated and then refused with
  // "Sluice has none". Drop `.fails` once fixed.
  it('logs the role in, answering the upstream md5 challenge with the stored hash', async () => {
    expect(await nodePostgres.login(url(proxy, md5Role, md5Password))).toBe(md5Role);
  });

  it('refuses a wrong password against the hash with 28P01', async () => {
    expectPasswordFailure('node-postgres', await nodePostgres.failure(url(proxy, md5Role, 'wrong')), md5Role);
    await expectServing(proxy);
  });
});

// ---- upstream refusals ----------------------------------------------------------------------------

describe('upstream refusals reach the client as PostgreSQL words them', () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startProxy({
      auth: 'trust',
      users: [{ name: md5Role, password: 'not the upstream password' }],
    });
  });
  afterAll(async () => {
    await proxy.stop();
  });

  it.each(drivers)('forwards 3D000 for an unknown database to %s', async (name, driver) => {
    const { user, password } = pgInfo();
    const missing = `auth_missing_${suffix}`;
    const failure = await driver.failure(proxy.url(missing, user, password));
    const message = `database "${missing}" does not exist`;
    if (name === 'psql') expect(failure.message).toContain(`FATAL:  ${message}`);
    else expect(failure).toEqual({ code: '3D000', message });
    await expectServing(proxy);
  });

  it('words an unknown database exactly as PostgreSQL does directly', async () => {
    const missing = `auth_missing_${suffix}`;
    const direct = await directClient(missing).then(
      () => undefined,
      (e: pg.DatabaseError) => ({ code: e.code, message: e.message, severity: e.severity }),
    );
    const { user, password } = pgInfo();
    const c = new pg.Client({ connectionString: proxy.url(missing, user, password) });
    c.on('error', () => {});
    const proxied = await c.connect().then(
      () => undefined,
      (e: pg.DatabaseError) => ({ code: e.code, message: e.message, severity: e.severity }),
    );
    expect(direct).toEqual({
      code: '3D000',
      message: `database "${missing}" does not exist`,
      severity: 'FATAL',
    });
    expect(proxied).toEqual(direct);
  });

  it.each(drivers)(
    'forwards PostgreSQL’s 28P01 when the users entry has the wrong upstream password (%s)',
    async (name, driver) => {
      expectPasswordFailure(name, await driver.failure(url(proxy, md5Role, 'anything, trust')), md5Role);
      await expectServing(proxy);
    },
  );

  it('answers 28P01 for a role whose upstream password Sluice does not know', async () => {
    const failure = await nodePostgres.failure(url(proxy, scramRole, 'anything, trust'));
    expect(failure).toEqual({
      code: '28P01',
      message: `upstream asked for a password for user "${scramRole}" and Sluice has none`,
    });
    await expectServing(proxy);
    for (const pool of proxy.sluice.pools.stats()) {
      expect(pool).toMatchObject({ active: 0, connecting: 0, waiting: 0 });
    }
  });
});
