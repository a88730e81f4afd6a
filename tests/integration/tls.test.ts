// TLS between clients and Sluice through real drivers (psql with sslmode=require / verify-full,
// node-postgres and postgres.js with the CA pinned), SCRAM-SHA-256-PLUS channel binding (psql
// channel_binding=require, node-postgres enableChannelBinding), tls_required refusing plaintext
// with 28000, GSSENCRequest answered 'N', and plaintext smuggled after SSLRequest refused.
// Upstream: sslmode disable / prefer / require / verify-ca / verify-full and sslrootcert against
// a second embedded PostgreSQL with ssl=on and a hostssl-only pg_hba.conf.
import { chmod, chown, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSluice } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { type RunningPostgres, startEmbeddedPostgres } from '../../src/embedded/embedded-postgres.js';
import { ensureSelfSignedPair } from '../../src/embedded/self-signed-tls.js';
import { createTestDatabase, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  firstError,
  psql,
  rawConnect,
  readUntilClose,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let dir: string;
let certFile: string;
let keyFile: string;
let proxy: TestProxy;

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const GSSENC_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);

function firstByte(socket: import('node:net').Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk[0] ?? -1));
    socket.once('error', reject);
  });
}

beforeAll(async () => {
  db = await createTestDatabase('tls');
  dir = await mkdtemp(path.join(os.tmpdir(), 'sluice-tls-test-'));
  ({ certFile, keyFile } = await ensureSelfSignedPair(dir));
  proxy = await startProxy({ auth: 'scram-sha-256', tls_cert: certFile, tls_key: keyFile });
});

afterAll(async () => {
  await proxy?.stop();
  await dropTestDatabase(db);
  await rm(dir, { recursive: true, force: true });
});

describe('client TLS', () => {
  it('psql with sslmode=require gets a TLS session and runs queries', async () => {
    const out = await psql(proxy.url(db), ['-c', '\\conninfo', '-c', 'SELECT 40 + 2 AS answer'], {
      PGSSLMODE: 'require',
    });
    expect(out).toMatch(/SSL connection \(protocol: TLSv1\.[23]/);
    expect(out).toMatch(/\b42\b/);
  });

  it('psql with sslmode=verify-full and the pair as root certificate verifies the server', async () => {
    const url = `${proxy.url(db)}?sslmode=verify-full&sslrootcert=${encodeURIComponent(certFile)}`;
    expect(await psql(url, ['-Atc', 'SELECT 7'])).toBe('7\n');
  });

  it('psql with verify-full refuses a server whose certificate it cannot verify', async () => {
    const other = await mkdtemp(path.join(os.tmpdir(), 'sluice-tls-other-'));
    try {
      const { certFile: otherCert } = await ensureSelfSignedPair(other);
      const url = `${proxy.url(db)}?sslmode=verify-full&sslrootcert=${encodeURIComponent(otherCert)}`;
      await expect(psql(url, ['-Atc', 'SELECT 1'])).rejects.toThrow(/certificate verify failed/);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('psql with channel_binding=require logs in with SCRAM-SHA-256-PLUS', async () => {
    const url = `${proxy.url(db)}?sslmode=require&channel_binding=require`;
    expect(await psql(url, ['-Atc', 'SELECT current_user'])).toBe(`${pgInfo().user}\n`);
  });

  it('psql without TLS cannot require channel binding', async () => {
    const url = `${proxy.url(db)}?sslmode=disable&channel_binding=require`;
    await expect(psql(url, ['-Atc', 'SELECT 1'])).rejects.toThrow(/channel binding/);
  });

  it('node-postgres over TLS with enableChannelBinding logs in and queries', async () => {
    const { user, password } = pgInfo();
    const client = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      database: db,
      user,
      password,
      ssl: { ca: await readFile(certFile, 'utf8'), servername: 'localhost' },
      enableChannelBinding: true,
    });
    // Records the mechanism the driver selects from those Sluice offered.
    const connection = (
      client as unknown as { connection: { sendSASLInitialResponseMessage: (m: string, r: string) => void } }
    ).connection;
    const send = connection.sendSASLInitialResponseMessage.bind(connection);
    let mechanism: string | undefined;
    connection.sendSASLInitialResponseMessage = (m: string, response: string) => {
      mechanism = m;
      return send(m, response);
    };
    await client.connect();
    try {
      const res = await client.query('SELECT $1::int * 2 AS v', [21]);
      expect(res.rows[0].v).toBe(42);
      expect(mechanism).toBe('SCRAM-SHA-256-PLUS');
    } finally {
      await client.end();
    }
  });

  it('postgres.js with ssl and the CA pinned runs queries over TLS', async () => {
    const { user, password } = pgInfo();
    const sql = postgres({
      host: proxy.host,
      port: proxy.port,
      database: db,
      user,
      password,
      ssl: { ca: await readFile(certFile, 'utf8'), servername: 'localhost' },
      max: 1,
      onnotice: () => {},
    });
    try {
      const rows = await sql`SELECT ${5}::int + 1 AS v`;
      expect(rows[0]?.v).toBe(6);
    } finally {
      await sql.end();
    }
  });

  it('still serves plaintext clients when TLS is not required', async () => {
    expect(await psql(proxy.url(db), ['-Atc', 'SELECT 1'], { PGSSLMODE: 'disable' })).toBe('1\n');
  });

  it('answers GSSENCRequest with N and then serves the startup packet', async () => {
    const socket = await rawConnect(proxy.port);
    try {
      const reply = firstByte(socket);
      socket.write(GSSENC_REQUEST);
      expect(await reply).toBe(0x4e);
    } finally {
      socket.destroy();
    }
  });

  it('refuses plaintext bytes sent right after SSLRequest (08P01) instead of reading them as secure', async () => {
    const socket = await rawConnect(proxy.port);
    socket.write(Buffer.concat([SSL_REQUEST, startupMessage({ user: 'x', database: db })]));
    const bytes = await readUntilClose(socket, 5000);
    expect(bytes[0]).not.toBe(0x53);
    expect(firstError(bytes)?.C).toBe('08P01');
  });

  it('survives a client that says S but then sends garbage instead of a TLS handshake', async () => {
    const socket = await rawConnect(proxy.port);
    const reply = firstByte(socket);
    socket.write(SSL_REQUEST);
    expect(await reply).toBe(0x53);
    socket.write(Buffer.from('this is not a ClientHello at all\r\n'));
    await readUntilClose(socket, 5000);
    expect(await psql(proxy.url(db), ['-Atc', 'SELECT 2'], { PGSSLMODE: 'require' })).toBe('2\n');
  });

  it('closes a TLS client that never finishes its handshake', async () => {
    // A raw TLS client that stops after SSLRequest's answer: the login timeout covers the handshake.
    const short = await startProxy({ tls_cert: certFile, tls_key: keyFile, auth_timeout: 1 });
    try {
      const socket = await rawConnect(short.port);
      const started = Date.now();
      socket.write(SSL_REQUEST);
      const closed = await readUntilClose(socket, 5000);
      expect(closed[0]).toBe(0x53);
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      await short.stop();
    }
  });
});

describe('tls_required', () => {
  let strict: TestProxy;
  beforeAll(async () => {
    strict = await startProxy({ tls_cert: certFile, tls_key: keyFile, tls_required: true });
  });
  afterAll(async () => {
    await strict?.stop();
  });

  it('refuses a plaintext psql with FATAL 28000, worded as a hostssl-only pg_hba.conf', async () => {
    await expect(psql(strict.url(db), ['-Atc', 'SELECT 1'], { PGSSLMODE: 'disable' })).rejects.toThrow(
      /no pg_hba\.conf entry for host "127\.0\.0\.1", user "[^"]+", database "[^"]+", no encryption/,
    );
  });

  it('answers a raw plaintext startup with SQLSTATE 28000', async () => {
    const socket = await rawConnect(strict.port);
    socket.write(startupMessage({ user: pgInfo().user, database: db }));
    const fields = firstError(await readUntilClose(socket));
    expect(fields?.S).toBe('FATAL');
    expect(fields?.C).toBe('28000');
  });

  it('lets TLS clients in (psql sslmode=prefer upgrades)', async () => {
    expect(await psql(strict.url(db), ['-Atc', 'SELECT 3'], { PGSSLMODE: 'prefer' })).toBe('3\n');
  });

  it('lets a raw TLS client log in over node:tls', async () => {
    const raw = await rawConnect(strict.port);
    const reply = firstByte(raw);
    raw.write(SSL_REQUEST);
    expect(await reply).toBe(0x53);
    const secure = tlsConnect({ socket: raw, ca: await readFile(certFile), servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    const first = firstByte(secure as unknown as import('node:net').Socket);
    secure.write(startupMessage({ user: pgInfo().user, database: db }));
    // 'R': an Authentication request, i.e. the startup was read over TLS.
    expect(await first).toBe(0x52);
    secure.destroy();
  });
});

describe('TLS to the upstream (sslmode in the upstream URL)', () => {
  let server: RunningPostgres;
  let otherCa: string;

  beforeAll(async () => {
    server = await startEmbeddedPostgres({ fast: true });
    // The pair made above (SAN 127.0.0.1) becomes the server's; files owned by the server's user.
    const owner = await stat(server.dataDir);
    for (const [from, to, mode] of [
      [certFile, 'server.crt', 0o644],
      [keyFile, 'server.key', 0o600],
    ] as const) {
      const target = path.join(server.dataDir, to);
      await copyFile(from, target);
      await chown(target, owner.uid, owner.gid);
      await chmod(target, mode);
    }
    // hostssl only: a plaintext login is refused by PostgreSQL itself.
    const hba = path.join(server.dataDir, 'pg_hba.conf');
    await writeFile(
      hba,
      'hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n',
    );
    await chown(hba, owner.uid, owner.gid);
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    await admin.query('ALTER SYSTEM SET ssl = on');
    await admin.query('SELECT pg_reload_conf()');
    await admin.end();
    const other = await mkdtemp(path.join(os.tmpdir(), 'sluice-tls-ca-'));
    otherCa = (await ensureSelfSignedPair(other)).certFile;
    // Reload is asynchronous: wait until a TLS login succeeds.
    for (let i = 0; i < 50; i++) {
      const probe = new pg.Client({ connectionString: server.url, ssl: { rejectUnauthorized: false } });
      const ok = await probe.connect().then(
        () => true,
        () => false,
      );
      await probe.end().catch(() => {});
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    await server?.stop();
    if (otherCa) await rm(path.dirname(otherCa), { recursive: true, force: true });
  });

  async function viaSluice(query: string): Promise<{ ssl?: boolean; error?: string }> {
    const sluice = await startSluice(
      loadConfig({
        env: {},
        flags: {
          listen: '127.0.0.1:0',
          upstream: `${server.url}${query}`,
          auth: 'trust',
          log_level: 'silent',
          shutdown_timeout: 2,
          server_connect_timeout: 5,
        },
      }),
    );
    const client = new pg.Client({
      host: sluice.host,
      port: sluice.port,
      user: server.user,
      database: 'postgres',
    });
    client.on('error', () => {});
    try {
      await client.connect();
      const res = await client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      return { ssl: res.rows[0].ssl as boolean };
    } catch (err) {
      return { error: String((err as Error).message) };
    } finally {
      await client.end().catch(() => {});
      await sluice.stop();
    }
  }

  it('sslmode=require logs in over TLS (pg_stat_ssl says so)', async () => {
    expect(await viaSluice('?sslmode=require')).toEqual({ ssl: true });
  });

  // (Every other test file runs with the default, prefer, against a server without TLS: the
  // plaintext fallback is exercised there.)
  it('no sslmode means prefer, as in libpq: TLS when the server offers it', async () => {
    expect(await viaSluice('')).toEqual({ ssl: true });
  });

  it('sslmode=verify-full with the server certificate as sslrootcert verifies and logs in', async () => {
    expect(await viaSluice(`?sslmode=verify-full&sslrootcert=${encodeURIComponent(certFile)}`)).toEqual({
      ssl: true,
    });
  });

  it('sslmode=verify-ca and verify-full refuse a server certificate the root does not sign', async () => {
    for (const mode of ['verify-ca', 'verify-full']) {
      const result = await viaSluice(`?sslmode=${mode}&sslrootcert=${encodeURIComponent(otherCa)}`);
      expect(result.error).toMatch(/could not connect to upstream .*(self[- ]signed|certificate)/i);
    }
  });

  it('sslmode=require with a wrong sslrootcert verifies the chain, as libpq does', async () => {
    const result = await viaSluice(`?sslmode=require&sslrootcert=${encodeURIComponent(otherCa)}`);
    expect(result.error).toMatch(/could not connect to upstream/);
  });

  it('sslmode=disable talks plaintext, which this hostssl-only server refuses (28000 forwarded)', async () => {
    const result = await viaSluice('?sslmode=disable');
    expect(result.error).toMatch(/pg_hba\.conf rejects connection .*no encryption/);
  });

  it('sslmode=require against a server without TLS fails instead of going plaintext', async () => {
    const { host, port, user, password } = pgInfo();
    const sluice = await startSluice(
      loadConfig({
        env: {},
        flags: {
          listen: '127.0.0.1:0',
          upstream: `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/postgres?sslmode=require`,
          auth: 'trust',
          log_level: 'silent',
          shutdown_timeout: 2,
        },
      }),
    );
    try {
      await expect(
        psql(`postgres://${user}@${sluice.host}:${sluice.port}/${db}`, ['-Atc', 'SELECT 1'], {
          PGSSLMODE: 'disable',
        }),
      ).rejects.toThrow(/does not support TLS \(sslmode=require\)/);
    } finally {
      await sluice.stop();
    }
  });
});

describe('the embedded default (no upstream)', () => {
  it('generates a self-signed pair once beside the data directory and serves verify-full clients', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'sluice-embedded-tls-'));
    // The embedded server may run as another user (under root): it must enter the directory.
    await chmod(root, 0o755);
    const start = () =>
      startSluice(
        loadConfig({
          env: {},
          flags: {
            listen: '127.0.0.1:0',
            auth: 'trust',
            log_level: 'silent',
            shutdown_timeout: 2,
            tls_required: true,
            embedded: { data_dir: path.join(root, 'data'), port: 0 },
          },
        }),
      );
    try {
      const first = await start();
      const cert = path.join(root, 'sluice-tls.crt');
      const pem = await readFile(cert, 'utf8');
      try {
        const url = `postgres://${first.upstream.user}@${first.host}:${first.port}/postgres?sslmode=verify-full&sslrootcert=${encodeURIComponent(cert)}`;
        expect(await psql(url, ['-Atc', 'SELECT 1'])).toBe('1\n');
        await expect(
          psql(
            `postgres://${first.upstream.user}@${first.host}:${first.port}/postgres`,
            ['-Atc', 'SELECT 1'],
            {
              PGSSLMODE: 'disable',
            },
          ),
        ).rejects.toThrow(/no encryption/);
      } finally {
        await first.stop();
      }
      const second = await start();
      await second.stop();
      expect(await readFile(cert, 'utf8')).toBe(pem);
      expect(((await stat(path.join(root, 'sluice-tls.key'))).mode & 0o777).toString(8)).toBe('600');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
