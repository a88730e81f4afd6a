// Owns the backend messages Sluice writes itself (auth, ParameterStatus, BackendKeyData,
// ReadyForQuery, ErrorResponse, NegotiateProtocolVersion) and reading the few backend messages
// the proxy peeks at in place. https://www.postgresql.org/docs/current/protocol-message-formats.html

export const BackendType = {
  Authentication: 0x52, // 'R'
  BackendKeyData: 0x4b, // 'K'
  BindComplete: 0x32, // '2'
  CommandComplete: 0x43, // 'C'
  CopyInResponse: 0x47, // 'G'
  CopyOutResponse: 0x48, // 'H'
  CopyBothResponse: 0x57, // 'W'
  CopyData: 0x64, // 'd'
  CopyDone: 0x63, // 'c'
  DataRow: 0x44, // 'D'
  ErrorResponse: 0x45, // 'E'
  NegotiateProtocolVersion: 0x76, // 'v'
  NoticeResponse: 0x4e, // 'N'
  NotificationResponse: 0x41, // 'A'
  NoData: 0x6e, // 'n'
  ParameterDescription: 0x74, // 't'
  ParameterStatus: 0x53, // 'S'
  ParseComplete: 0x31, // '1'
  ReadyForQuery: 0x5a, // 'Z'
  RowDescription: 0x54, // 'T'
} as const;

export const AuthCode = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

export type TransactionStatus = 'I' | 'T' | 'E';

function frame(type: number, bodyLength: number): { buf: Buffer; pos: number } {
  const buf = Buffer.allocUnsafe(5 + bodyLength);
  buf[0] = type;
  buf.writeInt32BE(4 + bodyLength, 1);
  return { buf, pos: 5 };
}

function cstringLength(s: string): number {
  return Buffer.byteLength(s) + 1;
}

function writeCString(buf: Buffer, pos: number, s: string): number {
  const n = buf.write(s, pos);
  buf[pos + n] = 0;
  return pos + n + 1;
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK */
export function createAuthentication(code: number, payload?: Buffer): Buffer {
  const extra = payload?.length ?? 0;
  const { buf, pos } = frame(BackendType.Authentication, 4 + extra);
  buf.writeInt32BE(code, pos);
  if (payload) payload.copy(buf, pos + 4);
  return buf;
}

export const AUTHENTICATION_OK = createAuthentication(AuthCode.Ok);
export const AUTHENTICATION_CLEARTEXT = createAuthentication(AuthCode.CleartextPassword);

export function createAuthenticationSASL(mechanisms: readonly string[]): Buffer {
  const parts = mechanisms.map((m) => Buffer.from(`${m}\0`));
  parts.push(Buffer.from([0]));
  return createAuthentication(AuthCode.SASL, Buffer.concat(parts));
}

export function createParameterStatus(name: string, value: string): Buffer {
  const { buf, pos } = frame(BackendType.ParameterStatus, cstringLength(name) + cstringLength(value));
  writeCString(buf, writeCString(buf, pos, name), value);
  return buf;
}

export function createBackendKeyData(processId: number, secretKey: number): Buffer {
  const { buf, pos } = frame(BackendType.BackendKeyData, 8);
  buf.writeInt32BE(processId, pos);
  buf.writeInt32BE(secretKey, pos + 4);
  return buf;
}

function createReadyForQuery(status: TransactionStatus): Buffer {
  const { buf, pos } = frame(BackendType.ReadyForQuery, 1);
  buf[pos] = status.charCodeAt(0);
  return buf;
}

/** Prebuilt once: ReadyForQuery is the reply the proxy sends most often. */
export const READY_FOR_QUERY = {
  I: createReadyForQuery('I'),
  T: createReadyForQuery('T'),
  E: createReadyForQuery('E'),
} as const;

export interface ErrorFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'LOG' | 'INFO' | 'DEBUG';
  code: string;
  message: string;
  detail?: string | undefined;
  hint?: string | undefined;
  /** Source file and routine, as PostgreSQL reports them (drivers such as asyncpg key on routine). */
  file?: string | undefined;
  routine?: string | undefined;
}

/** ErrorResponse and NoticeResponse share one layout of (field code, cstring) pairs. */
function createFieldsMessage(type: number, fields: ErrorFields): Buffer {
  const pairs: [string, string][] = [
    ['S', fields.severity],
    ['V', fields.severity],
    ['C', fields.code],
    ['M', fields.message],
  ];
  if (fields.detail) pairs.push(['D', fields.detail]);
  if (fields.hint) pairs.push(['H', fields.hint]);
  if (fields.file) pairs.push(['F', fields.file]);
  if (fields.routine) pairs.push(['R', fields.routine]);
  let size = 1;
  for (const [, v] of pairs) size += 1 + cstringLength(v);
  const { buf, pos: start } = frame(type, size);
  let pos = start;
  for (const [k, v] of pairs) {
    buf[pos++] = k.charCodeAt(0);
    pos = writeCString(buf, pos, v);
  }
  buf[pos] = 0;
  return buf;
}

export function createErrorResponse(fields: ErrorFields): Buffer {
  return createFieldsMessage(BackendType.ErrorResponse, fields);
}

export function createNoticeResponse(fields: ErrorFields): Buffer {
  return createFieldsMessage(BackendType.NoticeResponse, fields);
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NEGOTIATEPROTOCOLVERSION */
export function createNegotiateProtocolVersion(newestMinor: number, unrecognized: readonly string[]): Buffer {
  let size = 8;
  for (const o of unrecognized) size += cstringLength(o);
  const { buf, pos: start } = frame(BackendType.NegotiateProtocolVersion, size);
  buf.writeInt32BE(newestMinor, start);
  buf.writeInt32BE(unrecognized.length, start + 4);
  let pos = start + 8;
  for (const o of unrecognized) pos = writeCString(buf, pos, o);
  return buf;
}

export function createCommandComplete(tag: string): Buffer {
  const { buf, pos } = frame(BackendType.CommandComplete, cstringLength(tag));
  writeCString(buf, pos, tag);
  return buf;
}

/** Reads ReadyForQuery's status byte at its fixed offset; `start` is the frame's type byte. */
export function peekTransactionStatus(buf: Buffer, start: number): number {
  return buf[start + 5]!;
}

/**
 * Reads one field of an ErrorResponse/NoticeResponse frame (e.g. 'C' for the SQLSTATE) without
 * decoding the others.
 */
export function peekErrorField(buf: Buffer, start: number, end: number, field: number): string | undefined {
  let pos = start + 5;
  while (pos < end) {
    const code = buf[pos]!;
    if (code === 0) return undefined;
    const valueEnd = buf.indexOf(0, pos + 1);
    if (valueEnd < 0 || valueEnd >= end) return undefined;
    if (code === field) return buf.toString('utf8', pos + 1, valueEnd);
    pos = valueEnd + 1;
  }
  return undefined;
}

export function decodeErrorFields(buf: Buffer, start: number, end: number): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = start + 5;
  while (pos < end) {
    const code = buf[pos]!;
    if (code === 0) break;
    const valueEnd = buf.indexOf(0, pos + 1);
    if (valueEnd < 0 || valueEnd >= end) break;
    out[String.fromCharCode(code)] = buf.toString('utf8', pos + 1, valueEnd);
    pos = valueEnd + 1;
  }
  return out;
}

/** Reads a ParameterStatus frame's (name, value). */
export function decodeParameterStatus(buf: Buffer, start: number, end: number): [string, string] | undefined {
  const nameEnd = buf.indexOf(0, start + 5);
  if (nameEnd < 0 || nameEnd >= end) return undefined;
  const valueEnd = buf.indexOf(0, nameEnd + 1);
  if (valueEnd < 0 || valueEnd >= end) return undefined;
  return [buf.toString('utf8', start + 5, nameEnd), buf.toString('utf8', nameEnd + 1, valueEnd)];
}
