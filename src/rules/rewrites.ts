// Owns Sluice's built-in, semantics-preserving rewrites of SQL text (rules' `rewrite: { builtin }`
// and `sluice rules explain`): matches found in PostgreSQL's own parse tree (libpg-query) and
// spliced into the original bytes, so everything outside a match is kept byte for byte.
//
// What "equivalent" means here, for a column whose type we cannot see (timestamp or timestamptz):
//
// - sargable-time-range, `date_trunc(unit, col) = X`, `col::date = X`, `date(col) = X`,
//   `date(col) BETWEEN A AND B`: the original predicate P is KEPT and an index range R it implies
//   is ANDed in front of it: `(R AND P)`. Whenever P ⇒ R, `R AND P` has the value of P in
//   three-valued logic too (P is NULL only when col or X is NULL, and then R is NULL as well), so
//   the rewrite can be used under NOT, CASE, OR… and needs no alignment argument about X: an
//   unaligned X keeps P false for every row either way. What must be proven is only P ⇒ R:
//   * timestamp: date_trunc(u, c) <= c < date_trunc(u, c) + 1 u, and c::date <= c < c::date + 1.
//   * timestamptz: date_trunc for hour/minute keeps c's own UTC offset, so the same holds in every
//     TimeZone. For day/week/month/year (and ::date) the start of the local period is re-resolved
//     in TimeZone, and `X + interval '1 day'` / the next literal resolve the same way, so it holds
//     in every TimeZone where local midnight is never repeated. It does NOT hold where a backward
//     clock change ends at 00:00 (America/Havana on the day DST ends: 00:30-04 truncates to
//     00:00-05, later than itself). tests/integration/rules-rewrites.test.ts shows both.
//   X is restricted so that its type is the column's in every position it appears: an untyped
//   literal (it takes the type of the other side) or a parameter (typed by its first use, which
//   is `col >= $n`). An untyped literal cannot be followed by `+ interval` (that resolves to
//   interval + interval), so its upper bound is the next period's literal, computed here; for
//   hour/minute that literal is wrong across a DST gap for timestamptz, so untyped literals are
//   accepted for day/week/month/year only. An unaligned literal (P false on every row) is left
//   alone: it is a bug in the query, not ours to hide.
// - sargable-time-range, `extract(epoch from col) <op> N` with an integer literal N becomes
//   `col <op> '<N as UTC>+00'`: an untyped literal, read as timestamptz it is the instant N, read
//   as timestamp the zone is ignored and it is the nominal instant N — which is what extract(epoch)
//   means for each type (docs, "EXTRACT, date_part"). Exact for both types, any TimeZone. It
//   assumes the column IS one of those two: on a date column the literal reads as its date, exact
//   only when N is a whole day; on time/timetz/interval columns extract(epoch) means something
//   else and the rewrite is wrong. Use the rule only on statements over timestamp(tz) columns.
// - count-exists: `(SELECT count(*) FROM … ) > 0` (also >= 1, <> 0, = 0, and mirrored) becomes
//   `EXISTS (SELECT 1 FROM … )`: count(*) of a plain SELECT without GROUP BY/HAVING/LIMIT/DISTINCT/
//   set operations returns exactly one non-NULL row, so both sides are never NULL and agree.

import { parseSync, scanSync } from 'libpg-query';

export const BUILTIN_REWRITE_NAMES = ['sargable-time-range', 'count-exists'] as const;
export type BuiltinRewriteName = (typeof BUILTIN_REWRITE_NAMES)[number];

export interface RewriteResult {
  sql: string;
  /** Human-readable, one per rewrite applied: "<original text> -> <replacement>". */
  changes: string[];
}

/** undefined when nothing applies (or the text does not parse); requires loadQueryParser()/loadModule() done. */
export function applyBuiltinRewrite(name: BuiltinRewriteName, sql: string): RewriteResult | undefined {
  let tree: { stmts?: Array<{ stmt?: Obj }> };
  let tokens: Token[];
  try {
    tree = parseSync(sql) as typeof tree;
    tokens = (scanSync(sql) as { tokens: Token[] }).tokens.filter(
      (t) => t.tokenName !== 'SQL_COMMENT' && t.tokenName !== 'C_COMMENT',
    );
  } catch {
    return undefined; // not ours to judge: PostgreSQL will
  }
  const ctx: Ctx = { bytes: Buffer.from(sql, 'utf8'), tokens, edits: [], name };
  for (const { stmt } of tree.stmts ?? []) {
    if (stmt === undefined) continue;
    const [kind] = Object.keys(stmt);
    if (kind !== 'SelectStmt' && kind !== 'UpdateStmt' && kind !== 'DeleteStmt') continue;
    walk(stmt, false, ctx);
  }
  if (ctx.edits.length === 0) return undefined;
  return splice(ctx);
}

// ---------------------------------------------------------------------------------------------
// Tree walk

type Obj = Record<string, unknown>;

interface Token {
  start: number;
  end: number;
  text: string;
  tokenName: string;
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

interface Ctx {
  bytes: Buffer;
  tokens: Token[];
  /** Groups of edits, one group per change (count-exists edits around a subquery it keeps). */
  edits: Edit[][];
  name: BuiltinRewriteName;
}

const PREDICATE_KEYS = new Set(['whereClause', 'havingClause', 'quals']);

/** Visits every node; `inPredicate` once under a WHERE, HAVING or JOIN … ON. */
function walk(node: unknown, inPredicate: boolean, ctx: Ctx): void {
  if (Array.isArray(node)) {
    for (const item of node) walk(item, inPredicate, ctx);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const obj = node as Obj;
  if (inPredicate && obj['A_Expr'] !== undefined) {
    const matched = ctx.name === 'count-exists' ? matchCountExists(obj, ctx) : matchTimeRange(obj, ctx);
    // A time-range match has no rewritable part inside it; a count-exists match does (its subquery).
    if (matched && ctx.name === 'sargable-time-range') return;
  }
  for (const [key, value] of Object.entries(obj)) {
    // A subquery's select list is not a predicate even when the subquery sits in one.
    const child = key === 'targetList' ? false : inPredicate || PREDICATE_KEYS.has(key);
    walk(value, child, ctx);
  }
}

// ---------------------------------------------------------------------------------------------
// sargable-time-range

const TRUNC_UNITS = new Set(['minute', 'hour', 'day', 'week', 'month', 'year']);
const EPOCH_OPS = new Set(['<', '<=', '>', '>=']);
const MIRRORED: Record<string, string> = { '<': '>', '<=': '>=', '>': '<', '>=': '<=', '=': '=', '<>': '<>' };

function matchTimeRange(node: Obj, ctx: Ctx): boolean {
  const e = node['A_Expr'] as Obj;
  const whole = spanOf(node, ctx);
  if (whole === undefined) return false;
  const original = text(ctx, whole);

  if (e['kind'] === 'AEXPR_BETWEEN') {
    const items = ((e['rexpr'] as Obj | undefined)?.['List'] as Obj | undefined)?.['items'] as
      | Obj[]
      | undefined;
    const col = dateOfColumn(e['lexpr'] as Obj);
    const [a, b] = items ?? [];
    if (col === undefined || a === undefined || b === undefined) return false;
    const lo = dateValue(a, ctx);
    const hi = dateValue(b, ctx);
    const c = columnText(col, ctx);
    if (lo === undefined || hi === undefined || c === undefined) return false;
    return addChange(ctx, whole, `(${c} >= ${lo}::date AND ${c} < ${hi}::date + 1 AND ${original})`);
  }

  if (e['kind'] !== 'AEXPR_OP') return false;
  const op = operatorOf(e);
  if (op === undefined) return false;
  let lexpr = e['lexpr'] as Obj | undefined;
  let rexpr = e['rexpr'] as Obj | undefined;
  let effectiveOp = op;
  // Put the column side on the left: `X = date_trunc(…)` reads as `date_trunc(…) = X`.
  if (lexpr !== undefined && rexpr !== undefined && !isColumnSide(lexpr) && isColumnSide(rexpr)) {
    [lexpr, rexpr] = [rexpr, lexpr];
    effectiveOp = MIRRORED[op] ?? '';
  }
  if (lexpr === undefined || rexpr === undefined) return false;

  // extract(epoch from col) <op> N
  const epochCol = epochOfColumn(lexpr);
  if (epochCol !== undefined && EPOCH_OPS.has(effectiveOp)) {
    const n = integerConst(rexpr);
    const c = columnText(epochCol, ctx);
    if (n === undefined || c === undefined || n < 0 || n > MAX_EPOCH) return false;
    return addChange(ctx, whole, `${c} ${effectiveOp} '${utcLiteral(n)}+00'`);
  }
  if (effectiveOp !== '=') return false;

  // date_trunc(unit, col) = X
  const trunc = truncOfColumn(lexpr);
  if (trunc !== undefined) {
    const c = columnText(trunc.col, ctx);
    if (c === undefined) return false;
    const param = paramText(rexpr, ctx);
    if (param !== undefined) {
      return addChange(
        ctx,
        whole,
        `(${c} >= ${param} AND ${c} < ${param} + interval '1 ${trunc.unit}' AND ${original})`,
      );
    }
    const lit = stringConst(rexpr);
    if (lit === undefined || trunc.unit === 'hour' || trunc.unit === 'minute') return false;
    const next = nextPeriodLiteral(lit, trunc.unit);
    if (!next) return false;
    return addChange(
      ctx,
      whole,
      `(${c} >= ${text(ctx, spanOf(rexpr, ctx))} AND ${c} < '${next}' AND ${original})`,
    );
  }

  // col::date = X, date(col) = X
  const col = dateOfColumn(lexpr);
  if (col !== undefined) {
    const c = columnText(col, ctx);
    const x = dateValue(rexpr, ctx);
    if (c === undefined || x === undefined) return false;
    return addChange(ctx, whole, `(${c} >= ${x}::date AND ${c} < ${x}::date + 1 AND ${original})`);
  }
  return false;
}

function isColumnSide(n: Obj): boolean {
  return truncOfColumn(n) !== undefined || dateOfColumn(n) !== undefined || epochOfColumn(n) !== undefined;
}

/** `date_trunc('unit', col)` with a plain column and one of TRUNC_UNITS. */
function truncOfColumn(n: Obj): { unit: string; col: Obj } | undefined {
  const f = funcCall(n, 'date_trunc', 2);
  if (f === undefined) return undefined;
  const unit = stringConst(f[0]!)?.toLowerCase();
  const col = f[1]!;
  if (unit === undefined || !TRUNC_UNITS.has(unit) || col['ColumnRef'] === undefined) return undefined;
  return { unit, col };
}

/** `col::date`, `CAST(col AS date)` or `date(col)` with a plain column. */
function dateOfColumn(n: Obj): Obj | undefined {
  const cast = n['TypeCast'] as Obj | undefined;
  if (cast !== undefined) {
    const arg = cast['arg'] as Obj;
    const type = cast['typeName'] as Obj;
    if (arg['ColumnRef'] === undefined || !isTypeName(type, 'date')) return undefined;
    return arg;
  }
  const f = funcCall(n, 'date', 1);
  return f?.[0]?.['ColumnRef'] !== undefined ? f[0] : undefined;
}

/** `extract(epoch from col)`. */
function epochOfColumn(n: Obj): Obj | undefined {
  const f = funcCall(n, 'extract', 2);
  if (f === undefined || stringConst(f[0]!)?.toLowerCase() !== 'epoch') return undefined;
  return f[1]!['ColumnRef'] !== undefined ? f[1] : undefined;
}

/** The arguments of a plain call of `name` (or pg_catalog.name) with `arity` arguments. */
function funcCall(n: Obj, name: string, arity: number): Obj[] | undefined {
  const f = n['FuncCall'] as Obj | undefined;
  if (f === undefined) return undefined;
  const names = (f['funcname'] as Obj[]).map((s) => (s['String'] as Obj | undefined)?.['sval']);
  const ok =
    (names.length === 1 && names[0] === name) ||
    (names.length === 2 && names[0] === 'pg_catalog' && names[1] === name);
  const args = f['args'] as Obj[] | undefined;
  if (!ok || args?.length !== arity) return undefined;
  if (f['agg_filter'] !== undefined || f['over'] !== undefined || f['agg_order'] !== undefined)
    return undefined;
  if (f['agg_star'] === true || f['agg_distinct'] === true || f['func_variadic'] === true) return undefined;
  return args;
}

function isTypeName(type: Obj, name: string): boolean {
  const names = (type['names'] as Obj[]).map((s) => (s['String'] as Obj | undefined)?.['sval']);
  const last = names[names.length - 1];
  const schemaOk = names.length === 1 || (names.length === 2 && names[0] === 'pg_catalog');
  return schemaOk && last === name && type['typmods'] === undefined && type['arrayBounds'] === undefined;
}

function operatorOf(e: Obj): string | undefined {
  const names = e['name'] as Obj[];
  if (names.length !== 1) return undefined; // OPERATOR(schema.op): not ours to assume
  return (names[0]!['String'] as Obj | undefined)?.['sval'] as string | undefined;
}

function stringConst(n: Obj): string | undefined {
  const c = n['A_Const'] as Obj | undefined;
  return (c?.['sval'] as Obj | undefined)?.['sval'] as string | undefined;
}

function integerConst(n: Obj): number | undefined {
  const c = n['A_Const'] as Obj | undefined;
  const ival = c?.['ival'] as Obj | undefined;
  if (ival === undefined) return undefined;
  return (ival['ival'] as number | undefined) ?? 0; // the JSON omits a zero
}

function paramText(n: Obj, ctx: Ctx): string | undefined {
  return n['ParamRef'] !== undefined ? text(ctx, spanOf(n, ctx)) : undefined;
}

/** A parameter, or an untyped literal that is a date ('YYYY-MM-DD'), as written. */
function dateValue(n: Obj, ctx: Ctx): string | undefined {
  const param = paramText(n, ctx);
  if (param !== undefined) return param;
  const lit = stringConst(n);
  if (lit === undefined || parseLiteral(lit)?.time !== 0) return undefined;
  return text(ctx, spanOf(n, ctx));
}

// Dates and times of untyped literals, computed on the proleptic Gregorian calendar in UTC
// (wall-clock arithmetic: no zone is involved until PostgreSQL reads the literal).
const LITERAL = /^\s*(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.0+)?)?)?\s*$/;
const DAY_MS = 86_400_000;
/** 9999-12-31 23:59:59 UTC: the largest epoch whose literal we print in the common form. */
const MAX_EPOCH = 253_402_300_799;

/** { date: ms of midnight UTC, time: ms into the day }, for a valid date with optional time. */
function parseLiteral(lit: string): { date: number; time: number } | undefined {
  const m = LITERAL.exec(lit);
  if (m === null) return undefined;
  const [y, mo, d, h = '0', mi = '0', s = '0'] = m.slice(1).map((v) => v ?? '0');
  const date = Date.UTC(Number(y), Number(mo) - 1, Number(d));
  const back = new Date(date);
  if (Number(y) < 1 || back.getUTCMonth() !== Number(mo) - 1 || back.getUTCDate() !== Number(d))
    return undefined;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return undefined;
  return { date, time: ((Number(h) * 60 + Number(mi)) * 60 + Number(s)) * 1000 };
}

/** The start of the next period as a 'YYYY-MM-DD' literal, when `lit` starts a period. */
function nextPeriodLiteral(lit: string, unit: string): string | undefined {
  const p = parseLiteral(lit);
  if (p === undefined || p.time !== 0) return undefined;
  const d = new Date(p.date);
  switch (unit) {
    case 'day':
      return isoDate(p.date + DAY_MS);
    case 'week': // ISO weeks start on Monday, as date_trunc('week') does
      return d.getUTCDay() === 1 ? isoDate(p.date + 7 * DAY_MS) : undefined;
    case 'month':
      return d.getUTCDate() === 1 ? isoDate(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)) : undefined;
    case 'year':
      return d.getUTCDate() === 1 && d.getUTCMonth() === 0
        ? isoDate(Date.UTC(d.getUTCFullYear() + 1, 0, 1))
        : undefined;
    default:
      return undefined;
  }
}

function isoDate(ms: number): string {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (year > 9999) return '';
  return d.toISOString().slice(0, 10);
}

function utcLiteral(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().slice(0, 19).replace('T', ' ');
}

// ---------------------------------------------------------------------------------------------
// count-exists

function matchCountExists(node: Obj, ctx: Ctx): boolean {
  const e = node['A_Expr'] as Obj;
  if (e['kind'] !== 'AEXPR_OP') return false;
  const op = operatorOf(e);
  let sub = e['lexpr'] as Obj | undefined;
  let other = e['rexpr'] as Obj | undefined;
  let effectiveOp = op;
  if (sub?.['SubLink'] === undefined && other?.['SubLink'] !== undefined) {
    [sub, other] = [other, sub];
    effectiveOp = op === undefined ? undefined : MIRRORED[op];
  }
  if (sub === undefined || other === undefined || sub['SubLink'] === undefined) return false;
  const n = integerConst(other);
  let negate: boolean;
  if ((effectiveOp === '>' || effectiveOp === '<>') && n === 0) negate = false;
  else if (effectiveOp === '>=' && n === 1) negate = false;
  else if (effectiveOp === '=' && n === 0) negate = true;
  else return false;

  const link = sub['SubLink'] as Obj;
  if (link['subLinkType'] !== 'EXPR_SUBLINK') return false;
  const select = (link['subselect'] as Obj)['SelectStmt'] as Obj | undefined;
  if (select === undefined || !isPlainSelect(select)) return false;
  const targets = select['targetList'] as Obj[];
  const target = (targets[0]?.['ResTarget'] as Obj | undefined)?.['val'] as Obj | undefined;
  if (targets.length !== 1 || target === undefined || !isCountStar(target)) return false;

  const whole = spanOf(node, ctx);
  const link_ = spanOf(sub, ctx);
  const count = spanOf(target, ctx);
  if (whole === undefined || link_ === undefined || count === undefined) return false;
  const before = `${text(ctx, whole)}`;
  const group: Edit[] = [
    { start: whole.start, end: link_.start, text: negate ? 'NOT EXISTS ' : 'EXISTS ' },
    { start: count.start, end: count.end, text: '1' },
    { start: link_.end, end: whole.end, text: '' },
  ];
  const after = applyEdits(ctx.bytes.subarray(0, whole.end), group, 0).subarray(whole.start).toString('utf8');
  return pushGroup(ctx, group, `${before} -> ${after}`);
}

function isPlainSelect(s: Obj): boolean {
  if (s['op'] !== 'SETOP_NONE' || s['fromClause'] === undefined) return false;
  for (const key of [
    'groupClause',
    'havingClause',
    'distinctClause',
    'limitCount',
    'limitOffset',
    'windowClause',
    'withClause',
    'intoClause',
    'lockingClause',
    'sortClause',
    'valuesLists',
  ]) {
    if (s[key] !== undefined) return false;
  }
  return true;
}

function isCountStar(n: Obj): boolean {
  const f = n['FuncCall'] as Obj | undefined;
  if (f === undefined || f['agg_star'] !== true) return false;
  const names = (f['funcname'] as Obj[]).map((s) => (s['String'] as Obj | undefined)?.['sval']);
  const isCount = (names.length === 1 && names[0] === 'count') || names.join('.') === 'pg_catalog.count';
  return isCount && f['agg_filter'] === undefined && f['over'] === undefined && f['agg_distinct'] !== true;
}

// ---------------------------------------------------------------------------------------------
// Spans and splicing (all offsets are UTF-8 byte offsets, as libpg-query reports them)

interface Span {
  start: number;
  end: number;
}

/**
 * The byte range of an expression: from its smallest `location` to the end of the token holding
 * its largest, extended over the `)`s that close parentheses opened inside it. undefined when the
 * range is not balanced (e.g. `(col)::date`, whose opening parenthesis carries no location).
 */
function spanOf(node: Obj, ctx: Ctx): Span | undefined {
  let min = Number.POSITIVE_INFINITY;
  let max = -1;
  const visit = (n: unknown): void => {
    if (Array.isArray(n)) {
      for (const item of n) visit(item);
    } else if (n !== null && typeof n === 'object') {
      for (const [k, v] of Object.entries(n as Obj)) {
        if (k === 'location' && typeof v === 'number' && v >= 0) {
          min = Math.min(min, v);
          max = Math.max(max, v);
        } else visit(v);
      }
    }
  };
  visit(node);
  if (max < 0) return undefined;
  const { tokens } = ctx;
  const first = tokens.findIndex((t) => t.start === min);
  let last = tokens.findIndex((t) => t.start === max);
  if (first < 0 || last < 0) return undefined;
  // A qualified name's later parts (`t.ts`, `s.t.ts`) carry no location of their own.
  while (tokens[last + 1]?.text === '.' && tokens[last + 2] !== undefined) last += 2;
  // A call whose arguments carry no location (`count(*)`, `now()`): take its parentheses too.
  const name = tokens[last]!.tokenName;
  if ((name === 'IDENT' || name === 'UNKNOWN') && tokens[last + 1]?.text === '(') last++;
  let depth = 0;
  for (let i = first; i <= last; i++) {
    depth += parenDelta(tokens[i]!);
    if (depth < 0) return undefined;
  }
  while (depth > 0) {
    last++;
    const t = tokens[last];
    if (t === undefined) return undefined;
    depth += parenDelta(t);
  }
  return { start: tokens[first]!.start, end: tokens[last]!.end };
}

function parenDelta(t: Token): number {
  return t.text === '(' || t.text === '[' ? 1 : t.text === ')' || t.text === ']' ? -1 : 0;
}

function columnText(col: Obj, ctx: Ctx): string | undefined {
  const fields = (col['ColumnRef'] as Obj)['fields'] as Obj[];
  if (fields.some((f) => f['String'] === undefined)) return undefined; // t.*
  const span = spanOf(col, ctx);
  return span === undefined ? undefined : text(ctx, span);
}

function text(ctx: Ctx, span: Span | undefined): string {
  return span === undefined ? '' : ctx.bytes.subarray(span.start, span.end).toString('utf8');
}

function addChange(ctx: Ctx, span: Span, replacement: string): boolean {
  return pushGroup(
    ctx,
    [{ start: span.start, end: span.end, text: replacement }],
    `${text(ctx, span)} -> ${replacement}`,
  );
}

const changeLabels = new WeakMap<Edit[], string>();

function pushGroup(ctx: Ctx, group: Edit[], label: string): boolean {
  if (group.some((e) => e.text === '' && e.end < e.start)) return false;
  // Matches never overlap (a time-range match stops the walk; a count-exists group edits around
  // its subquery), but a defensive check costs nothing and keeps a future bug from corrupting text.
  for (const existing of ctx.edits.flat()) {
    for (const e of group) if (e.start < existing.end && existing.start < e.end) return false;
  }
  changeLabels.set(group, label);
  ctx.edits.push(group);
  return true;
}

function applyEdits(bytes: Buffer, edits: Edit[], from: number): Buffer {
  const sorted = [...edits].sort((a, b) => a.start - b.start);
  const parts: Buffer[] = [];
  let cursor = from;
  for (const e of sorted) {
    parts.push(bytes.subarray(cursor, e.start), Buffer.from(e.text, 'utf8'));
    cursor = e.end;
  }
  parts.push(bytes.subarray(cursor));
  return Buffer.concat(parts);
}

function splice(ctx: Ctx): RewriteResult {
  const changes = ctx.edits.map((g) => changeLabels.get(g) ?? '');
  const sql = applyEdits(ctx.bytes, ctx.edits.flat(), 0).toString('utf8');
  return { sql, changes };
}
