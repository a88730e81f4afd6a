// Tests RuleSet.match: each match field (globs, lists, case rules), AND of fields, order, and the
// kind/digest index (a query is tested only against the rules that could apply to it).
import { performance } from 'node:perf_hooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadQueryParser, QueryAnalyzer } from '../../src/query/analysis.js';
import { type MatchContext, RuleSet } from '../../src/rules/rule-set.js';
import type { Rule, RuleMatch } from '../../src/rules/schema.js';

beforeAll(loadQueryParser);
const analyzer = new QueryAnalyzer();
const ctx: MatchContext = { user: 'bot1', database: 'trading', applicationName: 'dashboard' };

let ruleCount = 0;
function rule(match: RuleMatch, extra: Partial<Rule> = {}): Rule {
  const n = ++ruleCount;
  return { name: `r${n}`, file: 'test.yaml', line: n, column: 5, match, log: true, ...extra };
}

/** Whether a set holding only a rule with `match` matches `sql` under `context`. */
function holds(match: RuleMatch, sql: string, context: MatchContext = ctx): boolean {
  return new RuleSet([rule(match)], [], []).match(analyzer.analyze(sql), context).length === 1;
}

describe('RuleSet.match fields', () => {
  it('kind: one or any of a list', () => {
    expect(holds({ kind: 'delete' }, 'DELETE FROM orders')).toBe(true);
    expect(holds({ kind: 'delete' }, 'SELECT 1')).toBe(false);
    expect(holds({ kind: ['insert', 'update'] }, 'UPDATE orders SET qty = 1 WHERE id = 2')).toBe(true);
    expect(holds({ kind: ['insert', 'update'] }, 'DELETE FROM orders WHERE id = 2')).toBe(false);
    expect(holds({ kind: 'ddl' }, 'CREATE TABLE t (a int)')).toBe(true);
    expect(holds({ kind: 'truncate' }, 'TRUNCATE ticks')).toBe(true);
  });

  it('has_where and has_limit', () => {
    expect(holds({ has_where: false }, 'DELETE FROM orders')).toBe(true);
    expect(holds({ has_where: false }, 'DELETE FROM orders WHERE id = 1')).toBe(false);
    expect(holds({ has_where: true }, 'DELETE FROM orders WHERE id = 1')).toBe(true);
    expect(holds({ has_limit: true }, 'SELECT * FROM ticks LIMIT 10')).toBe(true);
    expect(holds({ has_limit: false }, 'SELECT * FROM ticks LIMIT 10')).toBe(false);
    expect(holds({ has_limit: false }, 'SELECT * FROM ticks')).toBe(true);
  });

  it('digest: exact normalized text, whatever the constants', () => {
    const digest = analyzer.analyze("SELECT close FROM prices WHERE symbol = 'AAPL'").digest;
    expect(holds({ digest }, "SELECT close FROM prices WHERE symbol = 'MSFT'")).toBe(true);
    expect(holds({ digest }, "SELECT open FROM prices WHERE symbol = 'MSFT'")).toBe(false);
  });

  it('regex: on the digest (constants already $n), bare or /source/flags', () => {
    expect(holds({ regex: 'symbol = \\$1' }, "SELECT close FROM prices WHERE symbol = 'AAPL'")).toBe(true);
    expect(holds({ regex: 'AAPL' }, "SELECT close FROM prices WHERE symbol = 'AAPL'")).toBe(false);
    expect(holds({ regex: '^select' }, 'SELECT 1')).toBe(false);
    expect(holds({ regex: '/^select/i' }, 'SELECT 1')).toBe(true);
  });

  it('tables: bare names in any schema, qualified names only when the query qualified them', () => {
    expect(holds({ tables: ['ticks'] }, 'SELECT * FROM ticks')).toBe(true);
    expect(holds({ tables: ['ticks'] }, 'SELECT * FROM market.ticks')).toBe(true);
    expect(holds({ tables: ['market.ticks'] }, 'SELECT * FROM market.ticks')).toBe(true);
    expect(holds({ tables: ['market.ticks'] }, 'SELECT * FROM ticks')).toBe(false);
    expect(holds({ tables: ['market.ticks'] }, 'SELECT * FROM other.ticks')).toBe(false);
    expect(holds({ tables: ['ticks'] }, 'SELECT * FROM ticks_archive')).toBe(false);
  });

  it('tables: globs with * and ?, case-insensitive, any table read or written', () => {
    expect(holds({ tables: ['bars_*'] }, 'SELECT * FROM bars_1m')).toBe(true);
    expect(holds({ tables: ['bars_?m'] }, 'SELECT * FROM bars_5m')).toBe(true);
    expect(holds({ tables: ['bars_?m'] }, 'SELECT * FROM bars_15m')).toBe(false);
    expect(holds({ tables: ['*.bars_*'] }, 'SELECT * FROM market.bars_1h')).toBe(true);
    expect(holds({ tables: ['*.bars_*'] }, 'SELECT * FROM bars_1h')).toBe(false);
    expect(holds({ tables: ['market.*'] }, 'SELECT * FROM market.anything')).toBe(true);
    expect(holds({ tables: ['Ticks'] }, 'SELECT * FROM ticks')).toBe(true);
    // Literal characters that are special in a regex stay literal.
    expect(holds({ tables: ['a.b'] }, 'SELECT * FROM axb')).toBe(false);
    expect(holds({ tables: ['orders'] }, 'INSERT INTO orders SELECT * FROM staging')).toBe(true);
    expect(holds({ tables: ['staging'] }, 'INSERT INTO orders SELECT * FROM staging')).toBe(true);
    expect(holds({ tables: ['x', 'y', 'ticks'] }, 'SELECT * FROM ticks JOIN z USING (id)')).toBe(true);
  });

  it('functions: by name in any schema or qualified, case-insensitive', () => {
    expect(holds({ functions: ['pg_sleep'] }, 'SELECT pg_sleep(1)')).toBe(true);
    expect(holds({ functions: ['PG_SLEEP'] }, 'SELECT pg_sleep(1)')).toBe(true);
    expect(holds({ functions: ['pg_catalog.now'] }, 'SELECT now()')).toBe(false); // not qualified by the query
    expect(holds({ functions: ['now'] }, "SELECT * FROM ticks WHERE ts > now() - interval '1 hour'")).toBe(
      true,
    );
    expect(holds({ functions: ['pg_sleep', 'random'] }, 'SELECT random()')).toBe(true);
    expect(holds({ functions: ['pg_sleep'] }, 'SELECT 1')).toBe(false);
  });

  it('user, database and application_name: one or any of a list, exact', () => {
    expect(holds({ user: 'bot1' }, 'SELECT 1')).toBe(true);
    expect(holds({ user: 'Bot1' }, 'SELECT 1')).toBe(false);
    expect(holds({ user: ['bot2', 'bot1'] }, 'SELECT 1')).toBe(true);
    expect(holds({ database: 'trading' }, 'SELECT 1')).toBe(true);
    expect(holds({ database: ['analytics'] }, 'SELECT 1')).toBe(false);
    expect(holds({ application_name: 'dashboard' }, 'SELECT 1')).toBe(true);
    expect(holds({ application_name: ['psql', 'dashboard'] }, 'SELECT 1')).toBe(true);
    expect(holds({ application_name: 'dashboard' }, 'SELECT 1', { ...ctx, applicationName: undefined })).toBe(
      false,
    );
  });

  it('is the AND of the fields given; an empty match holds for everything', () => {
    const m: RuleMatch = { kind: 'delete', has_where: false, tables: ['orders'], user: 'bot1' };
    expect(holds(m, 'DELETE FROM orders')).toBe(true);
    expect(holds(m, 'DELETE FROM trades')).toBe(false);
    expect(holds(m, 'DELETE FROM orders', { ...ctx, user: 'admin' })).toBe(false);
    expect(holds({}, 'SELECT 1')).toBe(true);
    expect(holds({}, 'this is not SQL')).toBe(true);
  });
});

describe('RuleSet.match order and index', () => {
  it('returns every matching rule in set order, across kind, digest and kind-less rules', () => {
    const sql = 'DELETE FROM orders';
    const digest = analyzer.analyze(sql).digest;
    const rules = [
      rule({ tables: ['orders'] }, { name: 'any-kind-1' }),
      rule({ kind: 'delete' }, { name: 'delete-1' }),
      rule({ digest }, { name: 'digest-1' }),
      rule({ kind: 'select' }, { name: 'select-1' }),
      rule({}, { name: 'any-kind-2' }),
      rule({ kind: ['update', 'delete'] }, { name: 'delete-2' }),
      rule({ digest, kind: 'delete' }, { name: 'digest-2' }),
    ];
    const set = new RuleSet(rules, [], ['test.yaml']);
    expect(set.match(analyzer.analyze(sql), ctx).map((r) => r.name)).toEqual([
      'any-kind-1',
      'delete-1',
      'digest-1',
      'any-kind-2',
      'delete-2',
      'digest-2',
    ]);
    expect(set.match(analyzer.analyze('SELECT 1'), ctx).map((r) => r.name)).toEqual([
      'select-1',
      'any-kind-2',
    ]);
    expect(RuleSet.empty.match(analyzer.analyze(sql), ctx)).toEqual([]);
  });

  it('tests a query only against its kind bucket, its digest bucket and kind-less rules', () => {
    // 100 rules: 96 spread over four kinds with table globs and regexes, 4 without a kind.
    const kinds = ['select', 'insert', 'update', 'delete'] as const;
    const rules: Rule[] = [];
    for (let i = 0; i < 96; i++) {
      const kind = kinds[i % 4]!;
      rules.push(rule({ kind, tables: [`t${i}_*`], regex: `/t${i}_x/i` }, { name: `${kind}-${i}` }));
    }
    for (let i = 0; i < 4; i++) rules.push(rule({ tables: [`t${i}_x`] }, { name: `any-${i}` }));
    const set = new RuleSet(rules, [], []);

    const insert = analyzer.analyze('INSERT INTO t5_x VALUES (1)');
    expect(set.candidateCount(insert)).toBe(24 + 4);
    expect(set.match(insert, ctx).map((r) => r.name)).toEqual(['insert-5']);
    const select = analyzer.analyze('SELECT * FROM t1_x JOIN t4_x USING (id)');
    expect(set.match(select, ctx).map((r) => r.name)).toEqual(['select-4', 'any-1']);
    const show = analyzer.analyze('SHOW search_path');
    expect(set.candidateCount(show)).toBe(4);
    expect(set.match(show, ctx)).toEqual([]);

    // Timing is printed, not asserted: it depends on the machine.
    const rounds = 100_000;
    const flat = new RuleSet(
      rules.map((r) => ({ ...r, match: { ...r.match, kind: undefined } })),
      [],
      [],
    );
    for (const [label, s] of [
      ['indexed by kind', set],
      ['no kinds (all 100 tested)', flat],
    ] as const) {
      for (let i = 0; i < 20_000; i++) s.match(insert, ctx); // let the JIT settle first
      const t0 = performance.now();
      for (let i = 0; i < rounds; i++) s.match(insert, ctx);
      const ns = ((performance.now() - t0) * 1e6) / rounds;
      console.log(`RuleSet.match, 100 rules, ${label}: ${ns.toFixed(0)} ns per query`);
    }
  });
});
