// Owns applying the rules in force to one statement: which rules match its analysis, whether one
// blocks it (and the 42501 error that says so), and the text after built-in rewrites. Shared by the
// proxy's sessions and by `sluice rules check|explain`, so both judge a statement the same way.
import { logger } from '../observe/logger.js';
import { createErrorResponse } from '../protocol/backend-messages.js';
import { SqlState } from '../protocol/sqlstate.js';
import type { QueryAnalysis, QueryAnalyzer } from '../query/analysis.js';
import { literalShape } from '../query/literal-shape.js';
import { AntiPatternReport } from './anti-patterns.js';
import { ConcurrencyLimiter } from './concurrency.js';
import { applyBuiltinRewrite, BUILTIN_REWRITE_NAMES, type BuiltinRewriteName } from './rewrites.js';
import type { MatchContext, RuleSet } from './rule-set.js';
import type { Rule } from './schema.js';
import { applyRowLimit, applyTemplate, timeoutPrefix } from './text-actions.js';

export interface RuleVerdict {
  analysis: QueryAnalysis;
  matched: readonly Rule[];
  /** The first matching rule that blocks, if any. */
  blockedBy: Rule | undefined;
  /** The text after every matching rewrite (undefined: unchanged). */
  rewritten: string | undefined;
  /** One line per rewrite applied. */
  changes: string[];
  /**
   * `SET LOCAL statement_timeout = ...; ` to put in front of the final text, from the first
   * matching rule with a `timeout` (undefined: none, or a statement kind it cannot apply to).
   */
  timeoutPrefix: string | undefined;
  /** The first matching rule with `max_concurrency`, and the key its slots are counted under. */
  concurrency: { rule: Rule; key: string } | undefined;
  /** The first matching rule's `route`: recorded only, there are no replicas yet. */
  route: 'primary' | 'replica' | undefined;
}

/** Where the rules come from: a watcher in `serve`, a fixed set in the CLI. */
export interface RuleSource {
  readonly current: RuleSet;
}

export class RuleEngine {
  readonly stats = { matched: 0, blocked: 0, rewritten: 0 };
  /** Matches per rule name since start (for metrics and the admin view). */
  readonly matchesByRule = new Map<string, number>();
  /** Slots of `max_concurrency` rules, shared by every session of this process. */
  readonly concurrency = new ConcurrencyLimiter();

  /**
   * @param antiPatterns where statements judged here are reported (null: nowhere, as in the CLI,
   *   whose output is the report itself).
   */
  constructor(
    private readonly source: RuleSource,
    readonly analyzer: QueryAnalyzer,
    readonly antiPatterns: AntiPatternReport | null = new AntiPatternReport(),
  ) {}

  /** A client's transaction ended: what counts per transaction starts over. */
  endTransaction(ctx: MatchContext): void {
    this.antiPatterns?.endTransaction(ctx);
  }

  /** Matches per rule name since start, as plain data (sluice_rule_matches_total). */
  matchCounts(): Map<string, number> {
    return new Map(this.matchesByRule);
  }

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
    this.antiPatterns?.observe(analysis, sql, ctx, ctx.database);
    const matched = set.match(analysis, ctx);
    if (matched.length === 0) return undefined;
    const verdict = explainWith(analysis, matched, sql, (text) => this.analyzer.analyze(text));
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

/**
 * What the matching rules do to `sql`: the blocking rule, and the text after rewrites (built-in
 * and template, in rule order), then the row cap of the first rule with a `limit`. `analyze`
 * judges a text a template replaced (the cap and the timeout apply to what actually runs).
 */
export function explainWith(
  analysis: QueryAnalysis,
  matched: readonly Rule[],
  sql: string,
  analyze: (sql: string) => QueryAnalysis,
): RuleVerdict {
  const blockedBy = matched.find((rule) => rule.block !== undefined);
  let text = sql;
  let current = analysis;
  const changes: string[] = [];
  let timeout: string | undefined;
  let concurrency: RuleVerdict['concurrency'];
  let route: RuleVerdict['route'];
  if (!blockedBy) {
    for (const rule of matched) {
      const rewrite = rule.rewrite;
      if (rewrite === undefined) continue;
      if ('template' in rewrite) {
        const result = applyTemplate(rewrite.template, text);
        if (result === undefined || result === text) continue;
        changes.push(`${rule.name}: template -> ${result}`);
        text = result;
        current = analyze(text);
        continue;
      }
      if (!(BUILTIN_REWRITE_NAMES as readonly string[]).includes(rewrite.builtin)) continue;
      const result = applyBuiltinRewrite(rewrite.builtin as BuiltinRewriteName, text);
      if (result === undefined) continue;
      text = result.sql;
      for (const change of result.changes) changes.push(`${rule.name}: ${change}`);
    }
    const limitRule = matched.find((rule) => rule.limit !== undefined);
    if (limitRule !== undefined) {
      const capped = applyRowLimit(text, current, limitRule.limit!);
      if (capped !== undefined) {
        changes.push(`${limitRule.name}: at most ${limitRule.limit} rows`);
        text = capped;
      }
    }
    const timeoutRule = matched.find((rule) => rule.timeout !== undefined);
    if (timeoutRule !== undefined) timeout = timeoutPrefix(current, timeoutRule.timeout!);
    const concurrencyRule = matched.find((rule) => rule.max_concurrency !== undefined);
    if (concurrencyRule !== undefined) {
      concurrency = { rule: concurrencyRule, key: `${concurrencyRule.name}\0${analysis.digest}` };
    }
    route = matched.find((rule) => rule.route !== undefined)?.route;
  }
  return {
    analysis,
    matched,
    blockedBy,
    rewritten: text === sql ? undefined : text,
    changes,
    timeoutPrefix: timeout,
    concurrency,
    route,
  };
}

/** The ErrorResponse a statement refused by `max_concurrency` (without `queue`) gets: 53300. */
export function concurrencyError(rule: Rule): Buffer {
  return createErrorResponse({
    severity: 'ERROR',
    code: SqlState.TooManyConnections,
    message: `too many concurrent statements for Sluice rule "${rule.name}"`,
    detail: `at most ${rule.max_concurrency?.limit} run at once (rule defined at ${rule.file}:${rule.line}:${rule.column})`,
    hint: 'retry later, or set queue: true on the rule to wait instead',
  });
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
