// Owns what `sluice rules check` and `sluice rules explain` print: running a rules directory's own
// test cases, and showing what Sluice would do with one statement (analysis, matching rules, final
// text). Both judge statements exactly as the proxy does (RuleEngine).
import { loadQueryParser, QueryAnalyzer } from '../query/analysis.js';
import { AntiPatternReport } from './anti-patterns.js';
import { loadRulesDir } from './loader.js';
import { RuleEngine } from './rule-engine.js';
import type { MatchContext, RuleSet } from './rule-set.js';

export interface CommandOutput {
  text: string;
  /** Exit code: 0 all good, 1 a test failed, 2 the rules do not load. */
  code: number;
}

const DEFAULT_CONTEXT: MatchContext = { user: 'postgres', database: 'postgres', applicationName: undefined };

/** Loads `dir` and runs the `tests:` its files carry. */
export async function checkRules(dir: string, ctx: MatchContext = DEFAULT_CONTEXT): Promise<CommandOutput> {
  await loadQueryParser();
  const set = loadRulesDir(dir);
  const engine = new RuleEngine({ current: set }, new QueryAnalyzer(), null);
  const lines: string[] = [`${set.rules.length} rules in ${set.files.length} files`];
  let failures = 0;
  for (const test of set.tests) {
    const verdict = engine.judge(test.query, ctx);
    const outcome = verdict?.blockedBy
      ? 'blocked'
      : verdict?.rewritten !== undefined
        ? { rewritten: verdict.rewritten }
        : verdict?.matched.some((r) => r.cache !== undefined)
          ? 'cached'
          : 'allowed';
    const expected = test.expect;
    const pass =
      typeof expected === 'string'
        ? outcome === expected
        : typeof outcome === 'object' &&
          normalizeSpace(outcome.rewritten) === normalizeSpace(expected.rewritten);
    if (!pass) failures++;
    const where = `${test.file}:${test.line}:${test.column}`;
    lines.push(
      `${pass ? 'ok  ' : 'FAIL'} ${where} ${oneLine(test.query)}` +
        (pass ? '' : `\n     expected ${describe(expected)}, got ${describe(outcome)}`),
    );
  }
  lines.push(`${set.tests.length - failures} of ${set.tests.length} tests passed`);
  return { text: lines.join('\n'), code: failures > 0 ? 1 : 0 };
}

/** What the rules in `set` make of `sql`. */
export async function explainStatement(
  sql: string,
  set: RuleSet,
  ctx: MatchContext = DEFAULT_CONTEXT,
): Promise<CommandOutput> {
  await loadQueryParser();
  const analyzer = new QueryAnalyzer();
  const analysis = analyzer.analyze(sql);
  const names = (refs: readonly { schema: string | undefined; name: string }[]) =>
    refs.length === 0 ? '-' : refs.map((r) => (r.schema ? `${r.schema}.${r.name}` : r.name)).join(', ');
  const lines = [
    'analysis',
    `  parsed:        ${analysis.parsed}`,
    `  kind:          ${analysis.kind}${analysis.readOnly ? ' (read-only)' : ''}`,
    `  tables read:   ${names(analysis.tablesRead)}`,
    `  tables written: ${names(analysis.tablesWritten)}`,
    `  functions:     ${names(analysis.functions)}`,
    `  has_where:     ${analysis.hasWhere}   has_limit: ${analysis.hasLimit}`,
    `  digest:        ${analysis.digest}`,
    `  fingerprint:   ${analysis.fingerprint || '-'}`,
  ];
  const patterns = new AntiPatternReport({ logIntervalMs: Number.POSITIVE_INFINITY });
  patterns.observe(analysis, sql, {}, ctx.database);
  lines.push(
    `  anti-patterns: ${
      patterns
        .report()
        .map((e) => e.pattern)
        .join(', ') || '-'
    }`,
  );
  const verdict = new RuleEngine({ current: set }, analyzer, null).judge(sql, ctx);
  lines.push(`rules (${set.rules.length} loaded)`);
  if (!verdict) {
    lines.push('  none match');
  } else {
    for (const rule of verdict.matched) {
      const actions = Object.keys(rule).filter(
        (k) =>
          !['name', 'file', 'line', 'column', 'match'].includes(k) &&
          rule[k as keyof typeof rule] !== undefined,
      );
      lines.push(
        `  ${rule.name}  (${rule.file}:${rule.line}:${rule.column})  ${actions.join(', ') || 'match only'}`,
      );
    }
  }
  if (verdict?.blockedBy) {
    lines.push(
      'result',
      `  blocked by "${verdict.blockedBy.name}": ${verdict.blockedBy.block?.message ?? ''}`,
    );
  } else {
    for (const change of verdict?.changes ?? []) lines.push(`  rewrite ${change}`);
    const timed = verdict?.matched.find((rule) => rule.timeout !== undefined);
    if (timed !== undefined) {
      lines.push(
        verdict?.timeoutPrefix === undefined
          ? `  timeout ${timed.timeout} s (${timed.name}): not applicable to a ${analysis.kind} statement`
          : `  timeout ${timed.timeout} s (${timed.name}): sent as "${verdict.timeoutPrefix}<final query>" ` +
              'when outside a transaction block (simple protocol); 57014 when exceeded',
      );
    }
    const slot = verdict?.concurrency;
    if (slot !== undefined) {
      const mc = slot.rule.max_concurrency!;
      lines.push(
        `  max_concurrency ${mc.limit} per digest (${slot.rule.name}): ` +
          (mc.queue ? 'more wait their turn' : 'more are refused with 53300'),
      );
    }
    if (verdict?.route !== undefined) {
      lines.push(
        `  route ${verdict.route}: recorded only — Sluice has no replicas yet, so every statement runs on the primary`,
      );
    }
    lines.push('final query', `  ${verdict?.rewritten ?? sql}`);
  }
  return { text: lines.join('\n'), code: 0 };
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > 80 ? `${t.slice(0, 77)}...` : t;
}

function normalizeSpace(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

function describe(outcome: string | { rewritten: string }): string {
  return typeof outcome === 'string' ? outcome : `rewritten to "${oneLine(outcome.rewritten)}"`;
}
