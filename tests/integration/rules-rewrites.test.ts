// Proves the built-in rewrites (src/rules/rewrites.ts) against the real server: original and
// rewritten statements return the same rows on boundary data in several TimeZones, and the
// rewritten time ranges reach an index the original could not use.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadQueryParser } from '../../src/query/analysis.js';
import { applyBuiltinRewrite, type BuiltinRewriteName } from '../../src/rules/rewrites.js';
import { createTestDatabase, directClient, dropTestDatabase } from './harness/database.js';

let database: string;
let client: pg.Client;

// Midnights, month ends, the leap day and the DST changes of 2024 in Europe/Berlin (03-31, 10-27)
// and America/New_York (03-10, 11-03), each as wall-clock time; rows are stored for each of them
// read as UTC, Berlin and New York local time, then shifted by the offsets below.
const WALL_TIMES = [
  '2024-01-01 00:00',
  '2024-02-29 00:00',
  '2024-02-29 23:59:59.999999',
  '2024-03-01 00:00',
  '2024-03-10 02:00',
  '2024-03-10 03:00',
  '2024-03-31 00:00',
  '2024-03-31 02:00',
  '2024-03-31 03:00',
  '2024-04-01 00:00',
  '2024-10-27 02:00',
  '2024-10-27 03:00',
  '2024-10-28 00:00',
  '2024-11-03 01:00',
  '2024-11-03 02:00',
  '2024-12-31 23:30',
  '2025-01-01 00:00',
];
const SHIFTS = ['-1 hour', '-1 microsecond', '0', '1 microsecond', '30 minutes', '59 minutes', '1 hour'];
const ZONES = ['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe'];

interface Case {
  rule: BuiltinRewriteName;
  /** `%c` stands for the column (ts: timestamp, tz: timestamptz). */
  predicate: string;
  params?: string[];
}

const DAYS = [
  '2024-02-29',
  '2024-03-01',
  '2024-03-10',
  '2024-03-31',
  '2024-10-27',
  '2024-11-03',
  '2025-01-01',
];
const HOURS = [
  '2024-03-10 02:00',
  '2024-03-10 03:00',
  '2024-03-31 02:00',
  '2024-03-31 03:00',
  '2024-10-27 02:00',
  '2024-11-03 01:00',
  '2024-02-29 23:00',
];
const CASES: Case[] = [
  ...DAYS.map((d) => ({ rule: 'sargable-time-range' as const, predicate: `date_trunc('day', %c) = '${d}'` })),
  ...DAYS.map((d) => ({
    rule: 'sargable-time-range' as const,
    predicate: `date_trunc('day', %c) = $1`,
    params: [d],
  })),
  ...DAYS.map((d) => ({ rule: 'sargable-time-range' as const, predicate: `%c::date = '${d}'` })),
  ...DAYS.map((d) => ({ rule: 'sargable-time-range' as const, predicate: `date(%c) = $1`, params: [d] })),
  ...['2024-02-26', '2024-03-25', '2024-10-21', '2024-10-28'].map((d) => ({
    rule: 'sargable-time-range' as const,
    predicate: `date_trunc('week', %c) = '${d}'`,
  })),
  ...['2024-02-01', '2024-03-01', '2024-10-01', '2024-11-01', '2024-12-01'].flatMap((d) => [
    { rule: 'sargable-time-range' as const, predicate: `date_trunc('month', %c) = '${d}'` },
    { rule: 'sargable-time-range' as const, predicate: `date_trunc('month', %c) = $1`, params: [d] },
  ]),
  ...['2024-01-01', '2025-01-01'].map((d) => ({
    rule: 'sargable-time-range' as const,
    predicate: `date_trunc('year', %c) = '${d}'`,
  })),
  ...HOURS.flatMap((h) => [
    { rule: 'sargable-time-range' as const, predicate: `date_trunc('hour', %c) = $1`, params: [h] },
    { rule: 'sargable-time-range' as const, predicate: `date_trunc('minute', %c) = $1`, params: [h] },
  ]),
  // unaligned parameters: the original is false on every row, and so is the rewrite
  { rule: 'sargable-time-range', predicate: `date_trunc('day', %c) = $1`, params: ['2024-03-31 10:00'] },
  { rule: 'sargable-time-range', predicate: `date_trunc('hour', %c) = $1`, params: ['2024-03-31 10:30'] },
  { rule: 'sargable-time-range', predicate: `date(%c) = $1`, params: ['2024-03-31 10:30'] },
  { rule: 'sargable-time-range', predicate: `date(%c) BETWEEN '2024-02-29' AND '2024-03-31'` },
  {
    rule: 'sargable-time-range',
    predicate: `%c::date BETWEEN $1 AND $2`,
    params: ['2024-10-27', '2024-11-03'],
  },
  { rule: 'sargable-time-range', predicate: `NOT (date_trunc('day', %c) = '2024-03-31')` },
  ...[0, 1709164800, 1711846800, 1711846799, 1730595600, 1735689600].flatMap((n) =>
    ['>', '>=', '<', '<='].map((op) => ({
      rule: 'sargable-time-range' as const,
      predicate: `extract(epoch from %c) ${op} ${n}`,
    })),
  ),
];

beforeAll(async () => {
  await loadQueryParser();
  database = await createTestDatabase('rules_rewrites');
  client = await directClient(database);
  await client.query('CREATE TABLE t (id serial PRIMARY KEY, ts timestamp, tz timestamptz)');
  for (const zone of ['UTC', 'Europe/Berlin', 'America/New_York']) {
    await client.query(`SET TimeZone = '${zone}'`);
    await client.query(
      `INSERT INTO t (ts, tz)
       SELECT w::timestamp + s::interval, w::timestamptz + s::interval
       FROM unnest($1::text[]) w, unnest($2::text[]) s`,
      [WALL_TIMES, SHIFTS],
    );
  }
  await client.query('INSERT INTO t (ts, tz) VALUES (NULL, NULL)');
  await client.query('RESET TimeZone');
});

afterAll(async () => {
  await client?.end();
  if (database !== undefined) await dropTestDatabase(database);
});

async function ids(predicate: string, params: string[] = []): Promise<number[]> {
  const r = await client.query<{ id: number }>(`SELECT id FROM t WHERE ${predicate} ORDER BY id`, params);
  return r.rows.map((row) => row.id);
}

describe('rewritten predicates return the rows of the original', () => {
  for (const zone of ZONES) {
    it(`in TimeZone ${zone}, for timestamp and timestamptz columns`, async () => {
      await client.query(`SET TimeZone = '${zone}'`);
      let nonEmpty = 0;
      for (const c of CASES) {
        for (const column of ['ts', 'tz']) {
          const original = `SELECT id FROM t WHERE ${c.predicate.replaceAll('%c', column)} ORDER BY id`;
          const rewritten = applyBuiltinRewrite(c.rule, original);
          expect(rewritten, original).toBeDefined();
          const a = await client.query<{ id: number }>(original, c.params ?? []);
          const b = await client.query<{ id: number }>(rewritten!.sql, c.params ?? []);
          expect(b.rows, `${rewritten!.sql} ${JSON.stringify(c.params ?? [])}`).toEqual(a.rows);
          if (a.rows.length > 0) nonEmpty++;
        }
      }
      // the comparison is not vacuous
      expect(nonEmpty).toBeGreaterThan(CASES.length);
    });
  }

  it('count-exists: same rows for correlated, uncorrelated, empty and NOT forms', async () => {
    await client.query('CREATE TABLE child (t_id int, flag boolean)');
    await client.query('INSERT INTO child SELECT id, id % 3 = 0 FROM t WHERE id % 2 = 0');
    await client.query('INSERT INTO child VALUES (NULL, NULL)');
    for (const predicate of [
      '(SELECT count(*) FROM child c WHERE c.t_id = t.id) > 0',
      '(SELECT count(*) FROM child c WHERE c.t_id = t.id AND c.flag) >= 1',
      '0 <> (SELECT count(*) FROM child c WHERE c.t_id = t.id AND NOT c.flag)',
      '(SELECT count(*) FROM child c WHERE c.t_id = t.id) = 0',
      'NOT ((SELECT count(*) FROM child c WHERE c.t_id = t.id) > 0)',
      '(SELECT count(*) FROM child c WHERE c.t_id < 0) > 0',
      '(SELECT count(*) FROM child c WHERE c.t_id IS NULL) > 0',
    ]) {
      const original = `SELECT id FROM t WHERE ${predicate} ORDER BY id`;
      const rewritten = applyBuiltinRewrite('count-exists', original);
      expect(rewritten, original).toBeDefined();
      expect(await ids(predicate)).toEqual(
        (await client.query<{ id: number }>(rewritten!.sql)).rows.map((r) => r.id),
      );
    }
  });

  it('differs for timestamptz in America/Havana, where local midnight repeats (the documented limit)', async () => {
    // DST ends there on 2024-11-03 at 01:00 back to 00:00: 00:30-04 has local date 2024-11-03,
    // but date_trunc('day') of it is 00:00-05, an hour later than the row itself.
    await client.query(`SET TimeZone = 'America/Havana'`);
    await client.query(`INSERT INTO t (tz) VALUES ('2024-11-03 04:30+00')`);
    const original = `SELECT id FROM t WHERE date_trunc('day', tz) = '2024-11-03' ORDER BY id`;
    const a = await client.query<{ id: number }>(original);
    const b = await client.query<{ id: number }>(applyBuiltinRewrite('sargable-time-range', original)!.sql);
    expect(b.rows.length).toBeLessThan(a.rows.length);
    await client.query(`DELETE FROM t WHERE tz = '2024-11-03 04:30+00' AND ts IS NULL`);
    await client.query('RESET TimeZone');
  });
});

describe('EXPLAIN after the rewrite', () => {
  it('uses an index on the column where the original scans the table', async () => {
    await client.query('CREATE TABLE big (id int, ts timestamp, tz timestamptz, pad text)');
    await client.query(
      `INSERT INTO big SELECT g, '2023-01-01'::timestamp + g * interval '5 minutes',
              '2023-01-01'::timestamptz + g * interval '5 minutes', repeat('x', 40)
       FROM generate_series(1, 100000) g`,
    );
    await client.query('CREATE INDEX ON big (ts)');
    await client.query('CREATE INDEX ON big (tz)');
    await client.query('ANALYZE big');
    const plans: Record<string, string> = {};
    for (const [rule, query] of [
      ['sargable-time-range', "SELECT * FROM big WHERE date_trunc('day', ts) = '2023-06-01'"],
      ['sargable-time-range', "SELECT * FROM big WHERE date_trunc('month', tz) = $1"],
      ['sargable-time-range', "SELECT * FROM big WHERE ts::date = '2023-06-01'"],
      ['sargable-time-range', 'SELECT * FROM big WHERE extract(epoch from tz) > 1700000000'],
    ] as const) {
      const rewritten = applyBuiltinRewrite(rule, query)!.sql;
      const params = query.includes('$1') ? ['2023-06-01'] : [];
      const before = await explain(query, params);
      const after = await explain(rewritten, params);
      plans[query] = `${before}\n--- rewritten: ${rewritten}\n${after}`;
      expect(before).toMatch(/Seq Scan on big/);
      expect(after).toMatch(/Index (Only )?Scan|Bitmap Index Scan/);
      expect(after).toMatch(/Index Cond: \(\(?t[sz] [<>]/);
    }
    console.log(
      Object.entries(plans)
        .map(([q, p]) => `${q}\n${p}`)
        .join('\n\n'),
    );
  });
});

async function explain(sql: string, params: string[]): Promise<string> {
  if (params.length === 0) {
    const r = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`);
    return r.rows.map((row) => row['QUERY PLAN']).join('\n');
  }
  // A parameter's type is inferred as in the Extended Query protocol; the first executions of a
  // prepared statement get a plan for the actual value.
  await client.query(`PREPARE explained AS ${sql}`);
  try {
    const args = params.map((p) => client.escapeLiteral(p)).join(', ');
    const r = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE explained(${args})`);
    return r.rows.map((row) => row['QUERY PLAN']).join('\n');
  } finally {
    await client.query('DEALLOCATE explained');
  }
}
