// Exact output of the built-in rewrites (src/rules/rewrites.ts), and the texts they must leave alone.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadQueryParser } from '../../src/query/analysis.js';
import { applyBuiltinRewrite } from '../../src/rules/rewrites.js';

beforeAll(async () => {
  await loadQueryParser();
});

const time = (sql: string) => applyBuiltinRewrite('sargable-time-range', sql)?.sql;
const exists = (sql: string) => applyBuiltinRewrite('count-exists', sql)?.sql;

describe('sargable-time-range', () => {
  it.each([
    [
      "SELECT * FROM t WHERE date_trunc('day', ts) = '2024-03-01'",
      "SELECT * FROM t WHERE (ts >= '2024-03-01' AND ts < '2024-03-02' AND date_trunc('day', ts) = '2024-03-01')",
    ],
    [
      "SELECT * FROM t WHERE date_trunc('week', ts) = '2024-02-26 00:00:00'",
      "SELECT * FROM t WHERE (ts >= '2024-02-26 00:00:00' AND ts < '2024-03-04' AND date_trunc('week', ts) = '2024-02-26 00:00:00')",
    ],
    [
      "SELECT * FROM t WHERE date_trunc('month', t.ts) = '2024-02-01'",
      "SELECT * FROM t WHERE (t.ts >= '2024-02-01' AND t.ts < '2024-03-01' AND date_trunc('month', t.ts) = '2024-02-01')",
    ],
    [
      "SELECT * FROM t WHERE '2024-01-01' = date_trunc('YEAR', ts)",
      "SELECT * FROM t WHERE (ts >= '2024-01-01' AND ts < '2025-01-01' AND '2024-01-01' = date_trunc('YEAR', ts))",
    ],
    [
      "SELECT * FROM t WHERE date_trunc('hour', ts) = $1",
      "SELECT * FROM t WHERE (ts >= $1 AND ts < $1 + interval '1 hour' AND date_trunc('hour', ts) = $1)",
    ],
    [
      "SELECT * FROM t WHERE date_trunc('minute', ts) = $2",
      "SELECT * FROM t WHERE (ts >= $2 AND ts < $2 + interval '1 minute' AND date_trunc('minute', ts) = $2)",
    ],
    [
      "SELECT * FROM t WHERE pg_catalog.date_trunc('month', ts) = $1",
      "SELECT * FROM t WHERE (ts >= $1 AND ts < $1 + interval '1 month' AND pg_catalog.date_trunc('month', ts) = $1)",
    ],
    [
      "SELECT * FROM t WHERE ts::date = '2024-02-29'",
      "SELECT * FROM t WHERE (ts >= '2024-02-29'::date AND ts < '2024-02-29'::date + 1 AND ts::date = '2024-02-29')",
    ],
    [
      'SELECT * FROM t WHERE date(ts) = $1',
      'SELECT * FROM t WHERE (ts >= $1::date AND ts < $1::date + 1 AND date(ts) = $1)',
    ],
    [
      "DELETE FROM t WHERE date(ts) BETWEEN '2024-01-01' AND $1",
      "DELETE FROM t WHERE (ts >= '2024-01-01'::date AND ts < $1::date + 1 AND date(ts) BETWEEN '2024-01-01' AND $1)",
    ],
    [
      'SELECT * FROM t WHERE extract(epoch from ts) > 1709251200',
      "SELECT * FROM t WHERE ts > '2024-03-01 00:00:00+00'",
    ],
    [
      'SELECT * FROM t WHERE 0 <= EXTRACT(EPOCH FROM ts)',
      "SELECT * FROM t WHERE ts >= '1970-01-01 00:00:00+00'",
    ],
    [
      "UPDATE t SET v = 1 WHERE v IS NULL AND date_trunc('day', ts) = '2024-03-31'",
      "UPDATE t SET v = 1 WHERE v IS NULL AND (ts >= '2024-03-31' AND ts < '2024-04-01' AND date_trunc('day', ts) = '2024-03-31')",
    ],
    [
      "SELECT a.x FROM a JOIN b ON b.ts::date = '2024-01-01' GROUP BY 1 HAVING NOT (min(a.ts)::date = '2024-01-02')",
      "SELECT a.x FROM a JOIN b ON (b.ts >= '2024-01-01'::date AND b.ts < '2024-01-01'::date + 1 AND b.ts::date = '2024-01-01') GROUP BY 1 HAVING NOT (min(a.ts)::date = '2024-01-02')",
    ],
    [
      "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE date_trunc('day', ts) = '2024-03-01')",
      "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE (ts >= '2024-03-01' AND ts < '2024-03-02' AND date_trunc('day', ts) = '2024-03-01'))",
    ],
  ])('rewrites %s', (sql, expected) => {
    expect(time(sql)).toBe(expected);
  });

  it('lists one change per rewrite', () => {
    const r = applyBuiltinRewrite(
      'sargable-time-range',
      'SELECT 1 FROM t WHERE date(ts) = $1 OR extract(epoch from ts) < 10',
    );
    expect(r?.changes).toEqual([
      'date(ts) = $1 -> (ts >= $1::date AND ts < $1::date + 1 AND date(ts) = $1)',
      "extract(epoch from ts) < 10 -> ts < '1970-01-01 00:00:10+00'",
    ]);
  });

  it('keeps every byte around the match: comments, non-ASCII identifiers and literals', () => {
    const sql =
      '/* Zeitraum: März */ SELECT "größe", \'ü\' FROM "tä" WHERE "ä" = \'€\' -- ✓\n' +
      "  AND date_trunc('day', \"zeitä\") = '2024-03-01' /* nach */ ORDER BY 1";
    expect(time(sql)).toBe(
      '/* Zeitraum: März */ SELECT "größe", \'ü\' FROM "tä" WHERE "ä" = \'€\' -- ✓\n' +
        "  AND (\"zeitä\" >= '2024-03-01' AND \"zeitä\" < '2024-03-02' AND date_trunc('day', \"zeitä\") = '2024-03-01') /* nach */ ORDER BY 1",
    );
  });

  it.each([
    ["SELECT * FROM t WHERE date_trunc('day', ts) = '2024-03-01 10:00'", 'unaligned day'],
    ["SELECT * FROM t WHERE date_trunc('month', ts) = '2024-03-02'", 'unaligned month'],
    ["SELECT * FROM t WHERE date_trunc('week', ts) = '2024-03-01'", 'a Friday is no week start'],
    ["SELECT * FROM t WHERE date_trunc('year', ts) = '2024-02-01'", 'unaligned year'],
    ["SELECT * FROM t WHERE date_trunc('day', ts) = '2024-02-30'", 'no such date'],
    ["SELECT * FROM t WHERE ts::date = '2024-03-01 10:00'", 'a time in a date literal'],
    ["SELECT * FROM t WHERE date_trunc('hour', ts) = '2024-03-01 10:00'", 'untyped literal, hour'],
    ["SELECT * FROM t WHERE date_trunc('day', ts) = '2024-03-01'::timestamptz", 'typed literal'],
    ["SELECT * FROM t WHERE date_trunc('day', ts) = now()", 'an expression'],
    ["SELECT * FROM t WHERE date_trunc('day', ts, 'UTC') = $1", 'three-argument date_trunc'],
    ["SELECT * FROM t WHERE date_trunc('quarter', ts) = '2024-01-01'", 'unit not handled'],
    ["SELECT * FROM t WHERE date_trunc('day', ts + interval '1h') = $1", 'not a plain column'],
    ["SELECT * FROM t WHERE date_trunc('day', ts) > '2024-03-01'", 'not an equality'],
    ["SELECT * FROM t WHERE my_trunc('day', ts) = '2024-03-01'", 'another function'],
    ["SELECT * FROM t WHERE (ts)::date = '2024-03-01'", 'parenthesized column'],
    ["SELECT * FROM t WHERE ts::date NOT BETWEEN '2024-01-01' AND '2024-02-01'", 'NOT BETWEEN'],
    ["SELECT * FROM t WHERE date_part('epoch', ts) > 5", 'date_part'],
    ['SELECT * FROM t WHERE extract(epoch from ts) > 1.5', 'a fractional epoch'],
    ['SELECT * FROM t WHERE extract(epoch from ts) > $1', 'a parameter epoch'],
    ['SELECT * FROM t WHERE extract(epoch from ts) > -1', 'a negative epoch'],
    ["SELECT date_trunc('day', ts) = '2024-03-01' FROM t", 'select list'],
    ["INSERT INTO u SELECT * FROM t WHERE date_trunc('day', ts) = '2024-03-01'", 'INSERT … SELECT'],
    ["EXPLAIN SELECT * FROM t WHERE date_trunc('day', ts) = '2024-03-01'", 'EXPLAIN'],
    ["CREATE VIEW v AS SELECT * FROM t WHERE date_trunc('day', ts) = '2024-03-01'", 'DDL'],
    ['SELECT * FROM', 'text that does not parse'],
  ])('leaves %s alone (%s)', (sql) => {
    expect(applyBuiltinRewrite('sargable-time-range', sql)).toBeUndefined();
  });
});

describe('count-exists', () => {
  it.each([
    [
      'SELECT * FROM t WHERE (SELECT count(*) FROM u WHERE u.t_id = t.id) > 0',
      'SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.t_id = t.id)',
    ],
    ['SELECT 1 FROM t WHERE 0 < (select COUNT(*) from u)', 'SELECT 1 FROM t WHERE EXISTS (select 1 from u)'],
    ['DELETE FROM t WHERE (SELECT count(*) FROM u) >= 1', 'DELETE FROM t WHERE EXISTS (SELECT 1 FROM u)'],
    [
      'UPDATE t SET a = 1 WHERE (SELECT count(*) FROM u) <> 0',
      'UPDATE t SET a = 1 WHERE EXISTS (SELECT 1 FROM u)',
    ],
    [
      'SELECT * FROM t WHERE (SELECT count(*) FROM u) = 0',
      'SELECT * FROM t WHERE NOT EXISTS (SELECT 1 FROM u)',
    ],
    [
      'SELECT * FROM t WHERE (SELECT count(*) FROM u WHERE (SELECT count(*) FROM v) > 0) > 0',
      'SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE EXISTS (SELECT 1 FROM v))',
    ],
    [
      "SELECT 'é' FROM t /* ü */ WHERE x = 'ä' AND (SELECT count(*) FROM \"ö\") > 0 -- ß",
      "SELECT 'é' FROM t /* ü */ WHERE x = 'ä' AND EXISTS (SELECT 1 FROM \"ö\") -- ß",
    ],
  ])('rewrites %s', (sql, expected) => {
    expect(exists(sql)).toBe(expected);
  });

  it.each([
    'SELECT * FROM t WHERE (SELECT count(*) FROM u GROUP BY a) > 0',
    'SELECT * FROM t WHERE (SELECT count(*) FROM u LIMIT 0) > 0',
    'SELECT * FROM t WHERE (SELECT count(*) FROM u HAVING count(*) > 5) > 0',
    'SELECT * FROM t WHERE (SELECT count(x) FROM u) > 0',
    'SELECT * FROM t WHERE (SELECT count(*) FILTER (WHERE a) FROM u) > 0',
    'SELECT * FROM t WHERE (SELECT count(*) FROM u) > 1',
    'SELECT * FROM t WHERE (SELECT count(*) FROM u UNION SELECT 1) > 0',
    'SELECT (SELECT count(*) FROM u) > 0 FROM t',
    'INSERT INTO x SELECT 1 FROM t WHERE (SELECT count(*) FROM u) > 0',
  ])('leaves %s alone', (sql) => {
    expect(exists(sql)).toBeUndefined();
  });
});
