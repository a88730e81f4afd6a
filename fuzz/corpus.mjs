// Owns the fuzzer's seed sessions: real frontend byte streams built with pg-protocol's serializer
// (the one node-postgres sends), for the startup phase, the auth replies and post-login traffic.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { serialize } = require('pg-protocol');

export const FUZZ_TABLE = 'fuzz_t';

/** A clean query sent after each mutated stream: its answer ends the session early. */
export const MARKER = 'sluice-fuzz-marker';

/** Startup-phase packets (untyped: int32 length first), each a seed of its own. */
export function startupSeeds(user, database) {
  const gss = Buffer.alloc(8);
  gss.writeInt32BE(8, 0);
  gss.writeInt32BE(80877104, 4);
  const v31 = Buffer.from(serialize.startup({ user, database }));
  v31.writeInt32BE(196609, 4);
  const pq = startupWith({ user, database, '_pq_.fuzz': 'on' });
  return [
    [serialize.startup({ user, database, application_name: 'fuzz', client_encoding: 'UTF8' })],
    [serialize.requestSsl(), serialize.startup({ user, database })],
    [gss, serialize.requestSsl(), serialize.startup({ user, database, options: '-c search_path=public' })],
    [serialize.cancel(12345, 67890)],
    [v31],
    [pq],
    [serialize.startup({ user, database, replication: 'database' })],
    [serialize.startup({ database })],
  ];
}

function startupWith(params) {
  const body = Buffer.concat([
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

/** Auth replies a client may send after the startup packet (SCRAM and md5 shapes). */
export function authSeeds() {
  const nonce = 'rOprNGfwEbeRWgbNEkqO';
  return [
    [serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', `n,,n=*,r=${nonce}`)],
    [
      serialize.sendSASLInitialResponseMessage(
        'SCRAM-SHA-256-PLUS',
        `p=tls-server-end-point,,n=*,r=${nonce}`,
      ),
    ],
    [
      serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', `n,,n=*,r=${nonce}`),
      serialize.sendSCRAMClientFinalMessage(`c=biws,r=${nonce}xyz,p=${Buffer.alloc(32).toString('base64')}`),
    ],
    [serialize.password('md5' + '0123456789abcdef0123456789abcdef')],
    [serialize.password('plaintext')],
    [serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', 'y,a=someone,n=*,r=x,e=ext')],
  ];
}

/** Post-login sessions: simple and extended queries, transactions, COPY, settings, Terminate. */
export function streamSeeds() {
  const t = FUZZ_TABLE;
  const ext = (name, text, values, types = []) => [
    serialize.parse({ name, text, types }),
    serialize.bind({ statement: name, values }),
    serialize.describe({ type: 'P', name: '' }),
    serialize.execute({ portal: '', rows: 0 }),
    serialize.sync(),
  ];
  return [
    [serialize.query('select 1')],
    [serialize.query(`select id, note from ${t} where id = 1`)],
    [serialize.query(`insert into ${t} (note) values ('fuzz') returning id`)],
    [serialize.query(`begin; update ${t} set note = 'x' where id = 2; commit`)],
    [serialize.query('begin'), serialize.query(`select count(*) from ${t}`)],
    [serialize.query("set TimeZone = 'Asia/Tokyo'"), serialize.query('show TimeZone')],
    [serialize.query('set statement_timeout = 1000'), serialize.query('select 2')],
    [serialize.query('')],
    [serialize.query('select 1; select 2; selec 3')],
    [
      serialize.query(`copy ${t} (note) from stdin`),
      serialize.copyData(Buffer.from('a\nb\n')),
      serialize.copyDone(),
    ],
    [
      serialize.query(`copy ${t} (note) from stdin`),
      serialize.copyData(Buffer.from('c\n')),
      serialize.copyFail('no'),
    ],
    [serialize.query(`copy (select * from ${t} limit 3) to stdout`)],
    ext('', 'select $1::int + 1', ['41']),
    ext('s1', `select note from ${t} where id = $1`, ['1'], [23]),
    [
      serialize.parse({ name: 's2', text: 'select $1::text', types: [] }),
      serialize.describe({ type: 'S', name: 's2' }),
      serialize.flush(),
      serialize.bind({ statement: 's2', values: ['x'], binary: true }),
      serialize.execute({ portal: '', rows: 1 }),
      serialize.close({ type: 'S', name: 's2' }),
      serialize.sync(),
    ],
    [
      serialize.parse({ name: '', text: 'begin', types: [] }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ name: '', text: `insert into ${t} (note) values ($1)`, types: [] }),
      serialize.bind({ values: ['ext'] }),
      serialize.execute({}),
      serialize.sync(),
    ],
    [serialize.query('listen fuzz_chan'), serialize.query("notify fuzz_chan, 'hi'")],
    [serialize.query('select pg_try_advisory_lock(42); select pg_advisory_unlock(42)')],
    [serialize.query('create temp table tmp_fuzz (a int)'), serialize.query('prepare p1 as select 1')],
    [serialize.query('select 1'), serialize.end()],
    [serialize.sync(), serialize.flush(), serialize.sync()],
    [Buffer.from([0x46, 0, 0, 0, 14, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0, 0])], // FunctionCall
  ];
}
