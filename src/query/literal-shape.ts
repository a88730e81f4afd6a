// Owns a cheap, parser-free "shape" of a statement text: every plain string and numeric literal
// replaced by $1, $2, ... Rules match on what a statement does, not on its literal values, so
// statements that differ only in literals (a bot's simple-protocol queries with inlined values)
// share one parse. Measured: pgbench -S -M simple sends a new text per query, and parsing each
// (30-200 µs) made 10 loaded rules cost most of the throughput (bench/results/rules-*).

function isIdentifierChar(code: number): boolean {
  return (
    (code >= 0x30 && code <= 0x39) || // 0-9
    (code >= 0x41 && code <= 0x5a) || // A-Z
    (code >= 0x61 && code <= 0x7a) || // a-z
    code === 0x5f || // _
    code === 0x24 || // $
    code >= 0x80
  );
}

/** Where a quoted token starting at `at` ends (a doubled quote stays inside), or -1. */
function afterQuoted(sql: string, at: number, quote: "'" | '"'): number {
  let j = at + 1;
  for (;;) {
    const q = sql.indexOf(quote, j);
    if (q < 0) return -1;
    if (sql[q + 1] !== quote) return q + 1;
    j = q + 2;
  }
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/**
 * The text with its literals replaced by parameters, or undefined when it has none or holds
 * what this scanner does not follow (existing $n parameters, dollar quoting, E'' / B'' / U&''
 * strings, nested comments). The shape may not parse (`interval '1 day'` becomes
 * `interval $1`): callers fall back to the text itself then.
 */
export function literalShape(sql: string): string | undefined {
  return shapeWithLiterals(sql)?.shape;
}

/** A literal the shape replaced: its text (string literals unquoted), by parameter number - 1. */
export interface ShapeLiteral {
  readonly text: string;
  readonly string: boolean;
}

// Literal text the analysis reads as the clock ('now'::timestamptz, ts > 'today'): such texts keep
// their literals, or the shape would hide a stable function call.
const CLOCK_WORDS = /now|today|tomorrow|yesterday/i;

export function shapeWithLiterals(sql: string): { shape: string; literals: ShapeLiteral[] } | undefined {
  if (sql.includes('$')) return undefined;
  const literals: ShapeLiteral[] = [];
  let out = '';
  let from = 0;
  let n = 0;
  let i = 0;
  const len = sql.length;
  while (i < len) {
    const c = sql.charCodeAt(i);
    if (c === 0x27) {
      // 'string': a prefix letter (E'', B'', X'', U&'') changes its meaning: not followed.
      if (i > 0 && (isIdentifierChar(sql.charCodeAt(i - 1)) || sql.charCodeAt(i - 1) === 0x26))
        return undefined;
      const j = afterQuoted(sql, i, "'");
      if (j < 0) return undefined;
      const text = sql.slice(i + 1, j - 1).replaceAll("''", "'");
      if (CLOCK_WORDS.test(text)) return undefined;
      literals.push({ text, string: true });
      out += `${sql.slice(from, i)}$${++n}`;
      from = j;
      i = j;
    } else if (c === 0x22) {
      // "quoted identifier": kept.
      const j = afterQuoted(sql, i, '"');
      if (j < 0) return undefined;
      i = j;
    } else if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? len : nl + 1;
    } else if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
      const close = sql.indexOf('*/', i + 2);
      if (close < 0 || sql.slice(i + 2, close).includes('/*')) return undefined;
      i = close + 2;
    } else if (
      isDigit(c) &&
      (i === 0 || (!isIdentifierChar(sql.charCodeAt(i - 1)) && sql.charCodeAt(i - 1) !== 0x2e))
    ) {
      // A number: digits, a fraction, an exponent.
      let j = i;
      while (j < len && isDigit(sql.charCodeAt(j))) j++;
      if (sql.charCodeAt(j) === 0x2e) {
        j++;
        while (j < len && isDigit(sql.charCodeAt(j))) j++;
      }
      const e = sql.charCodeAt(j);
      if (e === 0x65 || e === 0x45) {
        let k = j + 1;
        const sign = sql.charCodeAt(k);
        if (sign === 0x2b || sign === 0x2d) k++;
        if (isDigit(sql.charCodeAt(k))) {
          while (k < len && isDigit(sql.charCodeAt(k))) k++;
          j = k;
        }
      }
      // 1abc is not a number followed by a word in SQL: leave such text alone.
      if (j < len && isIdentifierChar(sql.charCodeAt(j))) return undefined;
      literals.push({ text: sql.slice(i, j), string: false });
      out += `${sql.slice(from, i)}$${++n}`;
      from = j;
      i = j;
    } else {
      i++;
    }
  }
  return n === 0 ? undefined : { shape: out + sql.slice(from), literals };
}
