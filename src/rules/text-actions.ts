// Owns the rule actions that change a statement's text besides the built-in rewrites: template
// rewrites (`rewrite: { template }`), the row cap (`limit`) and the statement_timeout prefix
// (`timeout`). Pure functions over the text, shared by the proxy and `sluice rules explain`.
import { scanSync } from 'libpg-query';
import type { QueryAnalysis } from '../query/analysis.js';

interface Token {
  start: number;
  end: number;
  text: string;
  tokenType: number;
}

// The scanner's token numbers (libpg-query 18), as src/query/analysis.ts reads them for digests.
const CONSTANT_TOKENS = new Set([260, 261, 262, 263, 264, 266]); // FCONST SCONST USCONST BCONST XCONST ICONST
const IDENT_TOKEN = 258;
const PARAM_TOKEN = 267;
const COMMENT_TOKENS = new Set([275, 276]); // SQL_COMMENT C_COMMENT
const MINUS = 45;
const SEMICOLON = 59;
const CLOSE_PAREN = 41;
const CLOSE_BRACKET = 93;

function scan(sql: string): Token[] | undefined {
  try {
    return (scanSync(sql) as { tokens: Token[] }).tokens;
  } catch {
    return undefined;
  }
}

/**
 * The statement's constants in digest order (the order of `$1..$n` in its digest), each as the
 * client wrote it: a string keeps its quotes, a negative number its sign. undefined when the text
 * does not scan or already has parameters of its own (`$n` could not be told apart).
 */
export function statementConstants(sql: string): string[] | undefined {
  const tokens = scan(sql);
  if (tokens === undefined) return undefined;
  const bytes = Buffer.from(sql, 'utf8'); // token offsets are UTF-8 byte offsets
  const code = tokens.filter((t) => !COMMENT_TOKENS.has(t.tokenType));
  const out: string[] = [];
  for (let i = 0; i < code.length; i++) {
    const t = code[i]!;
    if (t.tokenType === PARAM_TOKEN) return undefined;
    if (!CONSTANT_TOKENS.has(t.tokenType)) continue;
    let start = t.start;
    // A unary minus right before the number: after an operator, a comma, '(' or a keyword,
    // never after an operand (then it is a subtraction and stays outside the constant).
    const minus = code[i - 1];
    const before = code[i - 2];
    if (minus?.tokenType === MINUS && minus.end === t.start) {
      const operand =
        before !== undefined &&
        (CONSTANT_TOKENS.has(before.tokenType) ||
          before.tokenType === IDENT_TOKEN ||
          before.tokenType === PARAM_TOKEN ||
          before.tokenType === CLOSE_PAREN ||
          before.tokenType === CLOSE_BRACKET);
      if (!operand) start = minus.start;
    }
    out.push(bytes.toString('utf8', start, t.end));
  }
  return out;
}

const TEMPLATE_PARAM = /\$(\d+)/g;

/** The highest `$n` a template uses (0 for none). */
export function templateArity(template: string): number {
  let max = 0;
  for (const m of template.matchAll(TEMPLATE_PARAM)) max = Math.max(max, Number(m[1]));
  return max;
}

/**
 * A template rewrite: the template with each `$n` replaced by the statement's n-th constant as
 * written. Only constants move from the client's text into the template (each a single literal
 * token, so nothing the client sent can become SQL of its own); undefined when the statement has
 * parameters or fewer constants than the template uses.
 */
export function applyTemplate(template: string, sql: string): string | undefined {
  const constants = statementConstants(sql);
  if (constants === undefined || templateArity(template) > constants.length) return undefined;
  return template.replace(TEMPLATE_PARAM, (_m, n: string) => constants[Number(n) - 1] ?? '');
}

/** The text without a trailing `;` and the comments and blanks around it, or undefined if unscannable. */
function withoutTrailingSemicolons(sql: string): string | undefined {
  // Without comments a trailing `;` can only be a terminator (the text parsed, so no string is
  // left open): no scan, which costs 10-40 µs a statement and simple-protocol texts differ.
  if (!sql.includes('--') && !sql.includes('/*')) return sql.replace(/[\s;]+$/, '');
  const tokens = scan(sql);
  if (tokens === undefined) return undefined;
  let cut = Buffer.byteLength(sql, 'utf8');
  for (let i = tokens.length - 1; i >= 0; i--) {
    const t = tokens[i]!;
    if (COMMENT_TOKENS.has(t.tokenType)) continue;
    if (t.tokenType !== SEMICOLON) break;
    cut = t.start;
  }
  return Buffer.from(sql, 'utf8').toString('utf8', 0, cut).trimEnd();
}

/**
 * The `limit` action: a plain read (one SELECT, read-only, no FOR UPDATE/SHARE) capped at `rows`.
 * Without a LIMIT of its own, `LIMIT rows` is appended; with one (possibly smaller, possibly a
 * parameter) the statement is wrapped in `SELECT * FROM (...) LIMIT rows`, which keeps its own
 * LIMIT and ORDER BY inside. undefined when the statement is not such a read. The LIMIT goes on a
 * line of its own so that a trailing `--` comment cannot swallow it.
 */
export function applyRowLimit(sql: string, analysis: QueryAnalysis, rows: number): string | undefined {
  if (!analysis.parsed || analysis.kind !== 'select' || analysis.statementCount !== 1) return undefined;
  if (!analysis.readOnly || analysis.lockingClause) return undefined;
  const body = withoutTrailingSemicolons(sql);
  if (body === undefined || body === '') return undefined;
  if (!analysis.hasLimit) return `${body}\nLIMIT ${rows}`;
  return `SELECT * FROM (\n${body}\n) AS sluice_limited LIMIT ${rows}`;
}

/** Statement kinds a `timeout` applies to: ones that may run inside a transaction block. */
const TIMED_KINDS = new Set(['select', 'insert', 'update', 'delete', 'merge', 'copy_to', 'explain']);

/**
 * The `timeout` action for a simple-protocol statement sent outside a transaction block: prefixed
 * with `SET LOCAL statement_timeout`, the two run as one implicit transaction (PostgreSQL treats a
 * multi-statement Query so), so the limit is PostgreSQL's own (57014 "canceling statement due to
 * statement timeout") and ends with the statement, leaving the server as it was. The prefix is on
 * the statement's first line so that error line numbers stay right; the session drops the SET's
 * CommandComplete and shifts error positions back by `prefix.length`.
 */
export function timeoutPrefix(analysis: QueryAnalysis, seconds: number): string | undefined {
  if (!analysis.parsed || analysis.statementCount !== 1 || !TIMED_KINDS.has(analysis.kind)) return undefined;
  return `SET LOCAL statement_timeout = ${Math.max(1, Math.round(seconds * 1000))}; `;
}

/**
 * An ErrorResponse with its Position (P) moved back by `by` characters, every other field kept
 * in its order: PostgreSQL counted the timeout prefix the client never wrote. undefined when the
 * error has no position inside the client's text.
 */
export function shiftErrorPosition(fields: Readonly<Record<string, string>>, by: number): Buffer | undefined {
  const position = Number(fields.P);
  if (!Number.isInteger(position) || position <= by) return undefined;
  const entries = Object.entries(fields).map(([k, v]) => (k === 'P' ? [k, String(position - by)] : [k, v]));
  let size = 4 + 1;
  for (const [, v] of entries) size += 1 + Buffer.byteLength(v!, 'utf8') + 1;
  const buf = Buffer.alloc(1 + size);
  buf[0] = 0x45; // 'E'
  buf.writeInt32BE(size, 1);
  let pos = 5;
  for (const [k, v] of entries) {
    buf[pos++] = k!.charCodeAt(0);
    pos += buf.write(v!, pos, 'utf8');
    buf[pos++] = 0;
  }
  buf[pos] = 0;
  return buf;
}
