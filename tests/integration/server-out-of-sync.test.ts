// A server that sends a ReadyForQuery nobody was waiting for has lost count of what it owes: what
// it sends next may answer a request no client made. It must never serve another client (the
// fuzzer's canary once got an answer without its row through a pooled server).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pool, PoolWaiter } from '../../src/pool/pool.js';
import type { ServerConnection, ServerOwner } from '../../src/pool/server-connection.js';
import { createTestDatabase, dropTestDatabase, pgInfo } from './harness/database.js';
import { startProxy, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('out_of_sync');
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1 });
});

afterAll(async () => {
  await proxy?.stop();
  if (db) await dropTestDatabase(db);
});

function query(sql: string): Buffer {
  const body = Buffer.from(`${sql}\0`);
  const head = Buffer.alloc(5);
  head.write('Q', 0, 'latin1');
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

function acquire(pool: Pool): Promise<ServerConnection> {
  return new Promise((resolve, reject) => {
    const waiter: PoolWaiter = { onServerAcquired: resolve, onAcquireFailed: reject };
    pool.acquire(waiter);
  });
}

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
