// What `sluice rules explain` prints for the actions beyond block and rewrite (src/rules/commands.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explainStatement } from '../../src/rules/commands.js';
import { loadRulesDir } from '../../src/rules/loader.js';
import type { RuleSet } from '../../src/rules/rule-set.js';

let dir: string;
let set: RuleSet;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-explain-'));
  writeFileSync(
    path.join(dir, 'r.yaml'),
    `rules:
  - name: slow
    match: { tables: [trades] }
    timeout: 2.5
  - name: cap
    match: { tables: [trades] }
    limit: 100
  - name: few
    match: { tables: [trades] }
    max_concurrency: { limit: 3, queue: true }
  - name: to-replica
    match: { tables: [trades] }
    route: replica
`,
  );
  set = loadRulesDir(dir);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('rules explain', () => {
  it('shows the timeout, the cap, the concurrency limit and that route is recorded only', async () => {
    const { text } = await explainStatement('select * from trades where id > 5 offset 5000', set);
    expect(text).toContain(
      'timeout 2.5 s (slow): sent as "SET LOCAL statement_timeout = 2500; <final query>"',
    );
    expect(text).toContain('rewrite cap: at most 100 rows');
    expect(text).toContain('max_concurrency 3 per digest (few): more wait their turn');
    expect(text).toContain('route replica: recorded only');
    expect(text).toContain('anti-patterns: deep-offset');
    expect(text).toMatch(/final query\n {2}select \* from trades where id > 5 offset 5000\nLIMIT 100$/);
  });

  it('says when a timeout cannot apply to the statement kind', async () => {
    const { text } = await explainStatement('truncate trades', set);
    expect(text).toContain('timeout 2.5 s (slow): not applicable to a truncate statement');
  });
});
