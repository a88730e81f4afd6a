// The literal shape rules match on: literals become parameters, everything else stays.
import { describe, expect, it } from 'vitest';
import { literalShape, shapeWithLiterals } from '../../src/query/literal-shape.js';

describe('literalShape', () => {
  it('replaces string and numeric literals by numbered parameters', () => {
    expect(literalShape('SELECT abalance FROM pgbench_accounts WHERE aid = 4711;')).toBe(
      'SELECT abalance FROM pgbench_accounts WHERE aid = $1;',
    );
    expect(literalShape("select * from t where s = 'it''s' and x > -1.5e-3 limit 10")).toBe(
      'select * from t where s = $1 and x > -$2 limit $3',
    );
  });

  it('keeps identifiers with digits, quoted identifiers and comments', () => {
    expect(literalShape('select col1, "weird 2" from t2 -- 42\nwhere a = 7 /* 8 */')).toBe(
      'select col1, "weird 2" from t2 -- 42\nwhere a = $1 /* 8 */',
    );
    expect(literalShape('select a.b from t where x = 1')).toBe('select a.b from t where x = $1');
  });

  it('gives up where it cannot be sure', () => {
    expect(literalShape('select 1 from t where a = $1')).toBeUndefined();
    expect(literalShape("select E'\\n'")).toBeUndefined();
    expect(literalShape("select U&'d\\0061t'")).toBeUndefined();
    expect(literalShape('select $$x$$')).toBeUndefined();
    expect(literalShape("select 'unterminated")).toBeUndefined();
    expect(literalShape('select 1abc')).toBeUndefined();
    expect(literalShape('select a from t')).toBeUndefined();
  });
});

describe('shapeWithLiterals', () => {
  it('lists the literals it replaced, in parameter order', () => {
    expect(shapeWithLiterals("update prices set price = 10.5 where symbol = 'O''Neil'")).toEqual({
      shape: 'update prices set price = $1 where symbol = $2',
      literals: [
        { text: '10.5', string: false },
        { text: "O'Neil", string: true },
      ],
    });
  });

  it('keeps texts whose literals read the clock, so the analysis still sees them', () => {
    expect(shapeWithLiterals("insert into t values ('now'::timestamptz, 1)")).toBeUndefined();
    expect(shapeWithLiterals("select 1 from t where ts > 'today 09:30'")).toBeUndefined();
  });
});
