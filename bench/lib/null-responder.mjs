#!/usr/bin/env node
// Owns the ceiling experiment's "null server": a PostgreSQL wire-protocol endpoint that does the
// least any Node server can do per query: it frames the bytes and answers every simple Query with
// one fixed row (trust login, no parsing, no pool, no cache lookup). Whatever it cannot beat,
// no Node proxy on the same machine can. `node null-responder.mjs PORT [PROCESSES]` (PROCESSES > 1:
// node:cluster workers sharing the port).
import cluster from 'node:cluster';
import net from 'node:net';

const port = Number(process.argv[2]);
const processes = Number(process.argv[3] ?? 1);

function message(type, body) {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const cstring = (s) => Buffer.from(`${s}\0`);
const int32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const int16 = (n) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const parameter = (k, v) => message('S', Buffer.concat([cstring(k), cstring(v)]));
const READY = message('Z', Buffer.from('I'));
const LOGIN = Buffer.concat([
  message('R', int32(0)),
  parameter('server_version', '17.0'),
  parameter('server_encoding', 'UTF8'),
  parameter('client_encoding', 'UTF8'),
  parameter('DateStyle', 'ISO, MDY'),
  parameter('integer_datetimes', 'on'),
  parameter('standard_conforming_strings', 'on'),
  message('K', Buffer.concat([int32(1), int32(2)])),
  READY,
]);
// One numeric column, one row: what `SELECT price FROM hot_prices WHERE instrument_id = k` returns.
const REPLY = Buffer.concat([
  message(
    'T',
    Buffer.concat([
      int16(1),
      cstring('price'),
      int32(0),
      int16(0),
      int32(1700),
      int16(-1),
      int32(-1),
      int16(0),
    ]),
  ),
  message('D', Buffer.concat([int16(1), int32(3), Buffer.from('142')])),
  message('C', cstring('SELECT 1')),
  READY,
]);
const SSL_REQUEST = 80877103;

function serve(socket) {
  socket.setNoDelay(true);
  let started = false;
  let pending = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    pending = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    for (;;) {
      if (!started) {
        if (pending.length < 8) return;
        const length = pending.readInt32BE(0);
        if (pending.length < length) return;
        const code = pending.readInt32BE(4);
        pending = pending.subarray(length);
        if (code === SSL_REQUEST) socket.write('N');
        else {
          started = true;
          socket.write(LOGIN);
        }
        continue;
      }
      if (pending.length < 5) return;
      const length = pending.readInt32BE(1);
      if (pending.length < length + 1) return;
      const type = pending[0];
      pending = pending.subarray(length + 1);
      if (type === 0x51) socket.write(REPLY);
      else if (type === 0x58) {
        socket.end();
        return;
      }
    }
  });
}

if (cluster.isPrimary && processes > 1) {
  for (let i = 0; i < processes; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill('SIGTERM');
    process.exit(0);
  });
} else {
  net.createServer(serve).listen(port, '127.0.0.1', () => {
    if (process.send) process.send('listening');
  });
  process.on('SIGTERM', () => process.exit(0));
}
