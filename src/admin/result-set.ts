// Owns encoding the admin console's answers: a table of text/int8/float8 columns as
// RowDescription + DataRow + CommandComplete, as PostgreSQL sends a simple query's result.
// https://www.postgresql.org/docs/current/protocol-message-formats.html
import { createCommandComplete } from '../protocol/backend-messages.js';

export type Cell = string | number | boolean | null;

export interface ResultSet {
  columns: readonly string[];
  rows: readonly (readonly Cell[])[];
  /** CommandComplete tag (default SHOW). */
  tag?: string;
}

const TEXT_OID = 25;
const INT8_OID = 20;
const FLOAT8_OID = 701;
const BOOL_OID = 16;

function typeOf(rows: readonly (readonly Cell[])[], column: number): number {
  let type = TEXT_OID;
  for (const row of rows) {
    const v = row[column];
    if (v === null || v === undefined) continue;
    if (typeof v === 'boolean') return BOOL_OID;
    if (typeof v !== 'number') return TEXT_OID;
    if (!Number.isInteger(v)) return FLOAT8_OID;
    type = INT8_OID;
  }
  return type;
}

function cellText(v: Cell): string | null {
  if (v === null) return null;
  if (typeof v === 'boolean') return v ? 't' : 'f';
  return String(v);
}

export function encodeResultSet(result: ResultSet): Buffer {
  const parts: Buffer[] = [];
  const names = result.columns.map((c) => Buffer.from(c, 'utf8'));
  let size = 4 + 2;
  for (const n of names) size += n.length + 1 + 18;
  const desc = Buffer.alloc(1 + size);
  desc[0] = 0x54; // 'T'
  desc.writeInt32BE(size, 1);
  desc.writeInt16BE(names.length, 5);
  let pos = 7;
  names.forEach((n, i) => {
    n.copy(desc, pos);
    pos += n.length;
    desc[pos++] = 0;
    desc.writeInt32BE(0, pos); // table oid
    desc.writeInt16BE(0, pos + 4); // attnum
    const oid = typeOf(result.rows, i);
    desc.writeInt32BE(oid, pos + 6);
    desc.writeInt16BE(oid === TEXT_OID ? -1 : oid === BOOL_OID ? 1 : 8, pos + 10);
    desc.writeInt32BE(-1, pos + 12); // typmod
    desc.writeInt16BE(0, pos + 16); // text format
    pos += 18;
  });
  parts.push(desc);
  for (const row of result.rows) {
    const cells = result.columns.map((_, i) => {
      const t = cellText(row[i] ?? null);
      return t === null ? null : Buffer.from(t, 'utf8');
    });
    let len = 4 + 2;
    for (const c of cells) len += 4 + (c?.length ?? 0);
    const data = Buffer.alloc(1 + len);
    data[0] = 0x44; // 'D'
    data.writeInt32BE(len, 1);
    data.writeInt16BE(cells.length, 5);
    let p = 7;
    for (const c of cells) {
      if (c === null) {
        data.writeInt32BE(-1, p);
        p += 4;
      } else {
        data.writeInt32BE(c.length, p);
        c.copy(data, p + 4);
        p += 4 + c.length;
      }
    }
    parts.push(data);
  }
  parts.push(createCommandComplete(result.tag ?? 'SHOW'));
  return Buffer.concat(parts);
}
