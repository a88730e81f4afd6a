// Tests decoding of startup-phase packets and 'p' auth replies, including malformed and random input,
// which must come back as 'invalid' or undefined and never throw.
import { describe, expect, it } from 'vitest';
import {
  decodePasswordMessage,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  decodeStartupPacket,
  StartupCode,
  type StartupPacket,
} from '../../src/protocol/frontend-messages.js';

/** An untyped startup-phase packet: int32 length (counting itself), int32 code, body. */
function packet(code: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const out = Buffer.alloc(8 + b.length);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(code, 4);
  b.copy(out, 8);
  return out;
}

/** A StartupMessage body: name\0value\0 pairs and the final \0. */
function pairs(list: [string, string][], terminator = true): string {
  return list.map(([k, v]) => `${k}\0${v}\0`).join('') + (terminator ? '\0' : '');
}

/** A typed frame at `start` inside a larger buffer, with bytes (including NULs) on both sides. */
function framed(type: string, body: Buffer): { buf: Buffer; start: number; end: number } {
  const frame = Buffer.alloc(5 + body.length);
  frame[0] = type.charCodeAt(0);
  frame.writeInt32BE(4 + body.length, 1);
  body.copy(frame, 5);
  const before = Buffer.from('Q\0\0\0\x05\0', 'latin1');
  const after = Buffer.from('\0\0\0\x04\0S\0\0\0\x04', 'latin1');
  const buf = Buffer.concat([before, frame, after]);
  return { buf, start: before.length, end: before.length + frame.length };
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
}

const KINDS = new Set(['ssl', 'gssenc', 'cancel', 'startup', 'invalid']);

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The StartupMessage layout check of PostgreSQL's ProcessStartupPacket (backend_startup.c), ported
 * literally as an independent oracle. PostgreSQL NUL-terminates its copy of the packet, so strlen
 * stops at the end of the buffer at the latest.
 */
function postgresLayout(buf: Buffer): Map<string, string> | undefined {
  const len = buf.length;
  const strlen = (at: number): number => {
    let n = 0;
    while (at + n < len && buf[at + n] !== 0) n++;
    return n;
  };
  const params = new Map<string, string>();
  let offset = 8;
  while (offset < len) {
    const nameLen = strlen(offset);
    if (nameLen === 0) break;
    const valoffset = offset + nameLen + 1;
    if (valoffset >= len) break; // missing value, complained about below
    const valLen = strlen(valoffset);
    params.set(
      buf.toString('utf8', offset, offset + nameLen),
      buf.toString('utf8', valoffset, valoffset + valLen),
    );
    offset = valoffset + valLen + 1;
  }
  if (offset !== len - 1) return undefined;
  // PostgreSQL only checks the position, so it also takes a lone non-NUL last byte (a "name"
  // whose value is missing) as the terminator. Sluice demands a real NUL; that stricter reading is
  // kept here, as no client sends such a packet.
  if (buf[offset] !== 0) return undefined;
  return params;
}

describe('decodeStartupPacket', () => {
  it('decodes a StartupMessage with its parameters and protocol version', () => {
    const p = decodeStartupPacket(
      packet(
        StartupCode.Protocol3,
        pairs([
          ['user', 'alice'],
          ['database', 'metrics'],
          ['application_name', 'psql ☃'],
          ['options', '-c search_path=x'],
        ]),
      ),
    );
    expect(p).toEqual({
      kind: 'startup',
      majorVersion: 3,
      minorVersion: 0,
      parameters: new Map([
        ['user', 'alice'],
        ['database', 'metrics'],
        ['application_name', 'psql ☃'],
        ['options', '-c search_path=x'],
      ]),
      protocolOptions: [],
    });
  });

  it('collects _pq_. options separately and keeps the minor version', () => {
    const p = decodeStartupPacket(
      packet(
        (3 << 16) | 2,
        pairs([
          ['user', 'bob'],
          ['_pq_.compression', 'on'],
          ['database', 'db'],
          ['_pq_.other', ''],
        ]),
      ),
    );
    expect(p).toEqual({
      kind: 'startup',
      majorVersion: 3,
      minorVersion: 2,
      parameters: new Map([
        ['user', 'bob'],
        ['database', 'db'],
      ]),
      protocolOptions: ['_pq_.compression', '_pq_.other'],
    });
  });

  it('accepts a StartupMessage with no parameters and an empty value', () => {
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, '\0'))).toMatchObject({
      kind: 'startup',
      parameters: new Map(),
    });
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, pairs([['user', '']])))).toMatchObject({
      kind: 'startup',
      parameters: new Map([['user', '']]),
    });
  });

  it('reports other protocol versions for the caller to reject', () => {
    expect(decodeStartupPacket(packet(2 << 16, pairs([['user', 'x']])))).toMatchObject({
      kind: 'startup',
      majorVersion: 2,
      minorVersion: 0,
    });
    expect(decodeStartupPacket(packet(0xffff_0001 | 0, '\0'))).toMatchObject({
      kind: 'startup',
      majorVersion: 0xffff,
      minorVersion: 1,
    });
  });

  it('recognises SSLRequest and GSSENCRequest', () => {
    expect(decodeStartupPacket(packet(StartupCode.SSLRequest))).toEqual({ kind: 'ssl' });
    expect(decodeStartupPacket(packet(StartupCode.GSSENCRequest))).toEqual({ kind: 'gssenc' });
    expect(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).equals(packet(80877103))).toBe(true);
  });

  it('decodes a CancelRequest, including negative keys', () => {
    const body = Buffer.concat([int32(12345), int32(-559038737)]);
    expect(decodeStartupPacket(packet(StartupCode.CancelRequest, body))).toEqual({
      kind: 'cancel',
      processId: 12345,
      secretKey: -559038737,
    });
  });

  it('rejects a CancelRequest of the wrong length', () => {
    for (const n of [0, 4, 7, 9, 12]) {
      const p = decodeStartupPacket(packet(StartupCode.CancelRequest, Buffer.alloc(n, 1)));
      expect(p.kind, `body of ${n} bytes`).toBe('invalid');
    }
  });

  it('rejects packets shorter than length and code', () => {
    expect(decodeStartupPacket(Buffer.alloc(0)).kind).toBe('invalid');
    expect(decodeStartupPacket(Buffer.from([0, 0, 0, 4])).kind).toBe('invalid');
    expect(decodeStartupPacket(Buffer.from([0, 0, 0, 7, 0, 3, 0])).kind).toBe('invalid');
  });

  it('rejects a StartupMessage whose body is empty (no terminator at all)', () => {
    expect(decodeStartupPacket(packet(StartupCode.Protocol3)).kind).toBe('invalid');
  });

  it('rejects a StartupMessage without its final terminator', () => {
    const p = decodeStartupPacket(packet(StartupCode.Protocol3, pairs([['user', 'alice']], false)));
    expect(p).toEqual({
      kind: 'invalid',
      reason: 'invalid startup packet layout: expected terminator as last byte',
    });
  });

  it('rejects a name without a value, and a name without its NUL', () => {
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, 'user\0')).kind).toBe('invalid');
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, 'user\0alice')).kind).toBe('invalid');
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, 'user')).kind).toBe('invalid');
    // A value then an empty pair: the terminator is not the last byte.
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, 'user\0alice\0\0\0')).kind).toBe('invalid');
  });

  it('rejects a last byte that is not NUL where the terminator belongs', () => {
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, 'user\0alice\0X')).kind).toBe('invalid');
  });

  it('rejects bytes after the terminator', () => {
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, 'user\0a\0\0database\0d\0\0')).kind).toBe(
      'invalid',
    );
    expect(decodeStartupPacket(packet(StartupCode.Protocol3, '\0x')).kind).toBe('invalid');
  });

  it('never throws on random buffers and agrees with PostgreSQL on which StartupMessages are valid', () => {
    const rand = mulberry32(0xc0ffee);
    const codes = [
      StartupCode.Protocol3,
      (3 << 16) | 1,
      StartupCode.SSLRequest,
      StartupCode.GSSENCRequest,
      StartupCode.CancelRequest,
    ];
    const counts: Record<string, number> = {};
    for (let round = 0; round < 5000; round++) {
      const style = rand();
      let length = 8 + Math.floor(rand() * 293); // 8..300
      let buf: Buffer = Buffer.alloc(length);
      if (style < 0.6) {
        for (let i = 8; i < length; i++) {
          if (style < 0.3) buf[i] = Math.floor(rand() * 256);
          // Mostly letters with some NULs, so many packets get deep into the pair loop.
          else buf[i] = rand() < 0.15 ? 0 : 0x61 + Math.floor(rand() * 26);
        }
        if (style >= 0.45 && length > 8) buf[length - 1] = 0;
      } else {
        // A well-formed list of random pairs, then maybe one byte changed.
        const word = (min: number): string =>
          String.fromCharCode(
            ...Array.from({ length: min + Math.floor(rand() * 12) }, () => 0x61 + Math.floor(rand() * 26)),
          );
        const list: [string, string][] = [];
        for (let n = Math.floor(rand() * 9); n > 0; n--)
          list.push([(rand() < 0.1 ? '_pq_.' : '') + word(1), word(0)]);
        buf = packet(0, pairs(list));
        length = buf.length;
        if (rand() < 0.5) buf[8 + Math.floor(rand() * (length - 8))] = rand() < 0.5 ? 0 : 0x7a;
      }
      buf.writeInt32BE(length, 0);
      const code =
        rand() < 0.8 ? codes[Math.floor(rand() * codes.length)]! : Math.floor(rand() * 2 ** 32) | 0;
      buf.writeInt32BE(code, 4);

      let p: StartupPacket;
      try {
        p = decodeStartupPacket(buf);
      } catch (err) {
        throw new Error(`threw on ${buf.toString('hex')}: ${(err as Error).message}`);
      }
      counts[p.kind] = (counts[p.kind] ?? 0) + 1;
      if (!KINDS.has(p.kind)) throw new Error(`unknown kind ${p.kind}`);
      if (p.kind === 'invalid') expect(typeof p.reason).toBe('string');
      if (p.kind === 'cancel' && length !== 16)
        throw new Error('cancel request of the wrong length accepted');
      if (
        code !== StartupCode.SSLRequest &&
        code !== StartupCode.GSSENCRequest &&
        code !== StartupCode.CancelRequest
      ) {
        const expected = postgresLayout(buf);
        if (expected === undefined) {
          if (p.kind !== 'invalid') throw new Error(`accepted ${buf.toString('hex')}`);
        } else {
          if (p.kind !== 'startup') throw new Error(`rejected ${buf.toString('hex')}`);
          const all = new Map(p.parameters);
          for (const name of p.protocolOptions) all.set(name, expected.get(name) ?? '');
          expect([...all.keys()].sort()).toEqual([...expected.keys()].sort());
          for (const [k, v] of p.parameters) expect(v).toBe(expected.get(k));
          expect(p.majorVersion).toBe(code >>> 16);
          expect(p.minorVersion).toBe(code & 0xffff);
        }
      }
    }
    // The generator reaches every outcome, so the loop above tested something.
    expect(Object.keys(counts).sort()).toEqual(['cancel', 'gssenc', 'invalid', 'ssl', 'startup']);
    expect(counts.startup).toBeGreaterThan(500);
    expect(counts.invalid).toBeGreaterThan(500);
  });
});

describe('decodePasswordMessage', () => {
  it('reads the password of a frame inside a larger buffer', () => {
    const { buf, start, end } = framed('p', Buffer.from('s3cr3t ☃\0'));
    expect(decodePasswordMessage(buf, start, end)).toBe('s3cr3t ☃');
  });

  it('reads an md5 response and an empty password', () => {
    const md5 = 'md5' + 'a'.repeat(32);
    const a = framed('p', Buffer.from(`${md5}\0`));
    expect(decodePasswordMessage(a.buf, a.start, a.end)).toBe(md5);
    const b = framed('p', Buffer.from('\0'));
    expect(decodePasswordMessage(b.buf, b.start, b.end)).toBe('');
  });

  it('returns undefined when the NUL is missing, even if one follows the frame', () => {
    const { buf, start, end } = framed('p', Buffer.from('secret'));
    expect(buf.indexOf(0, end)).toBeGreaterThanOrEqual(end);
    expect(decodePasswordMessage(buf, start, end)).toBeUndefined();
  });

  it('returns undefined when the NUL is not the last byte', () => {
    const a = framed('p', Buffer.from('sec\0ret\0'));
    expect(decodePasswordMessage(a.buf, a.start, a.end)).toBeUndefined();
    const b = framed('p', Buffer.from('secret\0x'));
    expect(decodePasswordMessage(b.buf, b.start, b.end)).toBeUndefined();
  });

  it('returns undefined for an empty body', () => {
    const { buf, start, end } = framed('p', Buffer.alloc(0));
    expect(decodePasswordMessage(buf, start, end)).toBeUndefined();
  });
});

describe('decodeSASLInitialResponse', () => {
  const clientFirst = Buffer.from('n,,n=,r=rOprNGfwEbeRWgbNEkqO');

  it('reads the mechanism and the data', () => {
    const body = Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), int32(clientFirst.length), clientFirst]);
    const { buf, start, end } = framed('p', body);
    const r = decodeSASLInitialResponse(buf, start, end);
    expect(r?.mechanism).toBe('SCRAM-SHA-256');
    expect(r?.data.equals(clientFirst)).toBe(true);
  });

  it('reads a zero-length and an absent (-1) response', () => {
    const a = framed('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), int32(0)]));
    const ra = decodeSASLInitialResponse(a.buf, a.start, a.end);
    expect(ra?.mechanism).toBe('SCRAM-SHA-256');
    expect(ra?.data.length).toBe(0);
    const b = framed('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), int32(-1)]));
    const rb = decodeSASLInitialResponse(b.buf, b.start, b.end);
    expect(rb?.mechanism).toBe('SCRAM-SHA-256');
    expect(rb?.data.length).toBe(0);
  });

  it('returns undefined for malformed frames', () => {
    const mech = Buffer.from('SCRAM-SHA-256\0');
    const bodies: [string, Buffer][] = [
      ['empty body', Buffer.alloc(0)],
      ['mechanism without NUL', Buffer.from('SCRAM-SHA-256')],
      ['no length', mech],
      ['a truncated length', Buffer.concat([mech, Buffer.from([0, 0])])],
      ['data shorter than announced', Buffer.concat([mech, int32(10), Buffer.from('abc')])],
      ['data longer than announced', Buffer.concat([mech, int32(2), Buffer.from('abc')])],
      ['a negative length', Buffer.concat([mech, int32(-2)])],
      ['the most negative length', Buffer.concat([mech, int32(-(2 ** 31))])],
    ];
    for (const [name, body] of bodies) {
      const { buf, start, end } = framed('p', body);
      expect(decodeSASLInitialResponse(buf, start, end), name).toBeUndefined();
    }
  });

  // PostgreSQL (auth-sasl.c, pq_getmsgend) rejects bytes after a -1 length with 08P01.
  it('returns undefined for bytes after an absent (-1) response', () => {
    const body = Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), int32(-1), Buffer.from('junk')]);
    const { buf, start, end } = framed('p', body);
    expect(decodeSASLInitialResponse(buf, start, end)).toBeUndefined();
  });

  it('never throws on random frame bodies', () => {
    const rand = mulberry32(7);
    for (let round = 0; round < 3000; round++) {
      const body = Buffer.alloc(Math.floor(rand() * 40));
      for (let i = 0; i < body.length; i++) body[i] = rand() < 0.2 ? 0 : Math.floor(rand() * 256);
      const { buf, start, end } = framed('p', body);
      const r = decodeSASLInitialResponse(buf, start, end);
      if (r !== undefined) {
        // Whatever it accepts lies inside the frame.
        expect(Buffer.byteLength(r.mechanism)).toBeLessThan(body.length);
        expect(r.data.length).toBeLessThanOrEqual(body.length);
      }
      const pw = decodePasswordMessage(buf, start, end);
      if (pw !== undefined) expect(body[body.length - 1]).toBe(0);
    }
  });
});

describe('decodeSASLResponse', () => {
  it('returns the frame body', () => {
    const data = Buffer.from('c=biws,r=abc,p=xyz');
    const { buf, start, end } = framed('p', data);
    expect(decodeSASLResponse(buf, start, end).equals(data)).toBe(true);
  });
});
