// A server that sends a ReadyForQuery nobody was waiting for has lost count of what it owes: what
// it sends next may answer a request no client made. It must never serve another client (the
// fuzzer's canary once got an answer without its row through a pooled server).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pool } from '../../src/pool/pool.js';
import type { ServerOwner } from '../../src/pool/server-connection.js';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  acquireServer as acquire,
  frontendFrame,
  rawConnect,
  messageReader as reader,
  simpleQueryFrame,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('out_of_sync');
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1 });
  const c = await directClient(db);
  await c.query('create table copied (note text)');
  await c.end();
});

afterAll(async () => {
  await proxy?.stop();
  if (db) await dropTestDatabase(db);
});

const frame = frontendFrame;
const query = simpleQueryFrame;

const readies = (chunks: Buffer[]) => {
  const all = Buffer.concat(chunks);
  let n = 0;
  for (let pos = 0; pos + 5 <= all.length; pos += 1 + all.readInt32BE(pos + 1)) if (all[pos] === 0x5a) n++;
  return n;
};

/** An owner that believes one request is out: it lets go at the first ReadyForQuery. */
function oneRequestOwner(pool: Pool, received: Buffer[], released: () => void): ServerOwner {
  return {
    writeToClient: (chunk) => {
      received.push(Buffer.from(chunk));
      return true;
    },
    onReadyForQuery: () => true,
    onServerReleasable: (server) => {
      pool.release(server, true);
      released();
    },
    onCopyInResponse: () => {},
    onParseOrCloseComplete: () => false,
    onParameterDescription: () => false,
    onStatementDescription: () => {},
    onServerError: () => undefined,
    onServerParameterStatus: () => {},
    onServerLost: () => {},
  };
}

describe('a server with a ReadyForQuery too many', () => {
  it('is discarded, not handed to the next client, and the client gets nothing past its answer', async () => {
    const pool = proxy.sluice.pools.get(db, pgInfo().user);
    const server = await acquire(pool);
    const received: Buffer[] = [];
    let released!: () => void;
    const wasReleased = new Promise<void>((r) => {
      released = r;
    });
    server.attach(oneRequestOwner(pool, received, released));
    // Two requests while the owner counts one: the second ReadyForQuery belongs to nobody.
    server.write(Buffer.concat([query('select 1'), query('select pg_sleep(0.05)')]));
    await wasReleased;
    for (let i = 0; i < 100 && !server.closed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(server.outOfSync).toBe(true);
    expect(server.closed).toBe(true);
    expect(readies(received)).toBe(1);

    // The pool opens a fresh server for the next client, whose answer is its own.
    const next = await acquire(pool);
    expect(next).not.toBe(server);
    expect(next.outOfSync).toBe(false);
    pool.release(next, true);
  });
});

describe('Syncs sent during COPY IN', () => {
  it.each([
    ['after the CopyInResponse', false],
    ['pipelined with the COPY itself', true],
  ])(
    'leave the server out of service, sent %s: whether they are answered is a race with the COPY error',
    async (_when, pipelined) => {
      const { user } = pgInfo();
      const socket = await rawConnect(proxy.port);
      const read = reader(socket);
      try {
        socket.write(startupMessage({ user, database: db }));
        await read('Z');
        socket.write(query('select pg_backend_pid()'));
        await read('Z');
        // The only server of the pool: whose backend is it?
        const first = await directClient(db);
        const { rows } = await first.query<{ pid: number }>(
          "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'",
        );
        await first.end();
        expect(rows).toHaveLength(1);
        const copyPid = rows[0]!.pid;
        // Two columns for a one-column table: the COPY fails on this row, and PostgreSQL answers
        // the Syncs behind it that it reads after the error.
        const badRowAndSyncs = Buffer.concat([frame('d', 'a\tb\n'), frame('S', ''), frame('S', '')]);
        if (pipelined) {
          socket.write(Buffer.concat([query('copy copied from stdin'), badRowAndSyncs]));
        } else {
          socket.write(query('copy copied from stdin'));
          expect(await read('G')).toContain('G');
          socket.write(badRowAndSyncs);
        }
        const reply = await read('Z');
        expect(reply).toContain('E');

        const next = new pg.Client({ host: proxy.host, port: proxy.port, user, database: db });
        await next.connect();
        try {
          for (let i = 0; i < 5; i++) {
            const r = await next.query<{ pid: number; n: number }>(
              'select pg_backend_pid() as pid, $1::int as n',
              [i],
            );
            expect(r.rows).toEqual([{ pid: r.rows[0]!.pid, n: i }]);
            expect(r.rows[0]!.pid).not.toBe(copyPid);
          }
        } finally {
          await next.end();
        }
      } finally {
        socket.destroy();
      }
    },
  );
});
