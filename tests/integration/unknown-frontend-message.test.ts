// A frontend message type PostgreSQL does not know, sent after login, is refused by Sluice itself
// (08P01 FATAL). Forwarded, PostgreSQL's FATAL for it would arrive after the ReadyForQuery that
// released the server, under the server's next client (the fuzzer's canary saw exactly that).
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  firstError,
  rawConnect,
  readUntilClose,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('unknown_msg');
  // One server: the next client necessarily gets the one the hostile client used.
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1 });
});

afterAll(async () => {
  await proxy?.stop();
  if (db) await dropTestDatabase(db);
});

function frame(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

it('answers 08P01 FATAL to an unknown message type after a query, and the next client is not hit', async () => {
  const { user } = pgInfo();
  const socket = await rawConnect(proxy.port);
  const readyAfterLogin = new Promise<void>((resolve) => {
    let seen = Buffer.alloc(0);
    const onData = (c: Buffer) => {
      seen = Buffer.concat([seen, c]);
      if (seen.includes(Buffer.from([0x5a, 0, 0, 0, 5]))) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
  });
  socket.write(startupMessage({ user, database: db }));
  await readyAfterLogin;
  const closed = readUntilClose(socket, 5000);
  // A Query, then a PasswordMessage ('p') that has no meaning after login, in one write.
  socket.write(Buffer.concat([frame('Q', Buffer.from('select 1\0')), frame('p', Buffer.from('secret\0'))]));
  const reply = await closed;
  const error = firstError(reply);
  expect(error?.C).toBe('08P01');
  expect(error?.S).toBe('FATAL');
  expect(error?.M).toMatch(/invalid frontend message type 112/);

  const { user: u, password } = pgInfo();
  for (let i = 0; i < 3; i++) {
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: u, password, database: db });
    c.on('error', () => {});
    await c.connect();
    const { rows } = await c.query<{ n: number }>('select pg_sleep(0.2), 9 as n');
    expect(rows[0]!.n).toBe(9);
    await c.end();
  }
});
