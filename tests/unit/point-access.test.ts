// Which statements provably touch only the rows where one column equals given values, and the
// canonical values the result cache versions them by.
import { loadModule, parseSync } from 'libpg-query';
import { serialize } from 'pg-protocol';
import { beforeAll, describe, expect, it } from 'vitest';
import { bindParameter, pointValues } from '../../src/cache/point-versions.js';
import type { PointColumn } from '../../src/query/catalog.js';
import { type PointAccess, pointAccessOf } from '../../src/query/point-access.js';

beforeAll(async () => {
  await loadModule();
});

function access(sql: string): PointAccess | undefined {
  const parsed = parseSync(sql) as { stmts: { stmt: unknown }[] };
  return pointAccessOf(parsed.stmts[0]!.stmt);
}

const SYMBOL: PointColumn = { name: 'symbol', family: 'text' };
const ID: PointColumn = { name: 'id', family: 'integer' };

function values(sql: string, column: PointColumn, write?: 'insert' | 'update' | 'delete') {
  const a = access(sql);
  return a === undefined ? undefined : pointValues(a, column, undefined, write);
}

describe('point access', () => {
  it('finds column = value in a top-level AND of a one-table read', () => {
    expect(values("select price from prices where symbol = 'BTC' and price > 0", SYMBOL)).toEqual(['tBTC']);
    expect(values("select price from prices p where 'ETH' = p.symbol", SYMBOL)).toEqual(['tETH']);
    expect(values('select * from t where id = 0007', ID)).toEqual(['7']);
    expect(values("select * from t where id = ' -5 '", ID)).toEqual(['-5']);
  });

  it('refuses what may read other rows or cannot be read canonically', () => {
    expect(values("select price from prices where symbol = 'BTC' or price > 0", SYMBOL)).toBeUndefined();
    expect(
      values(
        "select price from prices where symbol = 'BTC' and price > (select avg(price) from prices)",
        SYMBOL,
      ),
    ).toBeUndefined();
    expect(
      values("select * from prices a join quotes b using (symbol) where symbol = 'X'", SYMBOL),
    ).toBeUndefined();
    expect(
      values("with x as (select 1) select price from prices where symbol = 'X'", SYMBOL),
    ).toBeUndefined();
    expect(values("select price from prices where symbol = 'BT' || 'C'", SYMBOL)).toBeUndefined();
    expect(values("select price from prices where symbol = 'É'", SYMBOL)).toBeUndefined();
    expect(values('select * from t where id = 5.0', ID)).toBeUndefined();
    expect(values('select * from t where id = 5', SYMBOL)).toBeUndefined();
  });

  it('confines writes only when they cannot move a row to another key', () => {
    expect(values("update prices set price = 1 where symbol = 'A'", SYMBOL, 'update')).toEqual(['tA']);
    expect(values("update prices set symbol = 'B' where symbol = 'A'", SYMBOL, 'update')).toBeUndefined();
    expect(values("delete from prices where symbol = 'A'", SYMBOL, 'delete')).toEqual(['tA']);
    expect(values("insert into prices(symbol, price) values ('A', 1), ('B', 2)", SYMBOL, 'insert')).toEqual([
      'tA',
      'tB',
    ]);
    expect(values("insert into prices values ('A', 1)", SYMBOL, 'insert')).toBeUndefined();
    expect(values("insert into prices(symbol, price) select 'A', 1", SYMBOL, 'insert')).toBeUndefined();
    expect(
      values(
        "insert into prices(symbol, price) values ('A', 1) on conflict (symbol) do update set price = excluded.price",
        SYMBOL,
        'insert',
      ),
    ).toEqual(['tA']);
    expect(
      values(
        "insert into prices(symbol, price) values ('A', 1) on conflict (price) do update set price = 2",
        SYMBOL,
        'insert',
      ),
    ).toBeUndefined();
    expect(
      values(
        "insert into prices(symbol, price) values ('A', 1) on conflict on constraint k do nothing",
        SYMBOL,
        'insert',
      ),
    ).toEqual(['tA']);
  });

  it('reads parameters from the Bind, text and binary, and checks their declared types', () => {
    const a = access('select price from prices where symbol = $1')!;
    const noTypes = Buffer.from([0, 0]);
    const bind = serialize.bind({ values: ['BTC'] });
    expect(pointValues(a, SYMBOL, { frame: bind, paramTypes: noTypes }, undefined)).toEqual(['tBTC']);
    const ints = access('select * from t where id = $1')!;
    // Bind: portal "", statement "", 1 format code (binary), 1 parameter of 4 bytes, 0 result codes.
    const body = Buffer.from([0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 4, 0, 0, 0, 42, 0, 0]);
    const withFormat = Buffer.concat([Buffer.from([0x42, 0, 0, 0, 4 + body.length]), body]);
    expect(bindParameter(withFormat, 1)).toEqual({ format: 1, value: Buffer.from([0, 0, 0, 42]) });
    expect(pointValues(ints, ID, { frame: withFormat, paramTypes: noTypes }, undefined)).toEqual(['42']);
    // Declared as numeric (1700): not read as an integer key.
    const numeric = Buffer.from([0, 1, 0, 0, 6, 0xa4]);
    expect(
      pointValues(ints, ID, { frame: serialize.bind({ values: ['42'] }), paramTypes: numeric }, undefined),
    ).toBeUndefined();
    expect(
      pointValues(a, SYMBOL, { frame: serialize.bind({ values: [null] }), paramTypes: noTypes }, undefined),
    ).toBeUndefined();
  });
});
