// Tests the backend messages Sluice writes: exact layouts, round trips through its own peek/decode
// functions, and a cross-check against pg-protocol's parser (an independent implementation).
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { describe, expect, it } from 'vitest';
import {
  AUTHENTICATION_CLEARTEXT,
  AUTHENTICATION_OK,
  AuthCode,
  BackendType,
  createAuthentication,
  createAuthenticationSASL,
  createBackendKeyData,
  createErrorResponse,
  createNegotiateProtocolVersion,
  createNoticeResponse,
  createParameterStatus,
  decodeErrorFields,
  decodeParameterStatus,
  type ErrorFields,
  peekErrorField,
  peekTransactionStatus,
  READY_FOR_QUERY,
} from '../../src/protocol/backend-messages.js';
import { SqlState } from '../../src/protocol/sqlstate.js';

/** Every message parsed from `buffers`, fed to one pg-protocol Parser in order. */
function parseWithPgProtocol(...buffers: Buffer[]): Record<string, unknown>[] {
  const parser = new Parser();
  const out: Record<string, unknown>[] = [];
  for (const b of buffers)
    parser.parse(b, (msg: BackendMessage) => out.push(msg as unknown as Record<string, unknown>));
  return out;
}

/** Places `frame` inside a larger buffer, returning where it starts and ends. */
function embed(frame: Buffer): { buf: Buffer; start: number; end: number } {
  const before = READY_FOR_QUERY.T;
  const after = Buffer.from('S\0\0\0\x04\0\0\0', 'latin1');
  return {
    buf: Buffer.concat([before, frame, after]),
    start: before.length,
    end: before.length + frame.length,
  };
}

function header(buf: Buffer): { type: string; length: number } {
  return { type: String.fromCharCode(buf[0]!), length: buf.readInt32BE(1) };
}

const FULL_ERROR: ErrorFields = {
  severity: 'FATAL',
  code: SqlState.TooManyConnections,
  message: 'sorry, too many clients already',
  detail: 'pool "app" has 20 of 20 connections in use',
  hint: 'raise pool_size — or wait ☕',
};

describe('READY_FOR_QUERY', () => {
  it('holds the exact bytes for each transaction status', () => {
    expect(READY_FOR_QUERY.I).toEqual(Buffer.from('Z\0\0\0\x05I', 'latin1'));
    expect(READY_FOR_QUERY.T).toEqual(Buffer.from('Z\0\0\0\x05T', 'latin1'));
    expect(READY_FOR_QUERY.E).toEqual(Buffer.from('Z\0\0\0\x05E', 'latin1'));
  });

  it('is read back by peekTransactionStatus at its fixed offset, also inside a larger buffer', () => {
    for (const status of ['I', 'T', 'E'] as const) {
      const frame = READY_FOR_QUERY[status];
      expect(peekTransactionStatus(frame, 0)).toBe(status.charCodeAt(0));
      const { buf, start } = embed(frame);
      expect(peekTransactionStatus(buf, start)).toBe(status.charCodeAt(0));
    }
  });
});

describe('authentication messages', () => {
  it('builds AuthenticationOk and AuthenticationCleartextPassword byte for byte', () => {
    expect(AUTHENTICATION_OK).toEqual(Buffer.from('R\0\0\0\x08\0\0\0\0', 'latin1'));
    expect(AUTHENTICATION_CLEARTEXT).toEqual(Buffer.from('R\0\0\0\x08\0\0\0\x03', 'latin1'));
  });

  it('builds AuthenticationMD5Password with its salt', () => {
    const salt = Buffer.from([1, 2, 0xfe, 0xff]);
    expect(createAuthentication(AuthCode.MD5Password, salt)).toEqual(
      Buffer.concat([Buffer.from('R\0\0\0\x0c\0\0\0\x05', 'latin1'), salt]),
    );
  });

  it('builds AuthenticationSASL with a NUL-terminated list of mechanisms', () => {
    const m = createAuthenticationSASL(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']);
    const body = 'SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0';
    expect(header(m)).toEqual({ type: 'R', length: 8 + body.length });
    expect(m.readInt32BE(5)).toBe(AuthCode.SASL);
    expect(m.subarray(9).toString('latin1')).toBe(body);
  });

  it('is read by pg-protocol as the same messages', () => {
    const salt = Buffer.from([9, 8, 7, 6]);
    const msgs = parseWithPgProtocol(
      AUTHENTICATION_OK,
      AUTHENTICATION_CLEARTEXT,
      createAuthentication(AuthCode.MD5Password, salt),
      createAuthenticationSASL(['SCRAM-SHA-256']),
      createAuthentication(AuthCode.SASLContinue, Buffer.from('r=abc,s=c2FsdA==,i=4096')),
      createAuthentication(AuthCode.SASLFinal, Buffer.from('v=signature')),
      READY_FOR_QUERY.I,
    );
    expect(msgs.map((m) => m.name)).toEqual([
      'authenticationOk',
      'authenticationCleartextPassword',
      'authenticationMD5Password',
      'authenticationSASL',
      'authenticationSASLContinue',
      'authenticationSASLFinal',
      'readyForQuery',
    ]);
    expect(msgs[2]?.salt).toEqual(salt);
    expect(msgs[3]?.mechanisms).toEqual(['SCRAM-SHA-256']);
    expect(msgs[4]?.data).toBe('r=abc,s=c2FsdA==,i=4096');
    expect(msgs[5]?.data).toBe('v=signature');
    expect(msgs[6]?.status).toBe('I');
  });
});

describe('BackendKeyData', () => {
  it('is read by pg-protocol with the same process id and secret key', () => {
    const k = createBackendKeyData(4242, -1);
    expect(header(k)).toEqual({ type: 'K', length: 12 });
    const [msg] = parseWithPgProtocol(k);
    expect(msg).toMatchObject({ name: 'backendKeyData', processID: 4242, secretKey: -1 });
  });
});

describe('ParameterStatus', () => {
  const cases: [string, string][] = [
    ['server_version', '17.2'],
    ['TimeZone', 'Europe/Zürich'],
    ['application_name', ''],
    ['x', '☃'.repeat(100)],
  ];

  it('round-trips through decodeParameterStatus, also inside a larger buffer', () => {
    for (const [name, value] of cases) {
      const frame = createParameterStatus(name, value);
      expect(header(frame)).toEqual({
        type: 'S',
        length: 4 + Buffer.byteLength(name) + Buffer.byteLength(value) + 2,
      });
      expect(decodeParameterStatus(frame, 0, frame.length)).toEqual([name, value]);
      const { buf, start, end } = embed(frame);
      expect(decodeParameterStatus(buf, start, end)).toEqual([name, value]);
    }
  });

  it('is read by pg-protocol as the same name and value', () => {
    const msgs = parseWithPgProtocol(...cases.map(([n, v]) => createParameterStatus(n, v)));
    expect(msgs.map((m) => [m.name, m.parameterName, m.parameterValue])).toEqual(
      cases.map(([n, v]) => ['parameterStatus', n, v]),
    );
  });

  it('decodes to undefined when a NUL is missing inside the frame', () => {
    const frame = Buffer.from('S\0\0\0\x0ename\0value', 'latin1'); // value lacks its NUL
    const { buf, start, end } = embed(frame);
    expect(buf.indexOf(0, end)).toBeGreaterThanOrEqual(end); // a NUL follows the frame
    expect(decodeParameterStatus(buf, start, end)).toBeUndefined();
    const noName = Buffer.from('S\0\0\0\x08name', 'latin1');
    const e2 = embed(noName);
    expect(decodeParameterStatus(e2.buf, e2.start, e2.end)).toBeUndefined();
  });
});

describe('ErrorResponse and NoticeResponse', () => {
  it('lays out S, V, C, M, D, H fields and a final NUL', () => {
    const e = createErrorResponse({
      severity: 'ERROR',
      code: '08P01',
      message: 'bad',
      detail: 'd',
      hint: 'h',
    });
    const body = 'SERROR\0VERROR\0C08P01\0Mbad\0Dd\0Hh\0\0';
    expect(e.toString('latin1')).toBe(`E\0\0\0${String.fromCharCode(4 + body.length)}${body}`);
  });

  it('omits detail and hint when absent', () => {
    const e = createErrorResponse({ severity: 'FATAL', code: '28P01', message: 'no' });
    expect(e.subarray(5).toString('latin1')).toBe('SFATAL\0VFATAL\0C28P01\0Mno\0\0');
    expect(decodeErrorFields(e, 0, e.length)).toEqual({ S: 'FATAL', V: 'FATAL', C: '28P01', M: 'no' });
  });

  it('round-trips through decodeErrorFields and peekErrorField, also inside a larger buffer', () => {
    const frame = createErrorResponse(FULL_ERROR);
    expect(header(frame)).toEqual({ type: 'E', length: frame.length - 1 });
    const { buf, start, end } = embed(frame);
    expect(decodeErrorFields(buf, start, end)).toEqual({
      S: 'FATAL',
      V: 'FATAL',
      C: '53300',
      M: FULL_ERROR.message,
      D: FULL_ERROR.detail,
      H: FULL_ERROR.hint,
    });
    const peek = (f: string) => peekErrorField(buf, start, end, f.charCodeAt(0));
    expect(peek('C')).toBe('53300');
    expect(peek('S')).toBe('FATAL');
    expect(peek('M')).toBe(FULL_ERROR.message);
    expect(peek('H')).toBe(FULL_ERROR.hint);
    expect(peek('P')).toBeUndefined();
  });

  it('builds a NoticeResponse with the same fields', () => {
    const n = createNoticeResponse({ severity: 'NOTICE', code: '00000', message: 'hello' });
    expect(n[0]).toBe(BackendType.NoticeResponse);
    expect(decodeErrorFields(n, 0, n.length)).toEqual({ S: 'NOTICE', V: 'NOTICE', C: '00000', M: 'hello' });
  });

  it('is read by pg-protocol with the same severity, code, message, detail and hint', () => {
    const msgs = parseWithPgProtocol(
      createErrorResponse(FULL_ERROR),
      createNoticeResponse({ severity: 'WARNING', code: '01000', message: 'careful' }),
      READY_FOR_QUERY.E,
    );
    expect(msgs[0]).toMatchObject({
      name: 'error',
      severity: 'FATAL',
      code: '53300',
      message: FULL_ERROR.message,
      detail: FULL_ERROR.detail,
      hint: FULL_ERROR.hint,
    });
    expect(msgs[1]).toMatchObject({ name: 'notice', severity: 'WARNING', code: '01000', message: 'careful' });
    expect(msgs[2]).toMatchObject({ name: 'readyForQuery', status: 'E' });
  });

  it('stops at the frame end when reading a truncated or unterminated frame', () => {
    // A field without its NUL, followed (outside the frame) by bytes that hold a NUL.
    const frame = Buffer.from('E\0\0\0\x10SERROR\0C08P0', 'latin1');
    const { buf, start, end } = embed(frame);
    expect(decodeErrorFields(buf, start, end)).toEqual({ S: 'ERROR' });
    expect(peekErrorField(buf, start, end, 'C'.charCodeAt(0))).toBeUndefined();
    expect(peekErrorField(buf, start, end, 'S'.charCodeAt(0))).toBe('ERROR');
    const empty = Buffer.from('E\0\0\0\x04', 'latin1');
    const e = embed(empty);
    expect(decodeErrorFields(e.buf, e.start, e.end)).toEqual({});
    expect(peekErrorField(e.buf, e.start, e.end, 'C'.charCodeAt(0))).toBeUndefined();
  });
});

describe('NegotiateProtocolVersion', () => {
  it('lays out the newest minor version, the count and the unrecognised options', () => {
    const v = createNegotiateProtocolVersion(0, ['_pq_.compression', '_pq_.x']);
    const options = '_pq_.compression\0_pq_.x\0';
    expect(header(v)).toEqual({ type: 'v', length: 4 + 8 + options.length });
    expect(v.length).toBe(1 + 4 + 8 + options.length);
    expect(v.readInt32BE(5)).toBe(0);
    expect(v.readInt32BE(9)).toBe(2);
    expect(v.subarray(13).toString('latin1')).toBe(options);
  });

  it('is 13 bytes with no options', () => {
    expect(createNegotiateProtocolVersion(2, [])).toEqual(
      Buffer.from('v\0\0\0\x0c\0\0\0\x02\0\0\0\0', 'latin1'),
    );
  });
});

describe('all built messages in one stream', () => {
  it('parse with pg-protocol at every split offset', () => {
    const frames = [
      createAuthenticationSASL(['SCRAM-SHA-256']),
      AUTHENTICATION_OK,
      createParameterStatus('client_encoding', 'UTF8'),
      createBackendKeyData(1, 2),
      createErrorResponse(FULL_ERROR),
      READY_FOR_QUERY.I,
    ];
    const stream = Buffer.concat(frames);
    const names = parseWithPgProtocol(stream).map((m) => m.name);
    expect(names).toEqual([
      'authenticationSASL',
      'authenticationOk',
      'parameterStatus',
      'backendKeyData',
      'error',
      'readyForQuery',
    ]);
    for (let i = 0; i <= stream.length; i++) {
      const msgs = parseWithPgProtocol(Buffer.from(stream.subarray(0, i)), Buffer.from(stream.subarray(i)));
      expect(msgs.map((m) => m.name)).toEqual(names);
    }
  });
});
