// Owns reading and rewriting the statement names inside Parse, Bind, Describe and Close frames,
// which transaction pooling needs to map a client's statement names onto shared server-side ones.
// https://www.postgresql.org/docs/current/protocol-message-formats.html
import { createHash } from 'node:crypto';
import { FrontendType } from './frontend-messages.js';

/** Offset just past the NUL ending the C string that starts at `pos`, or -1. */
function cstringEnd(buf: Buffer, pos: number, end: number): number {
  const nul = buf.indexOf(0, pos);
  return nul < 0 || nul >= end ? -1 : nul + 1;
}

/** The statement name of a Parse frame; '' for the unnamed statement, undefined if malformed. */
export function peekParseName(buf: Buffer, start: number, end: number): string | undefined {
  if (buf[start + 5] === 0) return '';
  const nameEnd = cstringEnd(buf, start + 5, end);
  return nameEnd < 0 ? undefined : buf.toString('utf8', start + 5, nameEnd - 1);
}

/**
 * The server-side name for a Parse frame's statement: a hash of its query text and parameter
 * types, so every client preparing the same statement shares one per server connection.
 */
export function serverStatementName(buf: Buffer, start: number, end: number, epoch = 0): string | undefined {
  const nameEnd = cstringEnd(buf, start + 5, end);
  if (nameEnd < 0) return undefined;
  const hash = createHash('sha1').update(buf.subarray(nameEnd, end)).digest('hex').slice(0, 24);
  return epoch === 0 ? `sluice_${hash}` : `sluice_${hash}_${epoch}`;
}

/** Where a Parse frame's query text lies (without its NUL), or -1 when malformed. */
export function parseQueryStart(buf: Buffer, start: number, end: number): number {
  return cstringEnd(buf, start + 5, end);
}

export function parseQueryEnd(buf: Buffer, queryStart: number, end: number): number {
  const queryEnd = cstringEnd(buf, queryStart, end);
  return queryEnd < 0 ? -1 : queryEnd - 1;
}

function frameWith(type: number, parts: Buffer[]): Buffer {
  let length = 4;
  for (const p of parts) length += p.length;
  const out = Buffer.allocUnsafe(1 + length);
  out[0] = type;
  out.writeInt32BE(length, 1);
  let pos = 5;
  for (const p of parts) pos += p.copy(out, pos);
  return out;
}

function cstring(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

/** A copy of a Parse frame with its statement name replaced. */
export function renameParse(buf: Buffer, start: number, end: number, name: string): Buffer {
  const nameEnd = cstringEnd(buf, start + 5, end);
  return frameWith(FrontendType.Parse, [cstring(name), buf.subarray(nameEnd, end)]);
}

/** Bind: portal name, then statement name. Returns the statement name and where it lies. */
export function peekBindStatement(
  buf: Buffer,
  start: number,
  end: number,
): { name: string; nameStart: number; nameEnd: number } | undefined {
  const portalEnd = cstringEnd(buf, start + 5, end);
  if (portalEnd < 0) return undefined;
  if (buf[portalEnd] === 0) return { name: '', nameStart: portalEnd, nameEnd: portalEnd + 1 };
  const nameEnd = cstringEnd(buf, portalEnd, end);
  if (nameEnd < 0) return undefined;
  return { name: buf.toString('utf8', portalEnd, nameEnd - 1), nameStart: portalEnd, nameEnd };
}

/** A copy of a Bind frame naming another statement. */
export function renameBind(
  buf: Buffer,
  start: number,
  end: number,
  nameStart: number,
  nameEnd: number,
  name: string,
): Buffer {
  return frameWith(FrontendType.Bind, [
    buf.subarray(start + 5, nameStart),
    cstring(name),
    buf.subarray(nameEnd, end),
  ]);
}

/** Describe and Close: a kind byte ('S' statement, 'P' portal) and a name. */
export function peekTarget(
  buf: Buffer,
  start: number,
  end: number,
): { kind: number; name: string } | undefined {
  const kind = buf[start + 5];
  if (kind === undefined || start + 6 >= end) return undefined;
  const nameEnd = cstringEnd(buf, start + 6, end);
  if (nameEnd !== end) return undefined;
  return { kind, name: buf.toString('utf8', start + 6, end - 1) };
}

export const STATEMENT = 0x53; // 'S'

export function createDescribeStatement(name: string): Buffer {
  return frameWith(FrontendType.Describe, [Buffer.from([STATEMENT]), cstring(name)]);
}

/** A Parse with no parameter types. */
export function createParse(name: string, query: string): Buffer {
  return frameWith(FrontendType.Parse, [cstring(name), cstring(query), Buffer.from([0, 0])]);
}

export function createCloseStatement(name: string): Buffer {
  return frameWith(FrontendType.Close, [Buffer.from([STATEMENT]), cstring(name)]);
}

export const FLUSH = Buffer.from([FrontendType.Flush, 0, 0, 0, 4]);

/** The kind byte of a Describe frame ('S' statement, 'P' portal); -1 if `buf` is not a Describe. */
export function peekDescribeKind(buf: Buffer): number {
  return buf.length > 5 && buf[0] === FrontendType.Describe ? buf[5]! : -1;
}

/**
 * Whether two statement descriptions (each a whole RowDescription or NoData frame) have the same
 * result row type as PostgreSQL judges it for "cached plan must not change result type": the same
 * number of columns with the same type OIDs and type modifiers. Names may differ (PostgreSQL 16+
 * does not re-check them either).
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ROWDESCRIPTION
 */
export function sameRowType(a: Buffer, b: Buffer): boolean {
  if (a[0] !== b[0]) return false;
  if (a[0] !== 0x54) return true; // both NoData
  const count = a.readInt16BE(5);
  if (count !== b.readInt16BE(5)) return false;
  let pa = 7;
  let pb = 7;
  for (let i = 0; i < count; i++) {
    pa = a.indexOf(0, pa) + 1;
    pb = b.indexOf(0, pb) + 1;
    if (pa === 0 || pb === 0 || pa + 18 > a.length || pb + 18 > b.length) return false;
    // tableOid int32, column int16, then type OID int32 and (after typlen int16) typmod int32.
    if (a.readInt32BE(pa + 6) !== b.readInt32BE(pb + 6)) return false;
    if (a.readInt32BE(pa + 12) !== b.readInt32BE(pb + 12)) return false;
    pa += 18;
    pb += 18;
  }
  return true;
}
