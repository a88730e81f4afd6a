// Exact output of the text-changing rule actions (src/rules/text-actions.ts): template rewrites,
// the row cap, the timeout prefix and the error-position shift.
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeErrorFields } from '../../src/protocol/backend-messages.js';
import { loadQueryParser, QueryAnalyzer } from '../../src/query/analysis.js';
import {
  applyRowLimit,
  applyTemplate,
  shiftErrorPosition,
  statementConstants,
  timeoutPrefix,
} from '../../src/rules/text-actions.js';

const analyzer = new QueryAnalyzer();

beforeAll(async () => {
  await loadQueryParser();
});

describe('statementConstants', () => {
  it('lists constants in digest order, strings quoted as written, unary minus kept', () => {
    expect(statementConstants("select * from t where a = 'x''y' and b > -5 and c - 3 < 1.5e2")).toEqual([
      "'x''y'",
      '-5',
      '3',
      '1.5e2',
    ]);
  });

  it('refuses a text with parameters of its own', () => {
    expect(statementConstants('select * from t where a = $1 and b = 2')).toBeUndefined();
  });

  it('skips comments', () => {
    expect(statementConstants("select 1 /* 2 */ -- 3\n, 'é'")).toEqual(['1', "'é'"]);
  });
});

describe('applyTemplate', () => {
  it('puts each constant where the template names it, as often as named', () => {
    expect(applyTemplate('select $2, $1, $2', "select 'a', 42")).toBe("select 42, 'a', 42");
  });

  it('is not applied when the statement has fewer constants than the template uses', () => {
    expect(applyTemplate('select $1, $2', 'select 1')).toBeUndefined();
  });

  it('cannot inject: a constant stays one literal token', () => {
    const out = applyTemplate('select * from t where name = $1', "select '1''; drop table t; --'");
    expect(out).toBe("select * from t where name = '1''; drop table t; --'");
    expect(analyzer.analyze(out!).statementCount).toBe(1);
  });
});

describe('applyRowLimit', () => {
  const cap = (sql: string) => applyRowLimit(sql, analyzer.analyze(sql), 100);

  it.each([
    ['select * from t', 'select * from t\nLIMIT 100'],
    ['select * from t order by a;  ', 'select * from t order by a\nLIMIT 100'],
    ['select * from t -- note', 'select * from t -- note\nLIMIT 100'],
    ['select * from t; -- note', 'select * from t\nLIMIT 100'],
    ['select a from t union select a from u', 'select a from t union select a from u\nLIMIT 100'],
    ['select * from t limit 5', 'SELECT * FROM (\nselect * from t limit 5\n) AS sluice_limited LIMIT 100'],
  ])('%s', (sql, expected) => {
    expect(cap(sql)).toBe(expected);
    expect(analyzer.analyze(expected).parsed).toBe(true);
  });

  it.each([
    'select * from t for update',
    'delete from t',
    'select 1; select 2',
    'with d as (delete from t returning *) select * from d',
  ])('leaves alone: %s', (sql) => {
    expect(cap(sql)).toBeUndefined();
  });
});

describe('timeoutPrefix', () => {
  it('gives a SET LOCAL in milliseconds for statements that may run in a transaction block', () => {
    expect(timeoutPrefix(analyzer.analyze('select 1'), 1.5)).toBe('SET LOCAL statement_timeout = 1500; ');
    expect(timeoutPrefix(analyzer.analyze('update t set a = 1'), 0.0001)).toBe(
      'SET LOCAL statement_timeout = 1; ',
    );
  });

  it.each(['vacuum t', 'begin', 'select 1; select 2', 'create index concurrently i on t(a)', 'not sql'])(
    'none for: %s',
    (sql) => {
      expect(timeoutPrefix(analyzer.analyze(sql), 1)).toBeUndefined();
    },
  );
});

describe('shiftErrorPosition', () => {
  it('moves P back and keeps every other field in order', () => {
    const fields = {
      S: 'ERROR',
      V: 'ERROR',
      C: '42703',
      M: 'column "é" does not exist',
      P: '58',
      R: 'errorMissingColumn',
    };
    const out = shiftErrorPosition(fields, 37)!;
    expect(out[0]).toBe(0x45);
    expect(out.readInt32BE(1)).toBe(out.length - 1);
    expect(Object.entries(decodeErrorFields(out, 0, out.length))).toEqual(
      Object.entries({ ...fields, P: '21' }),
    );
  });

  it('leaves errors without a position in the client text', () => {
    expect(shiftErrorPosition({ C: '57014', M: 'canceling' }, 10)).toBeUndefined();
    expect(shiftErrorPosition({ C: '42601', P: '5' }, 10)).toBeUndefined();
  });
});
