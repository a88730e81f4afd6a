// The extended query protocol spoken by hand (pg-protocol's serialize over a socket) where drivers
// cannot express it: pipelined Syncs, Flush without Sync, an error mid-batch, COPY inside a
// transaction, CopyFail, LISTEN through Parse/Bind/Execute, a statement re-parsed after DDL. Each
// reply stream through a transaction pool of 1 is compared byte for byte with the same messages
// sent straight to PostgreSQL.
import { connect, type Socket } from 'node:net';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScramClientSession } from '../../src/protocol/scram.js';
import { createTestDatabase, directClient, dropTestDatabase, pgInfo } from './harness/database.js';
import { startProxy, startupMessage, type TestProxy } from './harness/proxy.js';

let db: string;
let proxy: TestProxy;

beforeAll(async () => {
  db = await createTestDatabase('extended_protocol');
  const c = await directClient(db);
  await c.query(`
    create table ticks(id int primary key, px numeric not null);
    insert into ticks values (1, 100.5), (2, 101.25);
    create table fills(id int, qty int);
    create table shape(id int primary key, v int not null);
    insert into shape values (1, 10);`);
  await c.end();
  proxy = await startProxy({ pool_mode: 'transaction', pool_size: 1, query_wait_timeout: 10 });
});

afterAll(async () => {
  await proxy.stop();
  await dropTestDatabase(db);
});

interface Frame {
  type: string;
  bytes: Buffer;
}

/** A logged-in protocol-3 connection that collects reply frames. */
class Wire {
  private data = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.data = Buffer.concat([this.data, d]);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => {});
  }

  static async open(port: number, direct: boolean): Promise<Wire> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
      s.once('error', reject);
    });
    const wire = new Wire(socket);
    const { user, password } = pgInfo();
    socket.write(startupMessage({ user, database: db }));
    let scram: ScramClientSession | undefined;
    for (;;) {
      const f = await wire.next();
      if (f.type === 'Z') break;
      if (f.type === 'E') throw new Error(`login failed: ${f.bytes.toString('latin1')}`);
      if (f.type !== 'R' || !direct) continue;
      const code = f.bytes.readInt32BE(5);
      if (code === 10) {
        scram = new ScramClientSession(password);
        socket.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
      } else if (code === 11) {
        socket.write(
          serialize.sendSCRAMClientFinalMessage(scram!.handleServerFirst(f.bytes.toString('utf8', 9))),
        );
      }
    }
    return wire;
  }

  send(...messages: Buffer[]): void {
    this.socket.write(Buffer.concat(messages));
  }

  /** The next whole frame (waits up to 5 s). */
  async next(ms = 5000): Promise<Frame> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.data.length >= 5) {
        const length = this.data.readInt32BE(1);
        if (this.data.length >= 1 + length) {
          const bytes = Buffer.from(this.data.subarray(0, 1 + length));
          this.data = this.data.subarray(1 + length);
          return { type: String.fromCharCode(bytes[0]!), bytes };
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no reply in time');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Frames up to and including the `count`-th ReadyForQuery. */
  async untilReady(count = 1): Promise<Frame[]> {
    const frames: Frame[] = [];
    let seen = 0;
    while (seen < count) {
      const f = await this.next();
      frames.push(f);
      if (f.type === 'Z') seen++;
    }
    return frames;
  }

  /** Frames until one of type `type` (included). */
  async until(type: string): Promise<Frame[]> {
    const frames: Frame[] = [];
    for (;;) {
      const f = await this.next();
      frames.push(f);
      if (f.type === type) return frames;
    }
  }

  /** True when nothing arrives within `ms`. */
  async quiet(ms: number): Promise<boolean> {
    const before = this.data.length;
    await new Promise((r) => setTimeout(r, ms));
    return this.data.length === before;
  }

  close(): void {
    this.socket.end(serialize.end());
  }
}

const proxyWire = () => Wire.open(proxy.port, false);
const directWire = () => Wire.open(pgInfo().port, true);

/** Runs the same conversation through Sluice and directly; returns both reply streams. */
async function both(talk: (w: Wire) => Promise<Frame[]>): Promise<{ through: Frame[]; direct: Frame[] }> {
  const a = await proxyWire();
  const b = await directWire();
  try {
    return { through: await talk(a), direct: await talk(b) };
  } finally {
    a.close();
    b.close();
  }
}

const types = (frames: Frame[]) => frames.map((f) => f.type).join('');
const bytesOf = (frames: Frame[]) => Buffer.concat(frames.map((f) => f.bytes));
function errorCode(frames: Frame[]): string | undefined {
  const e = frames.find((f) => f.type === 'E');
  if (!e) return undefined;
  const text = e.bytes.toString('utf8', 5);
  return /(?:^|\0)C([0-9A-Z]{5})\0/.exec(text)?.[1];
}

/** Another client of the pool of 1, logged in: its query runs only once the server is free. */
async function otherClient(): Promise<{ query(): Promise<number> }> {
  const c = new pg.Client({ connectionString: proxy.url(db) });
  c.on('error', () => {});
  await c.connect();
  return {
    query: () =>
      c
        .query('select 1 as one')
        .then((r) => r.rows[0].one as number)
        .finally(() => c.end()),
  };
}

describe('extended protocol through a transaction pool of 1, compared with PostgreSQL', () => {
  it('answers five pipelined Syncs, one of them failing, exactly as PostgreSQL does', async () => {
    const batch = (i: number) => [
      serialize.parse({ text: i === 2 ? 'select 1/0' : `select ${i} as n, px from ticks order by id` }),
      serialize.bind({}),
      serialize.describe({ type: 'P' }),
      serialize.execute({}),
      serialize.sync(),
    ];
    const { through, direct } = await both(async (w) => {
      w.send(...[0, 1, 2, 3, 4].flatMap(batch));
      return w.untilReady(5);
    });
    expect(types(through)).toBe(types(direct));
    expect(errorCode(through)).toBe('22012');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
  });

  it('takes a named Parse that follows another message in the same write while a server is free', async () => {
    // The Close goes out first and gets the free server at once; the Parse after it, deferred
    // for want of a server a moment before, must still be resolved for that server (this crashed
    // the process before).
    const { through, direct } = await both(async (w) => {
      w.send(
        serialize.close({ type: 'S', name: 'not_there' }),
        serialize.parse({ name: 'after_close', text: 'select id from ticks order by id' }),
        serialize.bind({ statement: 'after_close' }),
        serialize.execute({}),
        serialize.sync(),
      );
      return w.untilReady();
    });
    expect(types(through)).toBe('312DDCZ');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
  });

  it('answers a Flush without Sync at once and keeps the server until the Sync', async () => {
    const { through, direct } = await both(async (w) => {
      w.send(
        serialize.parse({ text: 'select id from ticks order by id' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.flush(),
      );
      const before = await w.until('C');
      w.send(serialize.sync());
      return [...before, ...(await w.untilReady())];
    });
    expect(types(through)).toBe('12DDCZ');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);

    // Between the Flush and the Sync the only server stays with the client: another client waits.
    const w = await proxyWire();
    const other = await otherClient();
    w.send(
      serialize.parse({ text: 'select 1' }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.flush(),
    );
    await w.until('C');
    const done = other.query();
    const early = await Promise.race([
      done.then(() => 'ran'),
      new Promise((r) => setTimeout(() => r('waited'), 300)),
    ]);
    expect(early).toBe('waited');
    w.send(serialize.sync());
    expect((await w.untilReady()).at(-1)!.bytes[5]).toBe(0x49);
    expect(await done).toBe(1);
    w.close();
  });

  it('skips to Sync after an error mid-batch and hands the server back clean', async () => {
    const { through, direct } = await both(async (w) => {
      w.send(
        serialize.parse({ text: 'insert into fills values (1, 1)' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ text: 'select * from no_such_table' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ text: 'insert into fills values (2, 2)' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.sync(),
        serialize.query('select count(*) from fills'),
      );
      return w.untilReady(2);
    });
    expect(types(through)).toBe('12CEZTDCZ');
    expect(errorCode(through)).toBe('42P01');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
    // Nothing of the failed batch was committed, on either path.
    const c = await directClient(db);
    expect((await c.query('select count(*)::int as n from fills')).rows[0].n).toBe(0);
    await c.end();
    // The server went back idle: the next client gets it outside any transaction.
    const next = await proxyWire();
    next.send(serialize.query('select now() = statement_timestamp() as fresh'));
    const frames = await next.untilReady();
    expect(frames.find((f) => f.type === 'D')!.bytes.toString('latin1')).toContain('t');
    expect(frames.at(-1)!.bytes[5]).toBe(0x49);
    next.close();
  });

  it('runs COPY FROM STDIN inside a transaction and ends it with the client’s COMMIT', async () => {
    const { through, direct } = await both(async (w) => {
      w.send(serialize.query('begin'));
      const frames = await w.untilReady();
      w.send(serialize.query('copy fills from stdin'));
      frames.push(...(await w.until('G')));
      w.send(serialize.copyData(Buffer.from('10\t1\n11\t2\n')), serialize.copyDone());
      frames.push(...(await w.untilReady()));
      w.send(serialize.query('select count(*) from fills where id >= 10'), serialize.query('rollback'));
      frames.push(...(await w.untilReady(2)));
      return frames;
    });
    expect(types(through)).toBe('CZGCZTDCZCZ');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
  });

  it('answers CopyFail with PostgreSQL’s 57014, in and out of a transaction, and goes on', async () => {
    const { through, direct } = await both(async (w) => {
      w.send(serialize.query('copy fills from stdin'));
      const frames = await w.until('G');
      w.send(serialize.copyData(Buffer.from('20\t1\n')), serialize.copyFail('bot changed its mind'));
      frames.push(...(await w.untilReady()));
      w.send(serialize.query('begin'), serialize.query('copy fills from stdin'));
      frames.push(...(await w.untilReady()), ...(await w.until('G')));
      w.send(serialize.copyFail('again'));
      frames.push(...(await w.untilReady()));
      w.send(serialize.query('rollback'), serialize.query('select count(*) from fills where id >= 20'));
      frames.push(...(await w.untilReady(2)));
      return frames;
    });
    expect(types(through)).toBe('GEZCZGEZCZTDCZ');
    expect(errorCode(through)).toBe('57014');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
  });
});

describe('LISTEN through the extended protocol', () => {
  it('is answered by the listen hub with PostgreSQL’s replies, without pinning, and notifications arrive', async () => {
    const { pinningStats } = await import('../../src/server/client-session.js');
    const pinnedBefore = pinningStats.pinned;
    const talk = async (w: Wire) => {
      // asyncpg's add_listener: prepare (Parse, Describe, Flush), then Bind, Execute, Sync.
      w.send(
        serialize.parse({ name: 'listen_stmt', text: 'LISTEN "Ticks"' }),
        serialize.describe({ type: 'S', name: 'listen_stmt' }),
        serialize.flush(),
      );
      const frames = await w.until('n');
      w.send(serialize.bind({ statement: 'listen_stmt' }), serialize.execute({}), serialize.sync());
      frames.push(...(await w.untilReady()));
      // pgJDBC-style: unnamed statement, Describe portal, all in one write.
      w.send(
        serialize.parse({ text: 'LISTEN other' }),
        serialize.bind({}),
        serialize.describe({ type: 'P' }),
        serialize.execute({}),
        serialize.sync(),
      );
      frames.push(...(await w.untilReady()));
      return frames;
    };
    const { through, direct } = await both(talk);
    expect(types(through)).toBe('1tn2CZ12nCZ');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
    expect(pinningStats.pinned).toBe(pinnedBefore);

    const w = await proxyWire();
    await talk(w);
    const sender = await directClient(db);
    await sender.query(`notify "Ticks", 'a'`);
    await sender.query(`notify other, 'b'`);
    await sender.end();
    const a = await w.next();
    const b = await w.next();
    expect([a.type, b.type]).toEqual(['A', 'A']);
    expect(a.bytes.toString('utf8', 9)).toBe('Ticks\0a\0');
    expect(b.bytes.toString('utf8', 9)).toBe('other\0b\0');
    // The same statement bound again (UNLISTEN needs its own): the hub answers again.
    w.send(serialize.bind({ statement: 'listen_stmt' }), serialize.execute({}), serialize.sync());
    expect(types(await w.untilReady())).toBe('2CZ');
    expect(pinningStats.pinned).toBe(pinnedBefore);
    w.close();
  });

  it('hands a batch with LISTEN and another statement to a server, with the replies PostgreSQL gives', async () => {
    const { pinningStats } = await import('../../src/server/client-session.js');
    const pinnedBefore = pinningStats.pinned;
    const { through, direct } = await both(async (w) => {
      w.send(
        serialize.parse({ name: 'l2', text: 'LISTEN mixed' }),
        serialize.describe({ type: 'S', name: 'l2' }),
        serialize.flush(),
      );
      const frames = await w.until('n');
      w.send(
        serialize.bind({ statement: 'l2' }),
        serialize.execute({}),
        serialize.parse({ text: 'select 7 as seven' }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.sync(),
      );
      frames.push(...(await w.untilReady()));
      return frames;
    });
    expect(types(through)).toBe('1tn2C12DCZ');
    expect(bytesOf(through).equals(bytesOf(direct))).toBe(true);
    // The LISTEN ran on the client's server: it keeps that server.
    expect(pinningStats.pinned).toBe(pinnedBefore + 1);
  });
});

describe('a statement re-parsed after result-type-changing DDL', () => {
  it('answers 0A000 where the Bind was, executes nothing, and answers the re-prepared statement', async () => {
    const w = await proxyWire();
    // Prepared and described by the client (as asyncpg does), then executed without Describe.
    w.send(
      serialize.parse({ name: 'shape_all', text: 'select * from shape order by id' }),
      serialize.describe({ type: 'S', name: 'shape_all' }),
      serialize.sync(),
    );
    expect(types(await w.untilReady())).toBe('1tTZ');
    // DDL through Sluice bumps the schema epoch; the server's copy is then re-parsed and checked.
    const ddl = await proxyWire();
    ddl.send(serialize.query('alter table shape alter column v type bigint'));
    await ddl.untilReady();
    ddl.close();
    w.send(
      serialize.bind({ statement: 'shape_all' }),
      serialize.execute({}),
      serialize.sync(),
      serialize.parse({ text: 'insert into fills values (99, 99)' }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.sync(),
    );
    const frames = await w.untilReady(2);
    // No DataRow of the new type: the error stands where BindComplete would be.
    expect(types(frames)).toBe('EZ12CZ');
    expect(errorCode(frames)).toBe('0A000');
    expect(frames[0]!.bytes.toString('utf8')).toContain('cached plan must not change result type');
    expect(frames[0]!.bytes.toString('utf8')).toContain('RevalidateCachedQuery');
    // Still PostgreSQL's answer for that statement; a new one sees the new type.
    w.send(serialize.bind({ statement: 'shape_all' }), serialize.execute({}), serialize.sync());
    expect(errorCode(await w.untilReady())).toBe('0A000');
    w.send(
      serialize.parse({ name: 'shape_all_2', text: 'select * from shape order by id' }),
      serialize.bind({ statement: 'shape_all_2' }),
      serialize.execute({}),
      serialize.sync(),
    );
    const fresh = await w.untilReady();
    expect(types(fresh)).toBe('12DCZ');
    // int8 10 in text: the value's length word is 2.
    expect(fresh[2]!.bytes.subarray(7).equals(Buffer.from([0, 0, 0, 1, 0x31, 0, 0, 0, 2, 0x31, 0x30]))).toBe(
      true,
    );
    w.close();
  });
});
