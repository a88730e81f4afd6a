// The anti-pattern report (src/rules/anti-patterns.ts): each pattern found on the texts that show it
// and not on their fixed versions, counted per pattern and digest, bounded, N+1 per transaction.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadQueryParser, QueryAnalyzer } from '../../src/query/analysis.js';
import { literalShape } from '../../src/query/literal-shape.js';
import { type AntiPattern, AntiPatternReport } from '../../src/rules/anti-patterns.js';

const analyzer = new QueryAnalyzer();

beforeAll(async () => {
  await loadQueryParser();
});

/** As the rule engine sees a text: the analysis of its literal shape when that parses. */
function analysisOf(sql: string) {
  const shape = literalShape(sql);
  const a = shape === undefined ? undefined : analyzer.analyze(shape);
  return a?.parsed ? a : analyzer.analyze(sql);
}

function patternsOf(sql: string, report = new AntiPatternReport({ logIntervalMs: 1e9 })): AntiPattern[] {
  report.observe(analysisOf(sql), sql, {}, 'db');
  return report.report().map((e) => e.pattern);
}

describe('anti-patterns', () => {
  it.each<[string, AntiPattern]>([
    ['select * from ticks', 'select-star-unbounded'],
    ["select * from ticks where symbol = 'AAPL'", 'select-star-unbounded'],
    ['select t.* from ticks t join symbols s using (symbol)', 'select-star-unbounded'],
    ['delete from orders', 'write-without-where'],
    ['update positions set quantity = 0', 'write-without-where'],
    [
      'select id from orders where account_id not in (select id from accounts where closed)',
      'not-in-subquery',
    ],
    ["select id from symbols where name like '%corp'", 'leading-wildcard-like'],
    ["select id from symbols where name ilike '_pple%'", 'leading-wildcard-like'],
    ['select id from orders order by id limit 50 offset 5000', 'deep-offset'],
  ])('%s -> %s', (sql, pattern) => {
    expect(patternsOf(sql)).toContain(pattern);
  });

  it.each([
    "select * from ticks where ts >= '2024-03-01' and ts < '2024-03-02'",
    "select * from ticks where ts between '2024-03-01' and '2024-03-02'",
    'select * from ticks limit 10',
    'select symbol, price from ticks',
    'delete from orders where id = 1',
    'select id from orders where account_id not in (1, 2, 3)',
    'select id from orders where not exists (select 1 from accounts a where a.id = account_id)',
    "select id from symbols where name like 'App%'",
    'select id from orders order by id limit 50 offset 100',
    'select 1',
  ])('none: %s', (sql) => {
    expect(patternsOf(sql)).toEqual([]);
  });

  it('asks about table size when it can, and a small table is no concern', () => {
    const report = new AntiPatternReport({ isLargeTable: (_db, t) => t.name === 'ticks' });
    expect(patternsOf('select * from settings', report)).toEqual([]);
    expect(patternsOf('select * from ticks', report)).toEqual(['select-star-unbounded']);
  });

  it('counts per pattern and digest, with the first example cut short', () => {
    const report = new AntiPatternReport({ exampleChars: 20, logIntervalMs: 1e9 });
    for (const n of [1, 2, 3]) {
      const sql = `select id from t where a like '%x${n}'`;
      report.observe(analysisOf(sql), sql, {}, 'db');
    }
    const [entry] = report.report();
    expect(entry).toMatchObject({
      pattern: 'leading-wildcard-like',
      count: 3,
      example: 'select id from t ...',
    });
    expect(entry!.digest).toBe('select id from t where a like $1');
    expect(entry!.lastSeen).toBeGreaterThan(0);
  });

  it('keeps at most maxEntries, dropping the least recently seen', () => {
    const report = new AntiPatternReport({ maxEntries: 3, logIntervalMs: 1e9 });
    const see = (table: string) =>
      report.observe(analysisOf(`delete from ${table}`), `delete from ${table}`, {}, 'db');
    see('a');
    see('b');
    see('c');
    see('a');
    see('d');
    expect(
      report
        .report()
        .map((e) => e.digest)
        .sort(),
    ).toEqual(['delete from a', 'delete from c', 'delete from d']);
  });

  it('finds an N+1 burst inside one transaction, not across transactions', () => {
    const report = new AntiPatternReport({ burstThreshold: 5, logIntervalMs: 1e9 });
    const session = {};
    const run = (n: number) => {
      for (let i = 0; i < n; i++) {
        const sql = `select price from ticks where id = ${i}`;
        report.observe(analysisOf(sql), sql, session, 'db');
      }
    };
    run(4);
    report.endTransaction(session);
    run(4);
    expect(report.report()).toEqual([]);
    run(1);
    expect(report.report().map((e) => [e.pattern, e.digest])).toEqual([
      ['n-plus-one', 'select price from ticks where id = $1'],
    ]);
  });
});
