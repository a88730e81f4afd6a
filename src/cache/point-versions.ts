// Owns the version keys that let the result cache invalidate one row's readers instead of the
// whole table's. For a table whose primary key is one integer or text column:
//   "t"            bumped by every write: what whole-table readers depend on;
//   "t\x01n"       bumped by every write that is not confined to given key values;
//   "t\x01=<v>"    bumped by a write confined to key value v.
// A read confined to key value v depends on "t\x01n" and "t\x01=<v>" only, so a write of another
// row leaves it cached. Any doubt (a value Sluice cannot read canonically, a cast, non-ASCII
// text, a write that may move a row to another key) falls back to the whole-table keys.
import type { PointColumn } from '../query/catalog.js';
import type { ShapeLiteral } from '../query/literal-shape.js';
import type { PointAccess, PointValue } from '../query/point-access.js';

const NON_POINT = '\x01n';
const POINT = '\x01=';

/**
 * Where $n values come from: the Bind that goes with an extended-protocol statement (its frame
 * and the Parse's parameter-type section), or the literals a simple-protocol text had before its
 * literal shape replaced them by parameters.
 */
export type BoundParameters =
  | {
      readonly frame: Buffer;
      /** The Parse's bytes after the query text: int16 count, then int32 type OIDs. */
      readonly paramTypes: Buffer;
    }
  | { readonly literals: readonly ShapeLiteral[] };

export function nonPointKey(table: string): string {
  return table + NON_POINT;
}

/** Keys a write to `table` bumps when it is not confined to key values. */
export function wholeTableWriteKeys(table: string): string[] {
  return [table, table + NON_POINT];
}

/**
 * The canonical key values a statement is confined to on `column`, or undefined when it is not
 * (or Sluice cannot tell). `write` applies the extra conditions that keep a write on its rows.
 */
export function pointValues(
  access: PointAccess,
  column: PointColumn,
  params: BoundParameters | undefined,
  write: 'insert' | 'update' | 'delete' | undefined,
): string[] | undefined {
  const values = access.columns.get(column.name);
  if (values === undefined || values.length === 0) return undefined;
  if (write === 'update' && access.assigned.includes(column.name)) return undefined;
  if (write === 'insert') {
    const conflict = access.conflict;
    if (conflict === 'other') return undefined;
    if (Array.isArray(conflict)) {
      // DO UPDATE may only touch the row holding the inserted key, and must not change the key.
      if (conflict.length !== 1 || conflict[0] !== column.name || access.assigned.includes(column.name))
        return undefined;
    }
  }
  const out: string[] = [];
  for (const value of values) {
    const canonical = canonicalValue(value, column, params);
    if (canonical === undefined) return undefined;
    out.push(canonical);
  }
  return out;
}

export function pointKey(table: string, value: string): string {
  return table + POINT + value;
}

function canonicalValue(
  value: PointValue,
  column: PointColumn,
  params: BoundParameters | undefined,
): string | undefined {
  if ('literal' in value) {
    if (column.family === 'integer') return canonicalInteger(value.literal);
    return value.integer ? undefined : canonicalText(value.literal);
  }
  if (params === undefined) return undefined;
  if ('literals' in params) {
    // The literal the shape replaced, judged as the literal itself would have been.
    const literal = params.literals[value.param - 1];
    if (literal === undefined) return undefined;
    if (literal.string) return canonicalValue({ literal: literal.text, integer: false }, column, undefined);
    return /^[0-9]+$/.test(literal.text)
      ? canonicalValue({ literal: literal.text, integer: true }, column, undefined)
      : undefined;
  }
  const bound = bindParameter(params.frame, value.param);
  if (bound === undefined || bound.value === null) return undefined;
  const type = parameterType(params.paramTypes, value.param);
  if (type === undefined) return undefined;
  if (column.family === 'integer') {
    if (type !== 0 && type !== 20 && type !== 21 && type !== 23) return undefined;
    if (bound.format === 0) return canonicalInteger(bound.value.toString('latin1'));
    const v = bound.value;
    if (v.length === 2) return String(v.readInt16BE(0));
    if (v.length === 4) return String(v.readInt32BE(0));
    if (v.length === 8) return String(v.readBigInt64BE(0));
    return undefined;
  }
  if (type !== 0 && type !== 25 && type !== 1043) return undefined;
  return canonicalText(bound.value.toString('latin1'));
}

/** int2/int4/int8 input accepts surrounding spaces, a sign and leading zeros. */
function canonicalInteger(text: string): string | undefined {
  const m = /^[ \t\n\r]*([+-]?)0*(\d+)[ \t\n\r]*$/.exec(text);
  if (!m) return undefined;
  const digits = m[2]!;
  return m[1] === '-' && digits !== '0' ? `-${digits}` : digits;
}

/** Text compared byte for byte; only ASCII, so every client encoding spells it the same way. */
function canonicalText(text: string): string | undefined {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point
  return /^[\x00-\x7f]*$/.test(text) ? `t${text}` : undefined;
}

/** The Parse's declared type for $n (0: unspecified), or undefined when malformed. */
function parameterType(paramTypes: Buffer, n: number): number | undefined {
  if (paramTypes.length < 2) return 0;
  const count = paramTypes.readInt16BE(0);
  if (n > count) return 0;
  const at = 2 + (n - 1) * 4;
  return at + 4 <= paramTypes.length ? paramTypes.readUInt32BE(at) : undefined;
}

/**
 * Parameter $n of a Bind frame: its format (0 text, 1 binary) and bytes (null for NULL).
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BIND
 */
export function bindParameter(
  frame: Buffer,
  n: number,
): { format: number; value: Buffer | null } | undefined {
  const end = frame.length;
  let pos = frame.indexOf(0, 5); // portal
  if (pos < 0) return undefined;
  pos = frame.indexOf(0, pos + 1); // statement
  if (pos < 0 || pos + 3 > end) return undefined;
  pos++;
  const formatCount = frame.readInt16BE(pos);
  const formatsAt = pos + 2;
  pos = formatsAt + formatCount * 2;
  if (formatCount < 0 || pos + 2 > end) return undefined;
  const count = frame.readInt16BE(pos);
  pos += 2;
  if (n < 1 || n > count) return undefined;
  for (let i = 1; i <= count; i++) {
    if (pos + 4 > end) return undefined;
    const length = frame.readInt32BE(pos);
    pos += 4;
    if (i === n) {
      const format =
        formatCount === 0 ? 0 : frame.readInt16BE(formatsAt + (formatCount === 1 ? 0 : (n - 1) * 2));
      if (length === -1) return { format, value: null };
      if (length < 0 || pos + length > end) return undefined;
      return { format, value: frame.subarray(pos, pos + length) };
    }
    if (length > 0) pos += length;
  }
  return undefined;
}
