// Owns applying the rules in force to one statement: which rules match its analysis, whether one
// blocks it (and the 42501 error that says so), and the text after built-in rewrites. Shared by the
// proxy's sessions and by `sluice rules check|explain`, so both judge a statement the same way.
import { logger } from '../observe/logger.js';
import { createErrorResponse } from '../protocol/backend-messages.js';
import { SqlState } from '../protocol/sqlstate.js';
import type { QueryAnalysis, QueryAnalyzer } from '../query/analysis.js';
import { literalShape } from '../query/literal-shape.js';
import { applyBuiltinRewrite, BUILTIN_REWRITE_NAMES, type BuiltinRewriteName } from './rewrites.js';
import type { MatchContext, RuleSet } from './rule-set.js';
import type { Rule } from './schema.js';

export interface RuleVerdict {
  analysis: QueryAnalysis;
  matched: readonly Rule[];
  /** The first matching rule that blocks, if any. */
  blockedBy: Rule | undefined;
  /** The text after every matching rewrite (undefined: unchanged). */
  rewritten: string | undefined;
  /** One line per rewrite applied. */
  changes: string[];
}

/** Where the rules come from: a watcher in `serve`, a fixed set in the CLI. */
export interface RuleSource {
  readonly current: RuleSet;
}

export class RuleEngine {
  readonly stats = { matched: 0, blocked: 0, rewritten: 0 };
  /** Matches per rule name since start (for metrics and the admin view). */
  readonly matchesByRule = new Map<string, number>();

  constructor(
    private readonly source: RuleSource,
    readonly analyzer: QueryAnalyzer,
  ) {}

  get rules(): RuleSet {
    return this.source.current;
  }

  /** The `cache` action of the first matching rule that has one, without counting a match. */
  cacheActionFor(sql: string, ctx: MatchContext): Rule['cache'] {
    const set = this.source.current;
    if (set.rules.length === 0) return undefined;
    for (const rule of set.match(this.analyze(sql), ctx)) if (rule.cache) return rule.cache;
    return undefined;
  }

  /**
   * The analysis rules match on: that of the text's literal shape when it parses (what a
   * statement reads, writes, calls and its digest do not depend on its literals), so texts that
   * differ only in values share one parse.
   */
  private analyze(sql: string): QueryAnalysis {
    const shape = literalShape(sql);
    if (shape !== undefined) {
      const analysis = this.analyzer.analyze(shape);
      if (analysis.parsed) return analysis;
    }
    return this.analyzer.analyze(sql);
  }

  /** Judges one statement text; undefined when no rule matches (the common case, kept cheap). */
  judge(sql: string, ctx: MatchContext): RuleVerdict | undefined {
    const set = this.source.current;
    if (set.rules.length === 0) return undefined;
    const analysis = this.analyze(sql);
    const matched = set.match(analysis, ctx);
    if (matched.length === 0) return undefined;
    const verdict = explainWith(analysis, matched, sql);
    this.stats.matched++;
    for (const rule of matched) {
      this.matchesByRule.set(rule.name, (this.matchesByRule.get(rule.name) ?? 0) + 1);
      if (rule.log) logger.info({ rule: rule.name, digest: analysis.digest, user: ctx.user }, 'rule matched');
    }
    if (verdict.blockedBy) this.stats.blocked++;
    else if (verdict.rewritten !== undefined) this.stats.rewritten++;
    return verdict;
  }
}

/** What the matching rules do to `sql`: the blocking rule, and the rewritten text. */
export function explainWith(analysis: QueryAnalysis, matched: readonly Rule[], sql: string): RuleVerdict {
  const blockedBy = matched.find((rule) => rule.block !== undefined);
  let text = sql;
  const changes: string[] = [];
  if (!blockedBy) {
    for (const rule of matched) {
      const rewrite = rule.rewrite;
      if (rewrite === undefined || !('builtin' in rewrite)) continue;
      if (!(BUILTIN_REWRITE_NAMES as readonly string[]).includes(rewrite.builtin)) continue;
      const result = applyBuiltinRewrite(rewrite.builtin as BuiltinRewriteName, text);
      if (result === undefined) continue;
      text = result.sql;
      for (const change of result.changes) changes.push(`${rule.name}: ${change}`);
    }
  }
  return { analysis, matched, blockedBy, rewritten: text === sql ? undefined : text, changes };
}

/** The ErrorResponse a blocked statement gets: 42501, naming the rule, its message as hint. */
export function blockedError(rule: Rule): Buffer {
  return createErrorResponse({
    severity: 'ERROR',
    code: SqlState.InsufficientPrivilege,
    message: `statement blocked by Sluice rule "${rule.name}"`,
    detail: `rule defined at ${rule.file}:${rule.line}:${rule.column}`,
    hint: rule.block?.message,
  });
}
