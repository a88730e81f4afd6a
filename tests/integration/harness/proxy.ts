// Starts Sluice in-process on port 0 in front of the run's embedded PostgreSQL, and offers the
// small helpers integration tests share (connection strings, raw sockets, CLI tools).
import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { type RunningSluice, startSluice } from '../../../src/app.js';
import { loadConfig } from '../../../src/config/load.js';
import type { ConfigInput } from '../../../src/config/schema.js';
import type { Pool, PoolWaiter } from '../../../src/pool/pool.js';
import type { ServerConnection } from '../../../src/pool/server-connection.js';
import { pgInfo } from './database.js';

export const execFileAsync = promisify(execFile);

export interface TestProxy {
  sluice: RunningSluice;
  host: string;
  port: number;
  /** Connection string for `database` as the superuser (password included). */
  url(database: string, user?: string, password?: string): string;
  stop(): Promise<void>;
}

/** Starts a proxy whose upstream is the embedded server; `overrides` are config-file keys. */
export async function startProxy(overrides: Partial<ConfigInput> = {}): Promise<TestProxy> {
  const pg = pgInfo();
  const config = loadConfig({
    env: {},
    flags: {
      listen: '127.0.0.1:0',
      upstream: `postgres://${pg.user}:${encodeURIComponent(pg.password)}@${pg.host}:${pg.port}/postgres`,
      auth: 'trust',
      log_level: process.env.SLUICE_TEST_LOG_LEVEL ?? 'warn',
      shutdown_timeout: 5,
      ...overrides,
    },
  });
  const sluice = await startSluice(config);
  return {
    sluice,
    host: sluice.host,
    port: sluice.port,
    url(database, user = pg.user, password = pg.password) {
      return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${sluice.host}:${sluice.port}/${database}`;
    },
    stop: () => sluice.stop(),
  };
}

/** A raw TCP connection to the proxy, for speaking the protocol by hand. */
export function rawConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Collects everything the peer sends until it closes (or `ms` elapse). */
export function readUntilClose(socket: Socket, ms = 5000): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(Buffer.concat(chunks));
    }, ms);
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

/** Finds the first ErrorResponse in a byte stream and returns its fields by code letter. */
export function firstError(bytes: Buffer): Record<string, string> | undefined {
  let pos = 0;
  while (pos + 5 <= bytes.length) {
    const type = bytes[pos]!;
    const length = bytes.readInt32BE(pos + 1);
    if (type === 0x45) {
      const fields: Record<string, string> = {};
      let p = pos + 5;
      const end = pos + 1 + length;
      while (p < end && bytes[p] !== 0) {
        const nul = bytes.indexOf(0, p + 1);
        fields[String.fromCharCode(bytes[p]!)] = bytes.toString('utf8', p + 1, nul);
        p = nul + 1;
      }
      return fields;
    }
    if (length < 4) return undefined;
    pos += 1 + length;
  }
  return undefined;
}

/** A StartupMessage for protocol 3.0 with the given parameters. */
export function startupMessage(params: Record<string, string>, version = 196608): Buffer {
  const body = Buffer.concat([
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(version, 4);
  return Buffer.concat([head, body]);
}

/** One frontend message: its type byte, its length, its body. */
export function frontendFrame(type: string, body: Buffer | string = ''): Buffer {
  const b = Buffer.from(body);
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(4 + b.length, 1);
  return Buffer.concat([head, b]);
}

/** A simple Query message. */
export const simpleQueryFrame = (sql: string): Buffer => frontendFrame('Q', `${sql}\0`);

/**
 * Reads whole backend messages off a raw socket, keeping what follows for the next call: the
 * returned function resolves with the types read up to and with one of type `until`.
 */
export function messageReader(socket: Socket): (until: string) => Promise<string[]> {
  let buf = Buffer.alloc(0);
  const waiting: (() => void)[] = [];
  socket.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    for (const w of waiting.splice(0)) w();
  });
  return async (until) => {
    const types: string[] = [];
    const deadline = Date.now() + 5000;
    for (;;) {
      while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const type = String.fromCharCode(buf[0]!);
        buf = buf.subarray(1 + buf.readInt32BE(1));
        types.push(type);
        if (type === until) return types;
      }
      if (Date.now() > deadline) throw new Error(`no ${until} after ${types.join(' ')}`);
      await new Promise<void>((r) => {
        waiting.push(r);
        setTimeout(r, 100);
      });
    }
  };
}

/** A server connection straight from a pool, as a client session would get one. */
export function acquireServer(pool: Pool): Promise<ServerConnection> {
  return new Promise((resolve, reject) => {
    const waiter: PoolWaiter = { onServerAcquired: resolve, onAcquireFailed: reject };
    pool.acquire(waiter);
  });
}

/** Runs psql against a connection string; resolves stdout, rejects with stderr in the error. */
export async function psql(url: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const { stdout } = await execFileAsync('psql', [url, '-X', '-v', 'ON_ERROR_STOP=1', ...args], {
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout;
}
