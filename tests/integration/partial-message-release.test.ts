// A server holding the first part of a client's message must never serve another client: the
// next client's bytes would complete that message, and PostgreSQL would read the rest as garbage
// (the fuzzer's canary once got "invalid frontend message type 101" that way).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  acquireServer as acquire,
  frontendFrame,
  messageReader,
  rawConnect,
  simpleQueryFrame,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('partial_message');
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1 });
});

afterAll(async () => {
  await proxy?.stop();
  if (db) await dropTestDatabase(db);
});

async function backendPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
  return rows[0]!.pid;
}

describe('a server with part of a client message written to it', () => {
  it('is closed when released as clean, and the next client gets a fresh one', async () => {
    const pool = proxy.sluice.pools.get(db, pgInfo().user);
    const server = await acquire(pool);
    const pid = server.backendProcessId;
    // The first 40 bytes of a 155-byte CopyData: PostgreSQL ignores CopyData outside COPY, so
    // nothing answers it and nothing else marks the server as unusable.
    const copyData = frontendFrame('d', 'x'.repeat(150));
    server.write(copyData.subarray(0, 40));
    expect(server.sentPartialMessage).toBe(true);
    pool.release(server, true);
    for (let i = 0; i < 100 && !server.closed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(server.closed).toBe(true);

    const next = await acquire(pool);
    try {
      expect(next).not.toBe(server);
      expect(next.backendProcessId).not.toBe(pid);
      expect(next.sentPartialMessage).toBe(false);
    } finally {
      pool.release(next, true);
    }
  });

  it('a whole message after the partial one puts the server back at a boundary', async () => {
    const pool = proxy.sluice.pools.get(db, pgInfo().user);
    const server = await acquire(pool);
    const copyData = frontendFrame('d', 'x'.repeat(150));
    server.write(copyData.subarray(0, 40));
    server.write(Buffer.concat([copyData.subarray(40), simpleQueryFrame('select 1')]));
    expect(server.sentPartialMessage).toBe(false);
    pool.release(server, false);
  });

  it('through Sluice: a client that leaves mid-message costs its server, not the next client', async () => {
    const { user } = pgInfo();
    const socket = await rawConnect(proxy.port);
    const read = messageReader(socket);
    let firstPid: number;
    try {
      socket.write(startupMessage({ user, database: db }));
      await read('Z');
      socket.write(simpleQueryFrame('select pg_backend_pid()'));
      await read('Z');
      const probe = await acquireAndRelease();
      firstPid = probe;
      // A FunctionCall for a function that does not exist (answered with an error and
      // ReadyForQuery), then the first part of a CopyData, the rest of which never comes.
      const call = Buffer.alloc(10);
      call.writeInt32BE(258, 0);
      const copyData = frontendFrame('d', 'x'.repeat(150));
      socket.write(Buffer.concat([frontendFrame('F', call), copyData.subarray(0, 98)]));
      expect(await read('Z')).toEqual(['E', 'Z']);
    } finally {
      socket.destroy();
    }
    const next = new pg.Client({ host: proxy.host, port: proxy.port, user, database: db });
    await next.connect();
    try {
      for (let i = 0; i < 3; i++) {
        const r = await next.query<{ n: number }>('select $1::int as n', [i]);
        expect(r.rows).toEqual([{ n: i }]);
      }
      expect(await backendPid(next)).not.toBe(firstPid);
    } finally {
      await next.end();
    }
  });
});

describe('a client failed on a message right after finishing a part-sent one', () => {
  it('does not hand on its server: the rest of the message was read, never written', async () => {
    // The route the fuzzer's per-server trace showed: the head of a CopyData goes out, then a
    // chunk with its rest and a message type PostgreSQL does not know. Sluice refuses the client
    // (08P01) before forwarding that chunk, so its reader is at a boundary, the server is not.
    const { user } = pgInfo();
    const socket = await rawConnect(proxy.port);
    const read = messageReader(socket);
    const firstPid = await acquireAndRelease();
    try {
      socket.write(startupMessage({ user, database: db }));
      await read('Z');
      const copyData = frontendFrame('d', 'x'.repeat(150));
      socket.write(Buffer.concat([simpleQueryFrame('select 1'), copyData.subarray(0, 60)]));
      await read('Z');
      socket.write(Buffer.concat([copyData.subarray(60), frontendFrame('Z', '')]));
      expect(await read('E')).toEqual(['E']);
    } finally {
      socket.destroy();
    }
    // A swallowed query never gets an answer: fail in seconds, not at the test timeout.
    const next = new pg.Client({
      host: proxy.host,
      port: proxy.port,
      user,
      database: db,
      query_timeout: 5000,
    });
    await next.connect();
    try {
      const r = await next.query<{ n: number }>('select $1::int as n', [7]);
      expect(r.rows).toEqual([{ n: 7 }]);
      expect(await backendPid(next)).not.toBe(firstPid);
    } finally {
      await next.end();
    }
  });
});

/** The backend pid of the pool's only server, seen from outside while it is idle. */
async function acquireAndRelease(): Promise<number> {
  const pool = proxy.sluice.pools.get(db, pgInfo().user);
  const server = await acquire(pool);
  const pid = server.backendProcessId;
  pool.release(server, true);
  return pid;
}
