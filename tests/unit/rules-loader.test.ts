// Tests loading rules files: valid files, order across files, and problems reported as
// file:line:column for each kind of mistake; also that the shipped rules/ directory loads and its
// tests agree with the matcher.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadQueryParser, QueryAnalyzer } from '../../src/query/analysis.js';
import { loadRulesDir, loadRulesFile, RulesError } from '../../src/rules/loader.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-rules-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dirCount = 0;
/** A fresh directory holding `files` (name -> text). */
function rulesDir(files: Record<string, string>): string {
  const dir = join(root, `d${++dirCount}`);
  mkdirSync(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

/** The problems loadRulesDir(dir) reports; fails the test when it loads instead. */
function problems(dir: string): string[] {
  try {
    loadRulesDir(dir);
  } catch (err) {
    expect(err).toBeInstanceOf(RulesError);
    return (err as RulesError).problems;
  }
  return expect.fail('expected a RulesError');
}

const valid = `rules:
  - name: no-unbounded-delete
    match: { kind: delete, has_where: false }
    block: { message: "DELETE without WHERE is not allowed" }
  - name: cache-quotes
    match:
      kind: [select]
      tables: ["public.prices", "ticks*"]
      user: [bot1, bot2]
      application_name: dashboard
    cache: { ttl: 60, stale_while_revalidate: 5, serve_stale: true, allow_stable: true }
  - name: everything-else
    match: { regex: "/^select/i", functions: [now], database: trading, has_limit: false }
    rewrite: { template: "SELECT 1" }
    timeout: 2.5
    limit: 1000
    max_concurrency: { limit: 4, queue: true }
    route: replica
    log: true
  - name: fix-time-range
    match: { digest: "SELECT * FROM ticks WHERE ts::date = $1" }
    rewrite: { builtin: sargable-time-range }
tests:
  - query: "DELETE FROM orders"
    expect: blocked
  - query: "SELECT 1"
    expect: { rewritten: "SELECT 1" }
`;

describe('loadRulesFile on valid files', () => {
  it('returns every rule with its position and every field as written', () => {
    const dir = rulesDir({ 'a.yaml': valid });
    const { rules, tests } = loadRulesFile(join(dir, 'a.yaml'));
    expect(rules.map((r) => [r.name, r.line, r.column])).toEqual([
      ['no-unbounded-delete', 2, 5],
      ['cache-quotes', 5, 5],
      ['everything-else', 12, 5],
      ['fix-time-range', 20, 5],
    ]);
    expect(rules[0]).toEqual({
      name: 'no-unbounded-delete',
      file: join(dir, 'a.yaml'),
      line: 2,
      column: 5,
      match: { kind: 'delete', has_where: false },
      block: { message: 'DELETE without WHERE is not allowed' },
    });
    expect(rules[1]?.match).toEqual({
      kind: ['select'],
      tables: ['public.prices', 'ticks*'],
      user: ['bot1', 'bot2'],
      application_name: 'dashboard',
    });
    expect(rules[1]?.cache).toEqual({
      ttl: 60,
      stale_while_revalidate: 5,
      serve_stale: true,
      allow_stable: true,
    });
    const e = rules[2]!;
    expect([e.rewrite, e.timeout, e.limit, e.max_concurrency, e.route, e.log]).toEqual([
      { template: 'SELECT 1' },
      2.5,
      1000,
      { limit: 4, queue: true },
      'replica',
      true,
    ]);
    expect(rules[3]?.rewrite).toEqual({ builtin: 'sargable-time-range' });
    expect(tests).toEqual([
      { query: 'DELETE FROM orders', expect: 'blocked', file: join(dir, 'a.yaml'), line: 24, column: 5 },
      {
        query: 'SELECT 1',
        expect: { rewritten: 'SELECT 1' },
        file: join(dir, 'a.yaml'),
        line: 26,
        column: 5,
      },
    ]);
  });

  it('accepts an empty file, a comment-only file and a file with only tests', () => {
    const dir = rulesDir({
      'a.yaml': '',
      'b.yaml': '# nothing yet\n',
      'c.yml': 'tests:\n  - query: "SELECT 1"\n    expect: allowed\n',
    });
    const set = loadRulesDir(dir);
    expect(set.rules).toEqual([]);
    expect(set.tests.map((t) => t.query)).toEqual(['SELECT 1']);
    expect(set.files).toEqual(['a.yaml', 'b.yaml', 'c.yml'].map((n) => join(dir, n)));
  });
});

describe('loadRulesDir order', () => {
  it('applies files in name order, rules in file order, and ignores other and hidden files', () => {
    const rule = (name: string) => `  - name: ${name}\n    match: { kind: select }\n    log: true\n`;
    const dir = rulesDir({
      '20-b.yaml': `rules:\n${rule('b1')}${rule('b2')}`,
      '10-a.yml': `rules:\n${rule('a1')}`,
      '30-c.yaml': `rules:\n${rule('c1')}`,
      'README.md': 'not rules',
      '.20-b.yaml.swp.yaml': 'garbage: [',
      'notes.txt': 'rules: [',
    });
    const set = loadRulesDir(dir);
    expect(set.rules.map((r) => r.name)).toEqual(['a1', 'b1', 'b2', 'c1']);
    expect(set.files).toEqual(['10-a.yml', '20-b.yaml', '30-c.yaml'].map((n) => join(dir, n)));
  });

  it('loads an empty directory as no rules and refuses a missing one', () => {
    expect(loadRulesDir(rulesDir({})).rules).toEqual([]);
    const missing = join(root, 'no-such-dir');
    expect(problems(missing)).toEqual([
      expect.stringMatching(/^.*no-such-dir: cannot read directory: ENOENT/),
    ]);
  });
});

describe('loadRulesDir problems, each at file:line:column', () => {
  it('names an unknown key at the key, inside match and at rule level', () => {
    const dir = rulesDir({
      'a.yaml': `rules:
  - name: r1
    match: { kind: delete, has_wher: false }
    block: { message: "no" }
  - name: r2
    match: { kind: select }
    cahce: { ttl: 5 }
`,
    });
    const f = join(dir, 'a.yaml');
    expect(problems(dir)).toEqual([
      `${f}:3:28: rule "r1": match.has_wher: unknown key "has_wher"`,
      `${f}:7:5: rule "r2": cahce: unknown key "cahce"`,
      // r2 then has no action left: said at the rule.
      `${f}:5:5: rule "r2": a rule needs at least one action (block, cache, rewrite, timeout, limit, max_concurrency, route, log)`,
    ]);
  });

  it('names a value of the wrong type at the value', () => {
    const dir = rulesDir({
      'a.yaml': `rules:
  - name: r1
    match:
      kind: delete
      has_where: "no"
    block: { message: "no" }
  - name: r2
    match: { kind: selct }
    cache: { ttl: -1 }
`,
    });
    const f = join(dir, 'a.yaml');
    expect(problems(dir)).toEqual([
      `${f}:5:18: rule "r1": match.has_where: expected boolean, received string`,
      `${f}:8:20: rule "r2": match.kind: expected one of select, insert, update, delete, merge, truncate, copy_from, copy_to, ddl, transaction, set, show, listen, notify, explain, call, do, utility, multi, unknown`,
      `${f}:9:19: rule "r2": cache.ttl: Too small: expected number to be >0`,
    ]);
  });

  it('names a missing key at its mapping and a bad test expectation at the value', () => {
    const dir = rulesDir({
      'a.yaml': `rules:
  - match: { kind: delete }
    block: { message: "no" }
tests:
  - query: "DELETE FROM t"
    expect: refused
`,
    });
    const f = join(dir, 'a.yaml');
    expect(problems(dir)).toEqual([
      `${f}:2:5: rules[0]: name: missing (expected string)`,
      `${f}:6:13: tests[0]: expect: expected blocked, allowed, cached or { rewritten: "<sql>" }`,
    ]);
  });

  it('names a regex that does not compile, with the engine message, at the regex', () => {
    const dir = rulesDir({
      'a.yaml': `rules:
  - name: bad-regex
    match: { regex: "FROM (orders" }
    log: true
  - name: bad-flags
    match:
      regex: "/orders/g"
    log: true
`,
    });
    const f = join(dir, 'a.yaml');
    expect(problems(dir)).toEqual([
      `${f}:3:21: rule "bad-regex": match.regex: Invalid regular expression: /FROM (orders/: Unterminated group`,
      `${f}:7:14: rule "bad-flags": match.regex: unsupported regex flags "g" (allowed: i, m, s, u)`,
    ]);
  });

  it('names an unknown built-in rewrite and a rewrite with both or neither form', () => {
    const dir = rulesDir({
      'a.yaml': `rules:
  - name: r1
    match: { kind: select }
    rewrite: { builtin: make-it-fast }
  - name: r2
    match: { kind: select }
    rewrite: { builtin: count-exists, template: "SELECT 1" }
`,
    });
    const f = join(dir, 'a.yaml');
    expect(problems(dir)).toEqual([
      `${f}:7:14: rule "r2": rewrite: rewrite needs exactly one of builtin or template`,
    ]);
    const dir2 = rulesDir({
      'a.yaml': `rules:\n  - name: r1\n    match: {}\n    rewrite: { builtin: make-it-fast }\n`,
    });
    expect(problems(dir2)).toEqual([
      `${join(dir2, 'a.yaml')}:4:25: rule "r1": rewrite.builtin: unknown built-in rewrite "make-it-fast" (known: sargable-time-range, count-exists)`,
    ]);
  });

  it('names a duplicate rule name at the second rule, across files and within one', () => {
    const rule = (name: string) => `  - name: ${name}\n    match: { kind: select }\n    log: true\n`;
    const dir = rulesDir({
      '10-a.yaml': `rules:\n${rule('shared')}${rule('own')}`,
      '20-b.yaml': `# second file\nrules:\n${rule('other')}${rule('shared')}`,
      '30-c.yaml': `rules:\n${rule('twice')}${rule('twice')}`,
    });
    expect(problems(dir)).toEqual([
      `${join(dir, '20-b.yaml')}:6:5: duplicate rule name "shared" (first defined at ${join(dir, '10-a.yaml')}:2:5)`,
      `${join(dir, '30-c.yaml')}:5:5: duplicate rule name "twice" (first defined at ${join(dir, '30-c.yaml')}:2:5)`,
    ]);
  });

  it('names a YAML syntax error, a duplicate key and a file that is not a mapping', () => {
    const dir = rulesDir({
      'a.yaml': `rules:\n  - name: r1\n    match: { kind: select\n    log: true\n`,
      'b.yaml': `rules:\n  - name: r1\n    name: r2\n    match: {}\n    log: true\n`,
      'c.yaml': `- name: r1\n`,
    });
    const p = problems(dir);
    // A broken file refuses the whole load, and every file's problems are listed.
    expect(p[0]).toMatch(new RegExp(`^${join(dir, 'a.yaml')}:4:5: `));
    expect(p).toContain(`${join(dir, 'b.yaml')}:3:5: Map keys must be unique`);
    expect(p).toContain(`${join(dir, 'c.yaml')}:1:1: expected a mapping with rules: and tests:`);
  });

  it('refuses the whole directory when one file is broken', () => {
    const dir = rulesDir({
      '10-ok.yaml': 'rules:\n  - name: ok\n    match: {}\n    log: true\n',
      '20-bad.yaml': 'rules:\n  - name: bad\n    match: { kind: select }\n    log: maybe\n',
    });
    expect(problems(dir)).toEqual([
      `${join(dir, '20-bad.yaml')}:4:10: rule "bad": log: expected boolean, received string`,
    ]);
  });
});

describe('the shipped rules/ directory', () => {
  beforeAll(loadQueryParser);

  it('loads, and its blocked / cached / allowed tests agree with the matcher', () => {
    const set = loadRulesDir('rules');
    expect(set.files.map((f) => f.replace(/^rules\//, ''))).toEqual([
      '10-safety.yaml',
      '20-cache.yaml',
      '30-rewrites.yaml',
      '40-limits.yaml',
    ]);
    expect(set.tests.length).toBeGreaterThan(0);
    const analyzer = new QueryAnalyzer();
    const ctx = { user: 'bot', database: 'trading', applicationName: undefined };
    for (const test of set.tests) {
      if (typeof test.expect !== 'string') continue; // rewritten text is the rewrite engine's to check
      const matched = set.match(analyzer.analyze(test.query), ctx);
      // The precedence `sluice rules check` uses, minus rewrites: a block wins, then a cache rule.
      const outcome = matched.some((r) => r.block)
        ? 'blocked'
        : matched.some((r) => r.cache)
          ? 'cached'
          : 'allowed';
      expect(`${test.line}: ${test.query} -> ${outcome}`).toBe(
        `${test.line}: ${test.query} -> ${test.expect}`,
      );
    }
  });
});
