// The PostgreSQL 17.10 backend crash the fuzzer found (fuzz/repro/unnamed-portal-segv.mjs): an
// Execute of the unnamed portal a simple Query left behind when it failed inside BEGIN. Through
// Sluice the client gets PostgreSQL's own 34000 instead, the server does not restart, and mixing
// simple and extended queries (also pipelined, also ROLLBACK bound in the failed block) still works.
import type { Socket } from 'node:net';
import type pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { VARIANTS } from '../../fuzz/repro/unnamed-portal-segv.mjs';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import {
  frontendFrame,
  rawConnect,
  simpleQueryFrame,
  startProxy,
  startupMessage,
  type TestProxy,
} from './harness/proxy.js';

let db: string;
let proxy: TestProxy;
/** Straight to PostgreSQL: a crash-restart would terminate its backend. */
let bystander: pg.Client;
let bystanderPid: number;

beforeAll(async () => {
  db = await createTestDatabase('query_portal');
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 2 });
  bystander = await directClient(db);
  bystanderPid = (await bystander.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
});

afterAll(async () => {
  await bystander?.end().catch(() => {});
  await proxy?.stop();
  if (db) await dropTestDatabase(db);
});

const frame = frontendFrame;
const query = simpleQueryFrame;
const parse = (sql: string) => frame('P', Buffer.concat([Buffer.from(`\0${sql}\0`), Buffer.alloc(2)]));
const bind = () => frame('B', Buffer.alloc(8)); // unnamed portal and statement, no formats or values
const execute = () => frame('E', Buffer.alloc(5)); // unnamed portal, no row limit
const sync = () => frame('S', '');

interface Message {
  type: string;
  code?: string;
  /** ReadyForQuery's transaction status, CommandComplete's tag. */
  text?: string;
}

/** A logged-in raw client (Sluice's auth is trust) that reads whole messages. */
async function rawClient(): Promise<{ socket: Socket; until: (readies: number) => Promise<Message[]> }> {
  const socket = await rawConnect(proxy.port);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let closed = false;
  socket.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  const until = async (readies: number): Promise<Message[]> => {
    const out: Message[] = [];
    const deadline = Date.now() + 5000;
    while (readies > 0) {
      if (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const type = String.fromCharCode(buf[0]!);
        const body = buf.subarray(5, 1 + buf.readInt32BE(1));
        buf = buf.subarray(1 + body.length + 4);
        const m: Message = { type };
        if (type === 'E') m.code = /C([0-9A-Z]{5})/.exec(body.toString('latin1'))?.[1];
        if (type === 'Z') {
          m.text = String.fromCharCode(body[0]!);
          readies--;
        }
        if (type === 'C') m.text = body.toString('utf8', 0, body.length - 1);
        out.push(m);
        continue;
      }
      if (closed) throw new Error(`connection closed after ${JSON.stringify(out)}`);
      if (Date.now() > deadline) throw new Error(`no answer in time after ${JSON.stringify(out)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return out;
  };
  socket.write(startupMessage({ user: pgInfo().user, database: db }));
  const login = await until(1);
  expect(login.at(-1)).toEqual({ type: 'Z', text: 'I' });
  return { socket, until };
}

const readies = (frames: Buffer[]) => frames.filter((f) => f[0] === 0x51 || f[0] === 0x53).length;

async function expectPostgresUntouched(): Promise<void> {
  // Same backend as before: a crash-restart terminates every connection.
  const { rows } = await bystander.query<{ pid: number }>('select pg_backend_pid() as pid');
  expect(rows[0]!.pid).toBe(bystanderPid);
}

/** The client leaves the failed block and queries again; PostgreSQL never restarted. */
async function expectRecovered(
  socket: Socket,
  until: (readies: number) => Promise<Message[]>,
): Promise<void> {
  socket.write(Buffer.concat([query('rollback'), query('select 1')]));
  const after = await until(2);
  expect(after.filter((m) => m.type === 'C').map((m) => m.text)).toEqual(['ROLLBACK', 'SELECT 1']);
  await expectPostgresUntouched();
}

it.each(Object.entries(VARIANTS))(
  'answers 34000 to the Execute after a failed Query in a block, PostgreSQL survives (%s)',
  async (_name, frames: Buffer[]) => {
    const { socket, until } = await rawClient();
    try {
      socket.write(Buffer.concat(frames));
      const replies = await until(readies(frames));
      const errors = replies.filter((m) => m.type === 'E').map((m) => m.code);
      // BEGIN, the failing statement, 25P02 for the Query, then PostgreSQL's own answer to the Execute.
      expect(errors.at(-1)).toBe('34000');
      expect(errors).toHaveLength(3);
      expect(replies.filter((m) => m.type === '3')).toEqual([]);
      expect(replies.at(-1)).toEqual({ type: 'Z', text: 'E' });
      await expectRecovered(socket, until);
    } finally {
      socket.destroy();
    }
  },
);

it('still runs a ROLLBACK bound in the failed block, and a pipelined Query + extended query', async () => {
  const { socket, until } = await rawClient();
  try {
    // The Close goes before the Bind, so the portal bound to ROLLBACK is the one executed.
    socket.write(Buffer.concat([query('begin'), query('lock table query_portal_missing')]));
    await until(2);
    socket.write(Buffer.concat([parse('rollback'), bind(), execute(), sync()]));
    const rollback = await until(1);
    expect(rollback.map((m) => m.type)).toEqual(['1', '2', 'C', 'Z']);
    expect(rollback[2]!.text).toBe('ROLLBACK');
    expect(rollback[3]!.text).toBe('I');

    // Pipelined: the Query's answer is not in when the Bind goes out, so a Close goes before it;
    // its CloseComplete is Sluice's, never the client's.
    const frames = [query('select 1'), parse('select 2'), bind(), execute(), sync()];
    socket.write(Buffer.concat(frames));
    const replies = await until(2);
    expect(replies.map((m) => m.type)).toEqual(['T', 'D', 'C', 'Z', '1', '2', 'D', 'C', 'Z']);
    await expectPostgresUntouched();
  } finally {
    socket.destroy();
  }
});

it('closes again in a later batch: an error earlier in its own batch makes PostgreSQL skip the Close', async () => {
  // The live fuzzer's route past the first guard (a per-server trace matched to the crashed PID):
  // in the failed block, a Parse fails, so PostgreSQL skips everything up to the Sync, the
  // guard's Close included; an Execute of "" after that Sync, with no Bind, then still found the
  // failed Query's portal.
  const { socket, until } = await rawClient();
  try {
    const frames = [
      query('begin'),
      query('lock table query_portal_missing'),
      query('select 1'),
      parse('select 2'),
      bind(),
      execute(),
      sync(),
      execute(),
      sync(),
    ];
    socket.write(Buffer.concat(frames));
    const replies = await until(readies(frames));
    const errors = replies.filter((m) => m.type === 'E').map((m) => m.code);
    // BEGIN ok; 42P01 for the LOCK; 25P02 for the Query and for the Parse; then the lone
    // Execute gets PostgreSQL's 34000: no portal left to run.
    expect(errors).toEqual(['42P01', '25P02', '25P02', '34000']);
    expect(replies.at(-1)).toEqual({ type: 'Z', text: 'E' });
    await expectRecovered(socket, until);
  } finally {
    socket.destroy();
  }
});

it('closes even while a pipelined COPY IN looks open: the COPY had already ended on the server', async () => {
  // The fuzzer's second route: the client pipelined COPY FROM STDIN with its CopyDone, so the
  // CopyInResponse came back after the COPY's end had gone out. Sluice took the client to be in
  // COPY IN and skipped the Close, and the Execute met the failed Query's portal.
  const { socket, until } = await rawClient();
  const c = await directClient(db);
  try {
    await c.query('create table if not exists query_portal_copied (note text)');
    const frames = [
      query('copy query_portal_copied from stdin'),
      frame('c', ''),
      query('begin'),
      // A utility statement that fails while executing, slowly: the Execute goes out meanwhile.
      query("do $$ begin perform pg_sleep(0.3); raise exception 'boom'; end $$"),
    ];
    socket.write(Buffer.concat(frames));
    const first = await until(2);
    expect(first.filter((m) => m.type === 'C').map((m) => m.text)).toEqual(['COPY 0', 'BEGIN']);
    socket.write(Buffer.concat([query('select 1'), execute(), sync()]));
    const replies = await until(3);
    const errors = replies.filter((m) => m.type === 'E').map((m) => m.code);
    expect(errors).toEqual(['P0001', '25P02', '34000']);
    socket.write(query('rollback'));
    await until(1);
    await expectPostgresUntouched();
  } finally {
    await c.end();
    socket.destroy();
  }
});
